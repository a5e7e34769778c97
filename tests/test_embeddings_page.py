"""The Embeddings page in Streamlit's AppTest: computing what is missing, maps side by side,
metrics, a clicked point's neighbours, a lasso selection, and the pretrained ResNet-18 form."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from engine.ml.projection import ProjectionParams, cached_projection, run_projection
from engine.runs.embedding import compute_embeddings
from engine.runs.jobs import jobs_for_run
from engine.runs.store import Store

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "pages" / "embeddings.py")
SMALL_MAP = ProjectionParams(max_points=500)  # what the page asks for with "Points on the map" at 500


@pytest.fixture(scope="module")
def embedded_root(finished_root, tmp_path_factory):
    """Both finished runs with embeddings; the simple_cnn run also has a t-SNE map of 500 points."""
    root = tmp_path_factory.mktemp("emb_page") / "results"
    shutil.copytree(finished_root, root)
    store = Store(root)
    for run in store.list_runs():
        compute_embeddings(store, run.id, device=torch.device("cpu"))
        if run.arch == "simple_cnn":
            run_projection(run.path, SMALL_MAP)
    store.close()
    return root


def page(points: int = 500) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["emb_points"] = points
    return at


def shown(at: AppTest) -> str:
    parts = [
        str(e.value)
        for kind in ("markdown", "caption", "info", "error", "warning", "subheader")
        for e in getattr(at, kind)
    ]
    return "\n".join(parts)


def run_ids(root: Path) -> dict[str, str]:
    store = Store(root)
    try:
        return {r.arch: r.id for r in store.list_runs()}
    finally:
        store.close()


def test_without_embeddings_the_page_queues_embeddings_and_maps_for_the_worker(env, finished_root, tmp_path):
    root = env(tmp_path / "results")
    shutil.copytree(finished_root, root)
    at = page().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Embeddings"
    assert "No embeddings yet" in shown(at)
    at.button(key="emb_compute").click().run()
    assert not at.exception
    store = Store(root)
    for run_id in run_ids(root).values():
        kinds = [(j.kind, j.state.value) for j in jobs_for_run(store, run_id)]
        assert ("embed", "queued") in kinds and ("project", "queued") in kinds
    store.close()
    assert "embed: waiting in the queue" in " ".join(str(p.proto.text) for p in at.get("progress"))


def test_two_runs_are_mapped_side_by_side_with_their_retrieval_metrics(env, embedded_root):
    env(embedded_root)
    at = page()
    at.run()
    at.radio(key="emb_method").set_value("pca").run()
    assert not at.exception, [e.message for e in at.exception]
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    labels = [m.label for m in at.metric]
    assert labels.count("precision@10") == 2 and labels.count("1-NN accuracy") == 2
    assert "Which embedding retrieves better?" in shown(at)
    assert len(at.dataframe) >= 3  # a per-class table under each map and the comparison


def test_a_cached_tsne_map_is_shown_and_a_missing_one_is_offered(env, embedded_root):
    env(embedded_root)
    at = page().run()
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.get("plotly_chart")) == 1  # the simple_cnn map is cached, the basic_nn one is not
    assert "Waiting for the t-SNE map" in shown(at)
    assert at.button(key="emb_compute")


def test_clicking_a_point_shows_its_nearest_neighbours_and_a_lasso_shows_the_images(env, embedded_root):
    env(embedded_root)
    ids = run_ids(embedded_root)
    at = page()
    at.session_state["emb_runs_mnist_sample"] = [ids["simple_cnn"]]
    at.run()
    key = f"emb_map_{ids['simple_cnn']}_{SMALL_MAP.key}"
    row = int(cached_projection(embedded_root / "runs" / ids["simple_cnn"], SMALL_MAP).indices[7])
    at.session_state[key] = {
        "selection": {"points": [{"customdata": row}], "point_indices": [0], "box": [], "lasso": []}
    }
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    text = shown(at)
    assert f"**Test image {row}**" in text and "its 10 nearest neighbours among" in text
    assert len(at.image[0].proto.imgs) == 11  # the chosen image and its 10 neighbours

    at.session_state[key] = {
        "selection": {
            "points": [{"customdata": r} for r in (1, 2, 3, 250)],
            "point_indices": [0, 1, 2, 3],
            "box": [],
            "lasso": [],
        }
    }
    at.run()
    assert not at.exception
    assert "**Selected:** 4 images" in shown(at)
    assert len(at.image[0].proto.imgs) == 4


def test_a_pretrained_resnet18_extractor_is_queued_as_a_run_of_its_own(env, embedded_root, tmp_path, monkeypatch):
    from torchvision.models import resnet18

    root = env(tmp_path / "results")
    shutil.copytree(embedded_root, root)
    home = tmp_path / "torch_home" / "hub" / "checkpoints"
    home.mkdir(parents=True)
    torch.save(resnet18().state_dict(), home / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    at = page().run()
    at.button(key="emb_rn_go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    store = Store(root)
    new = [r for r in store.list_runs() if r.kind == "embed"]
    assert len(new) == 1 and new[0].arch == "resnet18"
    assert [j.kind for j in jobs_for_run(store, new[0].id)] == ["embed"]
    store.close()
    assert new[0].id in at.multiselect(key="emb_runs_mnist_sample").value  # shown at once
    assert "resnet18 ImageNet features" in shown(at) and "Waiting for the embeddings" in shown(at)


def test_missing_resnet18_weights_are_explained_on_the_page(env, embedded_root, tmp_path, monkeypatch):
    env(embedded_root)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "nothing"))
    monkeypatch.setenv("LENSBOARD_OFFLINE", "1")
    at = page().run()
    at.button(key="emb_rn_go").click().run()
    assert not at.exception
    assert any("resnet18-f37072fd.pth" in e.value for e in at.error)


def test_the_page_on_an_empty_root_says_where_to_start(env, tmp_path):
    env(tmp_path / "fresh")
    at = page().run()
    assert not at.exception
    assert "Train" in shown(at)


def test_truncated_embeddings_are_named_and_recomputed_on_request_instead_of_an_exception_box(
    env, embedded_root, tmp_path
):
    root = env(tmp_path / "results")
    shutil.copytree(embedded_root, root)
    cnn = run_ids(root)["simple_cnn"]
    labels = root / "runs" / cnn / "embeddings" / "test_labels.npy"
    labels.write_bytes(labels.read_bytes()[:100])
    at = page().run()
    assert not at.exception, [e.message for e in at.exception]
    assert "embeddings/test_labels.npy is damaged or incomplete" in shown(at)
    at.button(key="emb_compute").click().run()
    assert not at.exception
    store = Store(root)
    assert ("embed", "queued") in [(j.kind, j.state.value) for j in jobs_for_run(store, cnn)]
    store.close()
