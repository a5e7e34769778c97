"""engine.analysis: shape trace, parameters, filters, feature maps, test-set analysis, uploads."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from engine import analysis
from engine.analysis import UploadError
from engine.data import load_dataset
from engine.models import build_model, count_parameters
from engine.store import Store
from engine.train import load_trained


@pytest.fixture(scope="module")
def trained(finished_root):
    """(model, dataset, final metrics row) of the finished simple_cnn run."""
    store = Store(finished_root)
    record = next(r for r in store.list_runs() if r.arch == "simple_cnn")
    model, ds = load_trained(record.path, record.train_config(), torch.device("cpu"))
    last = store.metrics(record.id)[-1]
    store.close()
    return model, ds, last


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


# ---------------------------------------------------------------- shapes and parameters


def test_simple_cnn_trace_matches_the_course_on_1x28x28():
    model = build_model("simple_cnn", (1, 28, 28), 10)
    rows = analysis.shape_trace(model, (1, 28, 28))
    shapes = [r.shape_text for r in rows if r.kind not in ("ReLU", "Input")]
    assert shapes == ["16x28x28", "16x14x14", "32x14x14", "32x7x7", "1568", "128", "10"]
    assert [r.kind for r in rows if r.kind not in ("ReLU",)] == [
        "Input", "Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Flatten", "Linear", "Linear"]


def test_trace_parameters_per_layer_add_up_to_the_model_total():
    model = build_model("simple_cnn", (1, 28, 28), 10)
    rows = analysis.shape_trace(model, (1, 28, 28))
    by_layer = {r.layer: r.params for r in rows if r.params}
    assert by_layer == {"Conv2d(1→16, 3x3, pad 1)": 160, "Conv2d(16→32, 3x3, pad 1)": 4640,
                        "Linear(1568→128)": 200832, "Linear(128→10)": 1290}
    assert sum(r.params for r in rows) == count_parameters(model) == 206922
    conv = next(r for r in rows if r.kind == "Conv2d")
    assert conv.formula == "16 × (1×3×3) + 16 = 160"


@pytest.mark.parametrize("arch, shape", [("basic_nn", (1, 28, 28)), ("cifar10_cnn", (3, 32, 32)),
                                         ("simple_cnn_bn", (1, 28, 28)), ("resnet18", (3, 32, 32))])
def test_every_architecture_traces_to_class_scores_with_all_its_parameters(arch, shape):
    model = build_model(arch, shape, 10)
    rows = analysis.shape_trace(model, shape)
    assert rows[0].shape == shape and rows[-1].shape == (10,)
    assert sum(r.params for r in rows) == count_parameters(model)
    assert model.training  # the trace leaves the mode as it found it


# ---------------------------------------------------------------- filters and feature maps


def test_first_conv_filters_are_small_images_in_unit_range():
    model = build_model("simple_cnn", (1, 28, 28), 10)
    filters = analysis.conv_filters(model)
    assert filters.layer == "Conv2d(1→16, 3x3, pad 1)" and not filters.colour
    assert len(filters.images) == 16 and filters.images[0].shape == (3, 3)
    assert all(f.min() >= 0 and f.max() <= 1 for f in filters.images)
    weights = model.body[0].weight[0, 0].detach().numpy()
    assert np.argmax(filters.images[0]) == np.argmax(weights)  # scaling keeps the pattern


def test_colour_filters_are_rgb_and_an_mlp_has_none():
    colour = analysis.conv_filters(build_model("cifar10_cnn", (3, 32, 32), 10))
    assert colour.colour and colour.images[0].shape == (3, 3, 3)
    assert analysis.conv_filters(build_model("basic_nn", (1, 28, 28), 10)) is None
    assert analysis.feature_maps(build_model("basic_nn", (1, 28, 28), 10), torch.zeros(1, 28, 28)) == []


def test_feature_maps_come_after_each_conv_block(trained):
    model, ds, _ = trained
    blocks = analysis.feature_maps(model, ds.test.inputs(0), max_maps=8)
    assert [b.shape for b in blocks] == [(16, 14, 14), (32, 7, 7)]
    assert blocks[0].name.startswith("block 1: Conv2d(1→16") and blocks[0].name.endswith("MaxPool2d(2x2)")
    assert blocks[1].maps.shape == (8, 7, 7)
    assert blocks[0].maps.min() >= 0 and blocks[0].maps.max() <= 1
    # the maps are the real activations: block 1 equals the body's first three layers, rescaled
    direct = model.body[:3](ds.test.inputs(slice(0, 1)))[0, 0].detach().numpy()
    np.testing.assert_allclose(blocks[0].maps[0], analysis._unit(direct), atol=1e-5)


# ---------------------------------------------------------------- test-set analysis


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    cm = analysis.confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    per = analysis.per_class_accuracy(cm, ["a", "b", "c"])
    assert [p.accuracy for p in per] == [0.5, 1.0, pytest.approx(2 / 3)]
    assert [p.most_confused_with for p in per] == ["b", "", "a"]


def test_test_report_accuracy_equals_the_runs_final_test_accuracy(trained):
    model, ds, last = trained
    report = analysis.analyse_test_set(model, ds, limit=10)
    assert report.accuracy == pytest.approx(last["test_acc"], abs=1e-9)
    assert report.confusion.sum() == report.total == len(ds.test)
    assert report.wrong == report.total - int(np.trace(report.confusion))
    assert sum(p.correct for p in report.per_class) == int(np.trace(report.confusion))
    assert 0 < len(report.mistakes) <= 10


def test_misclassified_gallery_lists_wrong_images_most_confident_first():
    preds = analysis.Predictions(np.array([0, 1, 2, 1]), np.array([0, 2, 1, 0]),
                                 np.array([0.9, 0.6, 0.8, 0.7], dtype=np.float32))
    mistakes = analysis.misclassified(preds, ["zero", "one", "two"])
    assert [(m.index, m.true_name, m.pred_name) for m in mistakes] == [
        (2, "two", "one"), (3, "one", "zero"), (1, "one", "two")]
    assert mistakes[0].confidence == pytest.approx(0.8)


def test_display_image_shows_a_stored_image_and_undoes_the_normalisation_of_a_model_input():
    ds = load_dataset("mnist_sample")
    img = analysis.display_image(ds, ds.test.x[0])
    assert img.shape == (28, 28) and img.min() >= 0 and img.max() <= 1
    assert img.max() > 0.9 and img.min() < 0.1  # a white digit on black, as stored
    np.testing.assert_allclose(analysis.display_image(ds, ds.test.inputs(0)), img, atol=1e-5)


# ---------------------------------------------------------------- uploads and prediction


def test_a_real_png_is_accepted_and_prepared_like_the_training_data(trained):
    model, ds, _ = trained
    digit = analysis.display_image(ds, ds.test.x[0])  # a white digit on black, like MNIST
    image = Image.fromarray((digit * 255).round().astype(np.uint8), mode="L").resize((56, 56))
    opened = analysis.open_upload(png_bytes(image))
    prepared = analysis.prepare_image(opened, ds)
    assert prepared.x.shape == (1, 28, 28) and not prepared.inverted
    assert "normalised with the mnist_sample training mean and std" in prepared.note
    assert torch.corrcoef(torch.stack([prepared.x.flatten(), ds.test.inputs(0).flatten()]))[0, 1] > 0.9
    top = analysis.top_k(model, prepared.x, ds.classes, k=3)
    assert len(top) == 3 and top[0].probability >= top[1].probability >= top[2].probability
    assert sum(t.probability for t in top) <= 1 + 1e-6
    direct = analysis.top_k(model, ds.test.inputs(0), ds.classes, k=1)[0]
    assert top[0].name == direct.name  # the upscaled copy of a test digit gets the same answer


def test_a_dark_digit_on_white_is_inverted_to_match_mnist():
    ds = load_dataset("mnist_sample")
    image = Image.new("RGBA", (40, 30), (255, 255, 255, 255))
    image.paste((0, 0, 0, 255), (15, 5, 25, 25))
    prepared = analysis.prepare_image(analysis.open_upload(png_bytes(image)), ds)
    assert prepared.inverted and prepared.display.shape == (28, 28)
    assert prepared.display[14, 14] > 0.9 and prepared.display[0, 0] < 0.1


def test_a_small_drawing_on_a_big_page_is_cropped_and_centred_like_mnist():
    ds = load_dataset("mnist_sample")
    page = Image.new("L", (400, 300), 255)
    page.paste(0, (20, 20, 40, 100))  # a short dark bar near the top-left corner
    prepared = analysis.prepare_image(page, ds)
    assert "cropped to the strokes and centred like MNIST" in prepared.note
    rows, cols = np.nonzero(prepared.display > 0.5)
    assert rows.max() - rows.min() + 1 >= 19  # fitted to the 20-pixel box, as MNIST digits are
    assert abs(rows.mean() - 13.5) < 1.5 and abs(cols.mean() - 13.5) < 1.5
    plain = analysis.prepare_image(page, ds, centre=False)
    assert "centred" not in plain.note and (plain.display > 0.5).sum() < (prepared.display > 0.5).sum()


def test_a_grey_upload_becomes_three_channels_for_a_colour_model():
    ds = load_dataset("mnist_sample")
    colour = type(ds)(name="rgb", classes=ds.classes, train=ds.train, test=ds.test,
                      mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    colour.train = analysis.Split(torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long))
    prepared = analysis.prepare_image(Image.new("L", (64, 64), 128), colour)
    assert prepared.x.shape == (3, 32, 32) and prepared.display.shape == (32, 32, 3)
    assert torch.allclose(prepared.x, torch.full((3, 32, 32), (128 / 255 - 0.5) / 0.25), atol=1e-4)


def test_a_file_that_is_not_an_image_is_refused_with_the_allowed_formats():
    with pytest.raises(UploadError, match="not an image.*PNG, JPEG"):
        analysis.open_upload(b"this is a text file, not a picture\n" * 10)
    with pytest.raises(UploadError, match="empty"):
        analysis.open_upload(b"")


def test_a_file_over_the_size_cap_is_refused_before_decoding():
    data = png_bytes(Image.new("L", (8, 8)))
    assert analysis.MAX_UPLOAD_BYTES == 10 * 1024 * 1024
    with pytest.raises(UploadError, match="the limit is 10 MB"):
        analysis.open_upload(data + b"\0" * analysis.MAX_UPLOAD_BYTES)


def decompression_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    data = png_bytes(Image.new("L", (1, 1)))
    ihdr = data.index(b"IHDR")
    fields = struct.pack(">II", width, height) + data[ihdr + 12:ihdr + 17]
    chunk = b"IHDR" + fields
    return data[:ihdr] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[ihdr + 21:]


def test_a_decompression_bomb_is_refused_by_its_pixel_count():
    bomb = decompression_bomb(6_000, 6_000)  # below Pillow's own limit, above ours
    assert len(bomb) < 1000
    with pytest.raises(UploadError, match="6000 x 6000 = 36,000,000 pixels; the limit is 25,000,000"):
        analysis.open_upload(bomb)


def test_pillows_own_decompression_bomb_guard_becomes_a_clear_error():
    with pytest.raises(UploadError, match="more pixels than the limit of 25,000,000 .*decompression bomb"):
        analysis.open_upload(decompression_bomb(60_000, 60_000))


def test_a_truncated_image_and_an_unlisted_format_are_refused():
    data = png_bytes(Image.new("RGB", (32, 32), (10, 200, 30)))
    with pytest.raises(UploadError, match="damaged or incomplete"):
        analysis.open_upload(data[: len(data) // 2])
    with pytest.raises(UploadError, match="PPM files are not accepted"):
        analysis.open_upload(png_bytes(Image.new("RGB", (4, 4)), fmt="PPM"))
