"""dashboard.embedding_state: which runs have (or can have) embeddings, the embeddings and indexes read once,
damaged files said plainly, PCA maps made here without a file, and the jobs that compute the rest.

Streamlit's caches work outside a running app (in memory), so the functions are called directly.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from dashboard import embedding_state as es
from engine.ml.data import load_dataset
from engine.ml.embed import load_embeddings
from engine.ml.retrieval import IndexSpec
from engine.runs import claims, jobs
from engine.runs.embedding import compute_embeddings
from engine.runs.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def embedded(finished_root, tmp_path_factory):
    """The finished runs; only simple_cnn's has embeddings. Tests that change files take their own copy."""
    root = tmp_path_factory.mktemp("embedding_state") / "results"
    shutil.copytree(finished_root, root)
    store = Store(root)
    cnn = next(r for r in store.list_runs() if r.arch == "simple_cnn")
    compute_embeddings(store, cnn.id, device=torch.device("cpu"))
    store.close()
    return root


@pytest.fixture
def copy(embedded, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(embedded, root)
    return root


def runs(root) -> dict[str, object]:
    store = Store(root)
    try:
        return {r.arch: r for r in store.list_runs()}
    finally:
        store.close()


def test_finished_runs_with_a_model_are_embeddable_newest_first_and_named_by_their_accuracy(copy):
    by_arch = runs(copy)
    store = Store(copy)
    try:
        assert [r.id for r in es.embeddable_runs(store)] == sorted((r.id for r in by_arch.values()), reverse=True)
        by_arch["basic_nn"].paths.model.unlink()  # no model: nothing to embed with
        store.create_run(by_arch["simple_cnn"].train_config())  # queued: not finished
        assert [r.arch for r in es.embeddable_runs(store)] == ["simple_cnn"]
    finally:
        store.close()
    cnn = by_arch["simple_cnn"]
    assert es.run_name(cnn) == f"simple_cnn · test acc {100 * cnn.final_test_acc:.1f}% · {cnn.id[-4:]}"


def test_embeddings_are_read_with_their_stamp_and_missing_ones_are_none(embedded):
    by_arch = runs(embedded)
    cnn, mlp = by_arch["simple_cnn"], by_arch["basic_nn"]
    assert isinstance(es.stamp(cnn), float) and es.damage(cnn) is None
    test = es.embeddings(cnn, "test")
    np.testing.assert_array_equal(test.vectors, load_embeddings(cnn.path, "test").vectors)
    assert len(test.labels) == 1000
    assert es.stamp(mlp) is None and es.embeddings(mlp, "test") is None
    assert es.index_for(mlp, IndexSpec()) is None and es.evaluation(mlp, 5) is None


def test_a_damaged_or_missing_embedding_file_is_named_and_counts_as_missing(copy):
    cnn = runs(copy)["simple_cnn"]
    test_file = cnn.paths.embeddings / "test.npy"
    test_file.write_bytes(test_file.read_bytes()[: test_file.stat().st_size // 2])
    assert es.damage(cnn).startswith("embeddings/test.npy is damaged or incomplete")
    assert es.damage(cnn).endswith("compute the embeddings again")
    assert es.stamp(cnn) is None and es.embeddings(cnn, "test") is None
    (cnn.paths.embeddings / "train_labels.npy").unlink()
    assert es.damage(cnn) == "embeddings/train_labels.npy is missing; compute the embeddings again"


def test_an_exact_index_is_built_in_memory_and_an_approximate_one_only_once_saved(embedded):
    cnn = runs(embedded)["simple_cnn"]
    flat = es.index_for(cnn, IndexSpec())
    assert flat.ntotal == 4000 and es.index_for(cnn, IndexSpec()) is flat  # built once
    assert not cnn.paths.index.exists()  # the dashboard writes no index file
    assert es.index_for(cnn, IndexSpec.parse("hnsw", "cosine")) is None  # a job for the worker
    evaluation = es.evaluation(cnn, 5)
    assert evaluation.spec == IndexSpec() and evaluation.recall_vs_exact is None
    assert 0 < evaluation.metrics.to_json()["precision_at_k"] <= 1


def test_a_pca_map_is_made_here_and_never_written(embedded):
    cnn = runs(embedded)["simple_cnn"]
    projection = es.pca_map(cnn, max_points=300, seed=0)
    assert projection.coords.shape == (300, 2) and len(projection.indices) == 300
    assert not cnn.paths.projections.exists()


def test_a_job_is_queued_once_and_its_progress_and_failure_read_from_the_queue(copy):
    cnn = runs(copy)["simple_cnn"]
    store = Store(copy)
    try:
        payload = {"method": "tsne", "max_points": 500}
        job_id = es.queue(store, "project", cnn.id, payload)
        assert es.queue(store, "project", cnn.id, payload) == job_id  # the same job, not a second one
        assert es.queue(store, "project", cnn.id, {"method": "tsne", "max_points": 800}) != job_id
        [waiting] = es.pending(store, cnn.id, "project", payload)
        assert waiting.text == "project: waiting in the queue for the worker" and waiting.fraction == 0.0
        job = claims.claim(store, "w1")
        claims.heartbeat(store.conn, job.id, "w1", jobs.Progress(done=250, total=1000, stage="t-SNE"))
        [running] = es.pending(store, cnn.id, "project", payload)
        assert running.text == "project: t-SNE (250/1,000)" and running.fraction == pytest.approx(0.25)
        claims.finish(store, job, "w1", jobs.JobState.FAILED, "perplexity too large for 10 points")
        assert es.pending(store, cnn.id, "project", payload) == []
        assert es.last_failure(store, cnn.id, "project") is None  # the latest project job still waits
    finally:
        store.close()


def test_the_latest_failed_job_of_a_kind_is_reported(copy):
    cnn = runs(copy)["simple_cnn"]
    store = Store(copy)
    try:
        es.queue(store, "embed", cnn.id)
        job = claims.claim(store, "w1")
        claims.finish(store, job, "w1", jobs.JobState.FAILED, "out of memory")
        assert es.last_failure(store, cnn.id, "embed") == "out of memory"
        assert es.last_failure(store, cnn.id, "index") is None
    finally:
        store.close()


def test_images_are_shown_as_stored_in_unit_range():
    ds = load_dataset("mnist_sample")
    for image in (es.test_image(ds, 0), es.train_image(ds, 0)):
        assert image.shape == (28, 28) and image.min() >= 0 and image.max() <= 1 and image.max() > 0.9
