"""The Search page in Streamlit's AppTest: every way to pick a query, uploads, index types,
and the queueing of embeddings and approximate indexes for the worker."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.ml.data import load_dataset
from engine.ml.embed import load_embeddings
from engine.ml.retrieval import IndexSpec, run_index
from engine.runs.embedding import compute_embeddings
from engine.runs.jobs import jobs_for_run
from engine.runs.store import Store

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "pages" / "search.py")


@pytest.fixture(scope="module")
def searchable_root(finished_root, tmp_path_factory):
    """The finished simple_cnn run with embeddings and a saved HNSW index; the basic_nn run without."""
    root = tmp_path_factory.mktemp("search_page") / "results"
    shutil.copytree(finished_root, root)
    store = Store(root)
    cnn = next(r for r in store.list_runs() if r.arch == "simple_cnn")
    compute_embeddings(store, cnn.id, device=torch.device("cpu"))
    run_index(cnn.path, IndexSpec.parse("hnsw"))
    store.close()
    return root, cnn.id


def page(run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    if run_id:
        at.session_state["search_run"] = run_id
    return at


def shown(at: AppTest) -> str:
    return "\n".join(
        str(e.value) for kind in ("markdown", "caption", "info", "error", "warning") for e in getattr(at, kind)
    )


def captions(at: AppTest) -> list[str]:
    return [img.caption for element in at.image for img in element.proto.imgs]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_a_test_image_query_shows_the_top_k_with_hits_scores_and_metrics(env, searchable_root):
    root, run_id = env(searchable_root[0]), searchable_root[1]
    at = page(run_id).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Search"
    caps = captions(at)
    assert caps[0].startswith("test image 0 · ") and len(caps) == 1 + 10
    assert all(c.startswith(f"#{i} · ") and "cos " in c for i, c in enumerate(caps[1:], start=1))
    # the page's results are exact cosine search: the same as a numpy brute force
    run_dir = root / "runs" / run_id
    train, test = load_embeddings(run_dir, "train"), load_embeddings(run_dir, "test")
    unit = train.vectors / np.linalg.norm(train.vectors, axis=1, keepdims=True)
    top = np.argsort(-(unit @ (test.vectors[0] / np.linalg.norm(test.vectors[0]))))[:10]
    classes = [str(d) for d in range(10)]
    hits = sum(train.labels[i] == test.labels[0] for i in top)
    assert metric(at, "precision@10 for this query") == f"{hits / 10:.2f}"
    assert [c.split(" · ")[1] for c in caps[1:]] == [f"class {classes[train.labels[i]]}" for i in top]
    assert metric(at, "search time").endswith(" ms")
    for label in ("precision@10", "recall@10", "mAP@10", "1-NN accuracy"):
        assert 0.0 <= float(metric(at, label)) <= 1.0


@pytest.mark.parametrize("source", ["class", "random"])
def test_queries_by_class_and_at_random_work(env, searchable_root, source):
    env(searchable_root[0])
    at = page(searchable_root[1]).run()
    at.radio(key="search_source").set_value(source).run()
    if source == "class":
        at.selectbox(key="search_class").set_value(3).run()
        assert captions(at)[0].endswith(" · class 3")
    else:
        first = captions(at)[0]
        assert first.startswith("test image ")
    assert not at.exception, [e.message for e in at.exception]
    assert len(captions(at)) == 11


def test_k_and_the_test_image_number_change_the_results(env, searchable_root):
    env(searchable_root[0])
    at = page(searchable_root[1]).run()
    at.number_input(key="search_row").set_value(42).run()
    at.slider(key="search_k").set_value(3).run()
    assert not at.exception
    caps = captions(at)
    assert caps[0].startswith("test image 42 · ") and len(caps) == 4
    assert "precision@3 for this query" in [m.label for m in at.metric]


def test_an_approximate_index_reports_its_recall_against_exact_search(env, searchable_root):
    env(searchable_root[0])
    at = page(searchable_root[1]).run()
    at.selectbox(key="search_index").set_value("hnsw").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "true top-10 neighbours that exact search finds" in shown(at)
    assert len(captions(at)) == 11


def test_a_missing_approximate_index_is_queued_for_the_worker_and_exact_search_fills_in(env, searchable_root, tmp_path):
    root = env(tmp_path / "results")
    shutil.copytree(searchable_root[0], root)
    at = page(searchable_root[1]).run()
    at.selectbox(key="search_index").set_value("ivf").run()
    assert not at.exception
    assert "Meanwhile the results below come from exact search" in shown(at) and len(captions(at)) == 11
    at.button(key="search_build").click().run()
    store = Store(root)
    jobs = jobs_for_run(store, searchable_root[1])
    store.close()
    assert [(j.kind, j.payload) for j in jobs] == [("index", {"kind": "ivf", "metric": "cosine"})]


def test_an_uploaded_image_is_searched_and_a_bad_one_is_refused(env, searchable_root):
    env(searchable_root[0])
    ds = load_dataset("mnist_sample")
    raw = ds.test.x[5, 0].numpy()  # as stored (uint8)
    buf = io.BytesIO()
    Image.fromarray(raw).save(buf, format="PNG")
    at = page(searchable_root[1]).run()
    at.radio(key="search_source").set_value("upload").run()
    at.file_uploader(key="search_upload").set_value(("digit.png", buf.getvalue(), "image/png")).run()
    assert not at.exception, [e.message for e in at.exception]
    caps = captions(at)
    assert caps[0] == "your upload" and len(caps) == 11
    assert not any("✓" in c or "✗" in c for c in caps)  # an upload has no known class
    at.file_uploader(key="search_upload").set_value(("notes.png", b"plain text" * 30, "image/png")).run()
    assert not at.exception
    assert any("This file cannot be used" in e.value and "not an image" in e.value for e in at.error)


def test_a_run_without_embeddings_offers_to_compute_them(env, searchable_root, tmp_path):
    root = env(tmp_path / "results")
    shutil.copytree(searchable_root[0], root)
    store = Store(root)
    mlp = next(r.id for r in store.list_runs() if r.arch == "basic_nn")
    store.close()
    at = page(mlp).run()
    assert not at.exception
    assert "no embeddings yet" in shown(at)
    at.button(key="search_embed").click().run()
    store = Store(root)
    assert [j.kind for j in jobs_for_run(store, mlp)] == ["embed"]
    store.close()
    assert any("waiting in the queue" in str(p.proto.text) for p in at.get("progress"))


def test_the_page_on_an_empty_root_says_where_to_start(env, tmp_path):
    env(tmp_path / "fresh")
    at = page().run()
    assert not at.exception
    assert "Train" in shown(at)


def test_truncated_embeddings_are_named_and_offered_for_recomputing_instead_of_an_exception_box(
    env, searchable_root, tmp_path
):
    source, run_id = searchable_root
    root = env(tmp_path / "results")
    shutil.copytree(source, root)
    vectors = root / "runs" / run_id / "embeddings" / "train.npy"
    vectors.write_bytes(vectors.read_bytes()[:5000])
    at = page(run_id).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "embeddings/train.npy is damaged or incomplete" in shown(at)
    at.button(key="search_embed").click().run()
    assert not at.exception
    store = Store(root)
    assert [(j.kind, j.state.value) for j in jobs_for_run(store, run_id)] == [("embed", "queued")]
    store.close()


def test_the_uploader_states_its_cap_and_is_hidden_in_read_only_mode(env, searchable_root, monkeypatch):
    root, run_id = searchable_root
    env(root)
    at = page(run_id).run()
    at.radio(key="search_source").set_value("upload").run()
    assert "up to 10 MB" in at.get("file_uploader")[0].proto.label
    monkeypatch.setenv("LENSBOARD_READ_ONLY", "1")
    at = page(run_id).run()
    assert not at.exception
    assert "upload" not in at.radio(key="search_source").options
