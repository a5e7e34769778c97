"""engine.ml.analysis: the test-set report (confusion, per class, mistakes), uploads prepared like the data, top-k."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from engine.errors import ImageError
from engine.ml import analysis
from engine.ml.data import load_dataset
from engine.ml.images import WORKING_SIDE, open_upload
from engine.ml.splits import Split
from engine.ml.train import load_trained
from engine.runs.store import Store


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
    preds = analysis.Predictions(
        np.array([0, 1, 2, 1]), np.array([0, 2, 1, 0]), np.array([0.9, 0.6, 0.8, 0.7], dtype=np.float32)
    )
    mistakes = analysis.misclassified(preds, ["zero", "one", "two"])
    assert [(m.index, m.true_name, m.pred_name) for m in mistakes] == [
        (2, "two", "one"),
        (3, "one", "zero"),
        (1, "one", "two"),
    ]
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
    opened = open_upload(png_bytes(image))
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
    prepared = analysis.prepare_image(open_upload(png_bytes(image)), ds)
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
    colour = type(ds)(
        name="rgb", classes=ds.classes, train=ds.train, test=ds.test, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]
    )
    colour.train = Split(torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long))
    prepared = analysis.prepare_image(Image.new("L", (64, 64), 128), colour)
    assert prepared.x.shape == (3, 32, 32) and prepared.display.shape == (32, 32, 3)
    assert torch.allclose(prepared.x, torch.full((3, 32, 32), (128 / 255 - 0.5) / 0.25), atol=1e-4)


def test_preparing_a_large_in_memory_image_never_pads_beyond_the_working_size(monkeypatch):
    padded = []
    real_pad = ImageOps.pad
    monkeypatch.setattr(
        ImageOps, "pad", lambda image, size, *a, **k: padded.append(size) or real_pad(image, size, *a, **k)
    )
    page = Image.new("L", (10_000, 600), 255)  # 16:1, within the aspect limit
    page.paste(0, (4000, 100, 4400, 500))
    prepared = analysis.prepare_image(page, load_dataset("mnist_sample"))
    assert prepared.x.shape == (1, 28, 28)
    assert padded and max(max(s) for s in padded) <= WORKING_SIDE
    with pytest.raises(ImageError, match="at most 20:1"):
        analysis.prepare_image(Image.new("L", (10_000, 10), 255), load_dataset("mnist_sample"))
