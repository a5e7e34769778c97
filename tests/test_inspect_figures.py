"""dashboard.inspect_figures: the pure builders behind the Inspect page."""

from __future__ import annotations

import numpy as np

from dashboard import inspect_figures as F
from engine.ml.analysis import ClassAccuracy, ClassProbability, per_class_accuracy
from engine.ml.inspection import shape_trace
from engine.ml.models import build_model

CM = np.array([[8, 2, 0], [0, 5, 0], [3, 0, 7]])
CLASSES = ["cat", "dog", "bird"]


def test_confusion_heatmap_colours_by_share_of_the_true_class_and_shows_counts():
    fig = F.confusion_figure(CM, CLASSES)
    heat = fig.data[0]
    assert np.allclose(np.array(heat.z)[0], [80, 20, 0]) and np.allclose(np.array(heat.z)[1], [0, 100, 0])
    assert list(heat.text[2]) == ["3", "", "7"]
    assert fig.layout.yaxis.title.text == "true class" and fig.layout.xaxis.title.text == "predicted class"


def test_top_confusions_lists_the_most_frequent_mistakes_first():
    assert F.top_confusions(CM, CLASSES) == [("bird", "cat", 3), ("cat", "dog", 2)]
    assert F.top_confusions(np.eye(3, dtype=int), CLASSES) == []


def test_per_class_figure_marks_the_weakest_class():
    per = per_class_accuracy(CM, CLASSES)
    fig = F.per_class_figure(per)
    assert list(fig.data[0].y) == CLASSES
    assert fig.data[0].marker.color[2] == "#d62728"  # bird, 70%, is the weakest
    frame = F.per_class_frame(per)
    assert frame["accuracy %"].tolist() == [80.0, 100.0, 70.0]
    assert frame["most often mistaken for"].tolist() == ["dog", "–", "cat"]


def test_trace_path_is_the_courses_one_line_trace():
    rows = shape_trace(build_model("simple_cnn", (1, 28, 28), 10), (1, 28, 28))
    assert F.trace_path(rows) == "1x28x28 → 16x28x28 → 16x14x14 → 32x14x14 → 32x7x7 → 1568 → 128 → 10"
    frame = F.trace_frame(rows)
    assert frame["parameters"].sum() == 206922 and len(frame) == len(rows)


def test_top_k_figure_lists_classes_in_order_with_percentages():
    fig = F.top_k_figure(
        [ClassProbability(7, "7", 0.9), ClassProbability(1, "1", 0.07), ClassProbability(2, "2", 0.02)]
    )
    assert list(fig.data[0].y) == ["7", "1", "2"] and list(fig.data[0].text) == ["90.0%", "7.0%", "2.0%"]


def test_enlarge_keeps_pixels_crisp_and_returns_bytes():
    img = np.array([[0.0, 1.0], [0.5, 0.25]])
    big = F.enlarge(img, 8)
    assert big.shape == (8, 8) and big.dtype == np.uint8
    assert big[0, 0] == 0 and big[0, 7] == 255 and big[3, 4] == 255 and big[7, 0] == 128
    assert F.enlarge(np.zeros((3, 3, 3)), 9).shape == (9, 9, 3)


def test_an_empty_class_has_no_accuracy_instead_of_a_division_by_zero():
    per = per_class_accuracy(np.array([[2, 0], [0, 0]]), ["a", "b"])
    assert per[1].accuracy is None and F.per_class_frame(per)["accuracy %"].isna().tolist() == [False, True]
    assert isinstance(per[0], ClassAccuracy)


def test_single_run_curves_name_traces_by_split():
    import pandas as pd

    from dashboard.tables import metrics_long

    rows = [
        {"epoch": e, "train_loss": 1 / e, "train_acc": 0.5, "test_loss": 1.2 / e, "test_acc": 0.4, "seconds": 1.0}
        for e in (1, 2)
    ]
    run = pd.DataFrame([{"id": "r1", "arch": "simple_cnn", "label": "simple_cnn · lr 0.001"}])
    fig = F.single_run_curves(metrics_long({"r1": rows}), run, "loss")
    assert [t.name for t in fig.data] == ["train", "test"]
    assert list(fig.data[1].y) == [1.2, 0.6]
