"""dashboard.loaders: a run's model loaded once per model file, and what Inspect computes with it.

Streamlit's caches work outside a running app (in memory), so the loaders are called directly here.
Each test works on its own copy of the finished runs, so no cache entry of another test can answer.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from dashboard import loaders
from engine.errors import LensboardError, ModelError, UploadError
from engine.ml.models import count_parameters
from engine.runs.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def runs(finished_root, tmp_path):
    """{arch: RunRecord} of a private copy of the finished runs."""
    root = tmp_path / "results"
    shutil.copytree(finished_root, root)
    store = Store(root)
    try:
        return {r.arch: r for r in store.list_runs()}
    finally:
        store.close()


def touch_later(path) -> None:
    """The file written again: the same bytes, a later modification time (as a retrained run has)."""
    stat = path.stat()
    path.write_bytes(path.read_bytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_a_runs_model_is_loaded_once_and_again_only_when_its_model_file_changes(runs):
    cnn = runs["simple_cnn"]
    model, ds = loaders.model(cnn)
    assert loaders.model(cnn)[0] is model  # the second call is the cache's
    assert not model.training and ds.name == "mnist_sample"
    touch_later(cnn.paths.model)
    assert loaders.model(cnn)[0] is not model


def test_the_test_report_is_the_runs_own_test_accuracy(runs):
    cnn = runs["simple_cnn"]
    report = loaders.test_report(cnn)
    store = Store(cnn.path.parent.parent)
    try:
        last = store.metrics(cnn.id)[-1]
    finally:
        store.close()
    assert report.accuracy == pytest.approx(last["test_acc"], abs=1e-9)
    assert report.total == 1000 and 0 < len(report.mistakes) <= loaders.GALLERY


def test_the_layer_trace_counts_every_parameter_of_the_loaded_model(runs):
    trace, total = loaders.layers(runs["simple_cnn"])
    assert total == count_parameters(loaders.model(runs["simple_cnn"])[0]) == 206922
    assert trace[0].shape == (1, 28, 28) and trace[-1].shape == (10,)


def test_filters_and_feature_maps_come_from_the_model_and_an_mlp_has_no_filters(runs):
    assert loaders.filters(runs["basic_nn"]) is None
    filters = loaders.filters(runs["simple_cnn"])
    assert len(filters.images) == 16 and filters.layer == "Conv2d(1→16, 3x3, pad 1)"
    maps = loaders.feature_maps(runs["simple_cnn"], 3)
    assert [b.shape for b in maps.blocks] == [(16, 14, 14), (32, 7, 7)]
    assert maps.image.shape == (28, 28) and maps.true_name in loaders.model(runs["simple_cnn"])[1].classes


def test_gallery_images_are_the_chosen_test_images_enlarged_as_bytes(runs):
    images = loaders.gallery_images(runs["simple_cnn"], (0, 5), size=84)
    assert len(images) == 2 and images[0].shape == (84, 84) and images[0].dtype == np.uint8
    assert not np.array_equal(images[0], images[1])


def test_an_uploaded_digit_gets_three_classes_and_a_bad_file_one_clear_error(runs):
    image = Image.new("L", (60, 60), 255)
    image.paste(0, (26, 8, 34, 52))  # a dark "1" on white paper
    answer = loaders.classify_upload(runs["simple_cnn"], png(image))
    assert len(answer.top) == 3 and answer.prepared.inverted and answer.image.size == (60, 60)
    assert answer.top[0].probability >= answer.top[1].probability >= answer.top[2].probability
    with pytest.raises(UploadError, match="not an image"):
        loaders.classify_upload(runs["simple_cnn"], b"plain text, no picture" * 10)


def test_a_missing_or_damaged_model_file_is_a_lensboard_error_saying_what_to_do(runs):
    mlp, cnn = runs["basic_nn"], runs["simple_cnn"]
    mlp.paths.model.unlink()
    with pytest.raises(ModelError, match=f"run {mlp.id} has no model file .*train it again"):
        loaders.model(mlp)
    cnn.paths.model.write_bytes(b"not a torch file")
    with pytest.raises(LensboardError, match="damaged or incomplete"):
        loaders.test_report(cnn)


def test_the_search_embedder_is_loaded_once_per_model_file(runs):
    cnn = runs["simple_cnn"]
    embedder = loaders.embedder(cnn)
    assert loaders.embedder(cnn) is embedder
    touch_later(cnn.paths.model)
    assert loaders.embedder(cnn) is not embedder
