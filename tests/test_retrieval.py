"""FAISS search against a numpy brute force, retrieval metrics by hand, index caching."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from engine.errors import RetrievalError
from engine.files import atomic_numpy_save, atomic_write_json
from engine.ml.embed import embeddings_dir
from engine.ml.retrieval import (
    IndexKind,
    IndexSpec,
    Metric,
    build_index,
    evaluate_run,
    index_path,
    query_precision,
    recall_vs_exact,
    retrieval_metrics,
    run_index,
    search,
    search_run,
)
from engine.runs.handlers import index as run_index_job


def brute_force(db: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The course's way, vectorised: score every stored vector, then sort."""
    db = db.astype(np.float64)
    queries = queries.astype(np.float64)
    if metric == "cosine":
        sims = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
            db / np.linalg.norm(db, axis=1, keepdims=True)
        ).T
        order = np.argsort(-sims, axis=1)[:, :k]
        return order, np.take_along_axis(sims, order, axis=1)
    dists = np.sqrt(((queries[:, None, :] - db[None, :, :]) ** 2).sum(-1))
    order = np.argsort(dists, axis=1)[:, :k]
    return order, np.take_along_axis(dists, order, axis=1)


def clustered(n: int, d: int, centres: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)) * 4
    labels = rng.integers(0, centres, size=n)
    return (c[labels] + rng.normal(size=(n, d))).astype(np.float32), labels.astype(np.int64)


def write_embeddings(run_dir, train, train_labels, test, test_labels) -> None:
    folder = embeddings_dir(run_dir)
    for name, arr in (("train", train), ("train_labels", train_labels), ("test", test), ("test_labels", test_labels)):
        atomic_numpy_save(folder / f"{name}.npy", arr)
    atomic_write_json(
        folder / "meta.json",
        {"dim": train.shape[1], "train": len(train), "test": len(test), "source": "synthetic", "classes": None},
    )


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exact_search_returns_the_same_ids_and_scores_as_a_numpy_brute_force(metric):
    rng = np.random.default_rng(0)
    db = rng.normal(size=(300, 16)).astype(np.float32)
    queries = rng.normal(size=(25, 16)).astype(np.float32)
    spec = IndexSpec.parse("flat", metric)
    result = search(build_index(db, spec), queries, 7, spec)
    ref_ids, ref_scores = brute_force(db, queries, 7, metric)
    np.testing.assert_array_equal(result.ids, ref_ids)
    np.testing.assert_allclose(result.scores, ref_scores, rtol=1e-4, atol=1e-4)
    assert result.ids.shape == (25, 7) and result.seconds >= 0


def test_metrics_on_a_tiny_example_match_the_values_worked_out_by_hand():
    db_labels = np.array([0, 0, 1, 1, 2])
    query_labels = np.array([0, 1, 2])
    ids = np.array(
        [
            [0, 2, 1],  # hit, miss, hit
            [4, 2, 3],  # miss, hit, hit
            [0, 1, 2],
        ]
    )  # miss, miss, miss
    m = retrieval_metrics(ids, db_labels, query_labels, classes=["zero", "one", "two"])
    # precision@3: 2/3, 2/3, 0
    assert m.precision_at_k == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # recall@3 (at least one hit): yes, yes, no
    assert m.recall_at_k == pytest.approx(2 / 3)
    # AP@3 = sum P@i * hit_i / min(3, R); R = 2, 2, 1
    ap0 = (1 / 1 + 2 / 3) / 2
    ap1 = (1 / 2 + 2 / 3) / 2
    assert m.map_at_k == pytest.approx((ap0 + ap1 + 0) / 3)
    # 1-NN: hit, miss, miss
    assert m.knn_accuracy == pytest.approx(1 / 3)
    assert m.k == 3 and m.queries == 3
    by_name = {c.name: c for c in m.per_class}
    assert by_name["zero"].map_at_k == pytest.approx(ap0)
    assert by_name["one"].knn_accuracy == 0.0 and by_name["one"].precision_at_k == pytest.approx(2 / 3)
    assert by_name["two"].recall_at_k == 0.0 and by_name["two"].queries == 1
    assert query_precision(ids[1], db_labels, 1) == pytest.approx(2 / 3)


def test_perfect_retrieval_scores_one_everywhere():
    db_labels = np.array([0, 0, 0, 1, 1, 1])
    m = retrieval_metrics(np.array([[0, 1, 2], [3, 4, 5]]), db_labels, np.array([0, 1]))
    assert (m.precision_at_k, m.recall_at_k, m.map_at_k, m.knn_accuracy) == (1.0, 1.0, 1.0, 1.0)


def test_recall_against_exact_counts_the_shared_results():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, 9, 1], [5, 0, 0, 0]])
    assert recall_vs_exact(approx, exact) == pytest.approx((3 + 1) / 8)


def test_an_approximate_index_reports_its_recall_against_exact_search(tmp_path):
    train, train_labels = clustered(3000, 24, 12, seed=1)
    test, test_labels = clustered(200, 24, 12, seed=1)
    write_embeddings(tmp_path, train, train_labels, test[:200], test_labels[:200])
    k = 10
    exact_ids, _ = brute_force(train, test, k, "cosine")
    for spec in (
        IndexSpec(IndexKind.HNSW, Metric.COSINE, ef_search=4),
        IndexSpec(IndexKind.IVF, Metric.COSINE, nprobe=1),
        IndexSpec(IndexKind.HNSW, Metric.COSINE),
    ):
        ev = evaluate_run(tmp_path, k, spec)
        got = search_run(tmp_path, test, k, spec).ids
        expected = np.mean([len(set(a) & set(e)) / k for a, e in zip(got, exact_ids)])
        assert ev.recall_vs_exact == pytest.approx(expected)
        assert 0.0 <= ev.recall_vs_exact <= 1.0
    assert ev.recall_vs_exact >= 0.9  # the default HNSW settings find nearly all true neighbours
    assert evaluate_run(tmp_path, k).recall_vs_exact is None  # exact search: nothing to compare with


def test_evaluation_uses_the_train_split_as_database_so_a_query_never_finds_itself(tmp_path):
    train, train_labels = clustered(400, 8, 4, seed=2)
    test, test_labels = clustered(50, 8, 4, seed=3)
    write_embeddings(tmp_path, train, train_labels, test, test_labels)
    ids = search_run(tmp_path, test, 5).ids
    assert ids.max() < len(train)
    ref_ids, _ = brute_force(train, test, 5, "cosine")
    np.testing.assert_array_equal(ids, ref_ids)
    m = evaluate_run(tmp_path, 5).metrics
    assert m.queries == 50 and m.k == 5 and len(m.per_class) == 4


def test_an_index_is_saved_under_the_run_and_reused(tmp_path, monkeypatch):
    train, train_labels = clustered(500, 8, 5, seed=4)
    write_embeddings(tmp_path, train, train_labels, train[:20], train_labels[:20])
    spec = IndexSpec.parse("hnsw", "cosine")
    index, built = run_index(tmp_path, spec)
    assert built and index_path(tmp_path, spec).exists()
    assert index_path(tmp_path, spec).name == "hnsw-cosine.faiss"
    import engine.ml.retrieval as retrieval

    monkeypatch.setattr(retrieval, "build_index", lambda *a, **k: pytest.fail("the saved index was not reused"))
    again, built = run_index(tmp_path, spec)
    assert not built and again.ntotal == 500
    np.testing.assert_array_equal(search(index, train[:5], 3, spec).ids, search(again, train[:5], 3, spec).ids)


def test_a_stale_index_is_rebuilt_when_the_database_changed(tmp_path):
    train, labels = clustered(300, 8, 3, seed=5)
    write_embeddings(tmp_path, train, labels, train[:10], labels[:10])
    run_index(tmp_path, IndexSpec())
    write_embeddings(tmp_path, train[:200], labels[:200], train[:10], labels[:10])
    index, built = run_index(tmp_path, IndexSpec())
    assert built and index.ntotal == 200


def test_bad_search_requests_say_what_is_allowed():
    db = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    index = build_index(db, IndexSpec())
    with pytest.raises(RetrievalError, match="k must be an integer from 1 to 20"):
        search(index, db[:1], 0, IndexSpec())
    with pytest.raises(RetrievalError, match="k must be an integer from 1 to 20"):
        search(index, db[:1], 21, IndexSpec())
    with pytest.raises(RetrievalError, match="3 dimensions, the index 4"):
        search(index, db[:1, :3], 2, IndexSpec())
    with pytest.raises(RetrievalError, match="valid: flat, hnsw, ivf"):
        IndexSpec.parse("annoy")
    with pytest.raises(RetrievalError, match="valid: cosine, l2"):
        IndexSpec.parse("flat", "manhattan")
    with pytest.raises(RetrievalError, match="NaN"):
        search(index, np.full((1, 4), np.nan, np.float32), 2, IndexSpec())


def test_the_index_job_builds_the_requested_index_and_reports_progress(tmp_path):
    run_dir = tmp_path / "runs" / "r1"
    train, labels = clustered(300, 8, 3, seed=6)
    write_embeddings(run_dir, train, labels, train[:10], labels[:10])
    calls = []
    ctx = SimpleNamespace(progress=lambda d, t, stage="": calls.append((d, t)), should_stop=lambda: False)
    store = SimpleNamespace(run_dir=lambda run_id: tmp_path / "runs" / run_id)
    job = SimpleNamespace(run_id="r1", payload={"kind": "ivf", "metric": "l2"})
    run_index_job(store, job, ctx)
    assert index_path(run_dir, IndexSpec.parse("ivf", "l2")).exists()
    assert calls[-1] == (1, 1)


def test_the_benchmarks_course_loop_finds_the_same_neighbours_as_faiss():
    # benchmarks/retrieval.py times FAISS against this loop; the comparison is fair only if they agree.
    rng = np.random.default_rng(7)
    db = rng.normal(size=(200, 8)).astype(np.float32)
    q = rng.normal(size=(3, 8)).astype(np.float32)
    from benchmarks.retrieval import course_loop_search

    spec = IndexSpec()
    fast = search(build_index(db, spec), q, 5, spec)
    for row, query in enumerate(q):
        ids, scores = course_loop_search(db, query, 5)
        np.testing.assert_array_equal(fast.ids[row], ids)
        np.testing.assert_allclose(fast.scores[row], scores, rtol=1e-4, atol=1e-5)
