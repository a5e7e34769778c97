"""Embeddings of trained runs and of the pretrained ResNet-18 extractor; uploads; the embed job."""

from __future__ import annotations

import io
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import TrainConfig
from engine.errors import EmbeddingError, ModelError, UploadError
from engine.ml.data import load_dataset
from engine.ml.embed import Embedder, ImageNetFeatures, embed_upload, embedding_meta, has_embeddings, load_embeddings
from engine.ml.models import MODELS, build_model
from engine.runs.embedding import compute_embeddings, create_pretrained_run, embedder_for_run
from engine.runs.handlers import embed as run_embed_job
from engine.runs.records import RunState
from engine.runs.store import Store

WEIGHTS = "resnet18-f37072fd.pth"


@pytest.fixture(scope="module")
def embedded_root(finished_root, tmp_path_factory):
    """A copy of the finished runs, with the simple_cnn run's embeddings computed."""
    root = tmp_path_factory.mktemp("embedded") / "results"
    shutil.copytree(finished_root, root)
    store = Store(root)
    run = next(r for r in store.list_runs() if r.arch == "simple_cnn")
    compute_embeddings(store, run.id, device=torch.device("cpu"))
    yield store, run
    store.close()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A TORCH_HOME whose hub cache holds (randomly initialised) ResNet-18 weights, offline."""
    from torchvision.models import resnet18

    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), home / "hub" / "checkpoints" / WEIGHTS)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def tiny_folder(root, classes=("cat", "dog"), per_split=(4, 2), side=20):
    """folder:PATH dataset of small RGB images, classes told apart by colour."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_split):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 60, size=(side, side, 3), dtype=np.uint8)
                a[..., c] += 180
                Image.fromarray(a).save(root / split / name / f"{i}.png")
    return f"folder:{root}"


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("arch", [a for a in MODELS])
def test_every_architecture_embeds_images_into_the_input_of_its_last_layer(arch):
    ds = load_dataset("mnist_sample")
    torch.manual_seed(0)
    model = build_model(arch, ds.shape, ds.num_classes).eval()
    vectors = Embedder(model, ds, torch.device("cpu"), 2, arch).embed(ds.test.x[:3])
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, model.head.in_features)
    with torch.no_grad():  # the embedding is what the classifier reads
        np.testing.assert_allclose(
            model.head(torch.from_numpy(vectors)).numpy(),
            model(ds.test.inputs(slice(0, 3))).numpy(),
            rtol=1e-4,
            atol=1e-4,
        )
    normalised = Embedder(model, ds, torch.device("cpu"), 2, arch).embed(ds.test.inputs(slice(0, 3)))
    np.testing.assert_allclose(normalised, vectors, rtol=1e-5, atol=1e-6)  # stored uint8 or normalised: same


def test_a_trained_run_gets_float32_train_and_test_embeddings_with_their_labels(embedded_root):
    store, run = embedded_root
    ds = load_dataset("mnist_sample")
    train = load_embeddings(run.path, "train")
    test = load_embeddings(run.path, "test")
    assert train.vectors.shape == (len(ds.train), 128) and train.vectors.dtype == np.float32
    assert test.vectors.shape == (len(ds.test), 128)
    np.testing.assert_array_equal(train.labels, ds.train.y.numpy())
    np.testing.assert_array_equal(test.labels, ds.test.y.numpy())
    meta = embedding_meta(run.path)
    assert meta["dim"] == 128 and meta["classes"] == ds.classes and meta["source"] == "simple_cnn trained run"
    assert store.get_run(run.id).state == RunState.DONE  # a trained run keeps its state


def test_an_uploaded_image_goes_through_the_same_preprocessing_as_the_test_images(embedded_root):
    store, run = embedded_root
    ds = load_dataset("mnist_sample")
    raw = ds.test.x[0, 0].numpy()  # test image 0, as stored
    embedder = embedder_for_run(store.get_run(run.id), torch.device("cpu"))
    vector, prepared = embed_upload(embedder, png_bytes(raw))
    assert vector.shape == (128,) and not prepared.inverted
    np.testing.assert_allclose(vector, load_embeddings(run.path, "test").vectors[0], rtol=1e-3, atol=1e-3)


def test_a_bad_upload_is_refused_with_a_clear_error(embedded_root):
    store, run = embedded_root
    embedder = embedder_for_run(store.get_run(run.id), torch.device("cpu"))
    with pytest.raises(UploadError, match="not an image"):
        embed_upload(embedder, b"certainly not a PNG file")
    with pytest.raises(UploadError, match="empty"):
        embed_upload(embedder, b"")


def test_a_run_without_a_trained_model_cannot_be_embedded(store):
    run_id = store.create_run(TrainConfig(arch="basic_nn", epochs=1), RunState.QUEUED)
    with pytest.raises(EmbeddingError, match="no trained model yet .*state queued"):
        compute_embeddings(store, run_id)
    assert not has_embeddings(store.run_dir(run_id))
    with pytest.raises(EmbeddingError, match="no embeddings yet"):
        load_embeddings(store.run_dir(run_id), "test")


def test_recomputing_embeddings_removes_the_indexes_and_maps_built_on_the_old_ones(embedded_root):
    store, run = embedded_root
    (run.path / "index").mkdir(exist_ok=True)
    (run.path / "index" / "flat-cosine.faiss").write_bytes(b"stale")
    (run.path / "projections").mkdir(exist_ok=True)
    (run.path / "projections" / "test-pca-n5000-s0.npy").write_bytes(b"stale")
    compute_embeddings(store, run.id, device=torch.device("cpu"))
    assert not (run.path / "index").exists() and not (run.path / "projections").exists()
    assert has_embeddings(run.path)


def test_pretrained_resnet18_is_a_run_of_its_own_with_512_dimensional_embeddings(store, tmp_path, torch_home):
    dataset = tiny_folder(tmp_path / "pets")
    run_id = create_pretrained_run(store, dataset, image_size=32)
    record = store.get_run(run_id)
    assert record.kind == "embed" and record.arch == "resnet18" and record.config["pretrained"] is True
    assert record.state == RunState.QUEUED
    progress = []
    meta = compute_embeddings(store, run_id, lambda d, t, s: progress.append((d, t)), device=torch.device("cpu"))
    assert meta["dim"] == 512 and meta["train"] == 8 and meta["test"] == 4
    assert load_embeddings(record.path, "train").vectors.shape == (8, 512)
    assert store.get_run(run_id).state == RunState.DONE
    assert progress[-1] == (12, 12)


def test_the_imagenet_extractor_resizes_to_three_channels_with_imagenet_statistics(torch_home):
    from engine.ml.models import load_resnet18_imagenet

    ds = load_dataset("mnist_sample")  # grey 28x28
    extractor = ImageNetFeatures(load_resnet18_imagenet(), ds, 64).eval()
    x = extractor.prepare(ds.test.x[:2])
    assert x.shape == (2, 3, 64, 64)
    assert torch.allclose(x, extractor.prepare(ds.test.inputs(slice(0, 2))), atol=1e-5)  # uint8 or normalised
    assert torch.allclose(x[:, 0] * 0.229 + 0.485, x[:, 1] * 0.224 + 0.456, atol=1e-5)  # grey in every channel
    with torch.no_grad():
        assert extractor.features(ds.test.x[:2]).shape == (2, 512)


def test_missing_resnet18_weights_are_a_clear_error_before_any_run_is_made(store, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(ModelError, match="resnet18-f37072fd.pth"):
        create_pretrained_run(store, "mnist_sample")
    assert store.list_runs() == []
    with pytest.raises(EmbeddingError, match="image_size must be an integer from 32 to 224"):
        create_pretrained_run(store, "mnist_sample", image_size=1000)


def test_a_failing_pretrained_run_is_marked_failed_and_the_error_raised(store, tmp_path, torch_home):
    run_id = create_pretrained_run(store, "folder:" + str(tmp_path / "nowhere"))
    with pytest.raises(Exception, match="nowhere"):
        compute_embeddings(store, run_id)
    record = store.get_run(run_id)
    assert record.state == RunState.FAILED and "nowhere" in record.error


def test_the_embed_job_reports_progress_and_stops_when_asked(store, tmp_path, torch_home):
    dataset = tiny_folder(tmp_path / "pets")
    run_id = create_pretrained_run(store, dataset, image_size=32)
    stop_ctx = SimpleNamespace(progress=lambda *a, **k: None, should_stop=lambda: True, download=False)
    run_embed_job(store, SimpleNamespace(run_id=run_id, payload={}), stop_ctx)
    assert not has_embeddings(store.run_dir(run_id))
    assert store.get_run(run_id).state == RunState.CANCELLED

    calls = []
    ctx = SimpleNamespace(
        progress=lambda d, t, stage="": calls.append((d, t, stage)), should_stop=lambda: False, download=False
    )
    note = run_embed_job(store, SimpleNamespace(run_id=run_id, payload={}), ctx)
    assert has_embeddings(store.run_dir(run_id)) and store.get_run(run_id).state == RunState.DONE
    assert calls[-1][:2] == (12, 12) and "train split" in calls[0][2]
    assert "512" in note


def test_the_worker_runs_embed_project_and_index_jobs_for_a_pretrained_run(store, tmp_path, torch_home):
    from engine.ml.projection import Method, ProjectionParams, cached_projection
    from engine.ml.retrieval import IndexSpec, index_path
    from engine.runs.jobs import JobState, submit_job
    from engine.runs.worker import Worker

    run_id = create_pretrained_run(store, tiny_folder(tmp_path / "pets"), image_size=32)
    params = ProjectionParams(Method.PCA, max_points=10)
    submit_job(store, "embed", run_id)
    submit_job(store, "project", run_id, params.to_json())
    submit_job(store, "index", run_id, {"kind": "hnsw", "metric": "cosine"})
    worker = Worker(store, log=lambda line: None)
    finished = [worker.step() for _ in range(3)]
    assert [j.state for j in finished] == [JobState.DONE] * 3, [j.error for j in finished]
    assert store.get_run(run_id).state == RunState.DONE
    assert cached_projection(store.run_dir(run_id), params) is not None
    assert index_path(store.run_dir(run_id), IndexSpec.parse("hnsw")).exists()


def test_the_extractor_made_faster_for_inference_computes_the_same_vectors(torch_home):
    from engine.ml.models import load_resnet18_imagenet

    ds = load_dataset("mnist_sample")
    plain = ImageNetFeatures(load_resnet18_imagenet(), ds, 32).eval()
    fast = ImageNetFeatures(load_resnet18_imagenet(), ds, 32).for_inference("fp32")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())  # folded away
    with torch.inference_mode():
        torch.testing.assert_close(fast.features(ds.test.x[:4]), plain.features(ds.test.x[:4]), rtol=1e-4, atol=1e-4)
        bf16 = ImageNetFeatures(load_resnet18_imagenet(), ds, 32).for_inference("bf16").features(ds.test.x[:4])
    assert bf16.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(bf16.float(), plain.features(ds.test.x[:4]), dim=1)
    assert (cosine > 0.99).all()  # the same directions: what retrieval compares
