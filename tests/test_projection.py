"""t-SNE and PCA maps: neighbourhoods kept, stratified samples, the on-disk cache, the job."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.manifold import trustworthiness

import engine.ml.projection as projection
from engine.errors import Cancelled, ProjectionError
from engine.files import atomic_numpy_save, atomic_write_json
from engine.ml.embed import embeddings_dir
from engine.ml.projection import (
    Method,
    ProjectionParams,
    cached_projection,
    compute_projection,
    projection_paths,
    run_projection,
    stratified_sample,
    tsne_2d,
)
from engine.runs.handlers import project as run_project_job


def write_test_embeddings(run_dir, vectors, labels) -> None:
    folder = embeddings_dir(run_dir)
    for split in ("train", "test"):
        atomic_numpy_save(folder / f"{split}.npy", vectors.astype(np.float32))
        atomic_numpy_save(folder / f"{split}_labels.npy", labels.astype(np.int64))
    atomic_write_json(folder / "meta.json", {"dim": vectors.shape[1], "train": len(labels), "test": len(labels)})


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=300, n_features=20, centers=5, cluster_std=1.5, random_state=0)
    return x.astype(np.float32), y


def test_tsne_keeps_neighbourhoods_of_a_clustered_set(blobs):
    x, _ = blobs
    coords = tsne_2d(x, perplexity=30, seed=0)
    assert coords.shape == (300, 2) and coords.dtype == np.float32
    assert trustworthiness(x, coords, n_neighbors=10) >= 0.9


def test_pca_of_a_clustered_set_separates_the_clusters(blobs):
    x, y = blobs
    proj = compute_projection(x, y, ProjectionParams(Method.PCA))
    assert proj.coords.shape == (300, 2)
    centres = np.stack([proj.coords[y == c].mean(0) for c in range(5)])
    spread = max(proj.coords[y == c].std(0).max() for c in range(5))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(5) for b in range(a + 1, 5)]
    assert np.median(gaps) > spread


def test_stratified_sample_keeps_every_class_and_its_share():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    idx = stratified_sample(labels, 100, seed=1)
    assert len(idx) == 100 and len(set(idx)) == 100 and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.tolist() == [90, 9, 1]
    assert stratified_sample(labels, 5000).tolist() == list(range(1000))  # small sets are kept whole
    np.testing.assert_array_equal(stratified_sample(labels, 100, seed=1), idx)  # seeded


def test_a_projection_is_cached_on_disk_by_its_parameters_and_reused(tmp_path, blobs, monkeypatch):
    x, y = blobs
    write_test_embeddings(tmp_path, x, y)
    params = ProjectionParams(Method.TSNE, perplexity=20, max_points=150, seed=0)
    first, computed = run_projection(tmp_path, params)
    assert computed and first.coords.shape == (150, 2) and len(first.indices) == 150
    coords_path, idx_path = projection_paths(tmp_path, params)
    assert coords_path.name == "test-tsne-p20-n150-s0.npy" and idx_path.name == "test-tsne-p20-n150-s0_indices.npy"
    np.testing.assert_array_equal(np.load(idx_path), first.indices)

    monkeypatch.setattr(projection, "tsne_2d", lambda *a, **k: pytest.fail("the cached map was not reused"))
    again, computed = run_projection(tmp_path, params)
    assert not computed
    np.testing.assert_array_equal(again.coords, first.coords)
    np.testing.assert_array_equal(again.indices, first.indices)

    other = ProjectionParams(Method.TSNE, perplexity=10, max_points=150, seed=0)
    assert cached_projection(tmp_path, other) is None  # other parameters, other file
    with pytest.raises(pytest.fail.Exception):
        run_projection(tmp_path, other)


def test_pca_maps_can_be_computed_without_touching_the_disk(tmp_path, blobs):
    x, y = blobs
    write_test_embeddings(tmp_path, x, y)
    params = ProjectionParams(Method.PCA, max_points=100)
    proj, computed = run_projection(tmp_path, params, save=False)
    assert computed and proj.coords.shape == (100, 2)
    assert cached_projection(tmp_path, params) is None


def test_bad_projection_parameters_say_what_is_allowed(blobs):
    x, y = blobs
    with pytest.raises(ProjectionError, match="perplexity must be a number from 2 to 100"):
        compute_projection(x, y, ProjectionParams(perplexity=500))
    with pytest.raises(ProjectionError, match="too large for 40 points"):
        compute_projection(x, y, ProjectionParams(perplexity=30, max_points=40))
    with pytest.raises(ProjectionError, match="max_points must be an integer from 10"):
        compute_projection(x, y, ProjectionParams(max_points=3))
    with pytest.raises(ProjectionError, match="valid: pca, tsne"):
        ProjectionParams.from_json({"method": "umap"})
    with pytest.raises(ProjectionError, match="unknown projection parameter"):
        ProjectionParams.from_json({"colour": "red"})


def test_the_project_job_reports_progress_and_stops_when_asked(tmp_path, blobs):
    x, y = blobs
    run_dir = tmp_path / "runs" / "r1"
    write_test_embeddings(run_dir, x, y)
    store = SimpleNamespace(run_dir=lambda run_id: tmp_path / "runs" / run_id)
    payload = {"method": "tsne", "perplexity": 15, "max_points": 120}
    calls = []
    ctx = SimpleNamespace(progress=lambda d, t, stage="": calls.append((d, t)), should_stop=lambda: False)
    run_project_job(store, SimpleNamespace(run_id="r1", payload=payload), ctx)
    params = ProjectionParams.from_json(payload)
    assert cached_projection(run_dir, params) is not None
    assert calls and calls[-1][0] == calls[-1][1] and all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))

    stop_ctx = SimpleNamespace(progress=lambda *a, **k: None, should_stop=lambda: True)
    other = dict(payload, seed=1)
    run_project_job(store, SimpleNamespace(run_id="r1", payload=other), stop_ctx)
    assert cached_projection(run_dir, ProjectionParams.from_json(other)) is None  # nothing half-done saved
    with pytest.raises(Cancelled):
        tsne_2d(x[:120], 15, should_stop=lambda: True)
