"""Figure builders: frames in, plotly figures out, checked trace by trace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard.figures import (
    DASHES,
    FADED,
    color_map,
    curves_figure,
    group_curves_figure,
    parallel_figure,
    scatter_figure,
)
from dashboard.groups import ema
from dashboard.tables import SummarySpec, metrics_long, summary_table


def runs_table(rows):
    df = pd.DataFrame(rows)
    df["label"] = df["id"] + " label"
    return df


def metrics(n, start):
    return [
        {
            "epoch": e,
            "train_loss": start / e,
            "train_acc": 0.5 + e / 100,
            "val_loss": start / e + 0.1,
            "val_acc": 0.5,
            "test_loss": start / e + 0.2,
            "test_acc": 0.4 + e / 100,
            "seconds": 2.0,
        }
        for e in range(1, n + 1)
    ]


@pytest.fixture
def frames():
    runs = runs_table(
        [
            {
                "id": "r1",
                "state": "done",
                "arch": "basic_nn",
                "lr": 1e-3,
                "batch_size": 64,
                "dataset": "d",
                "epochs": 3,
                "optimizer": "adam",
                "momentum": 0.9,
                "weight_decay": 0.0,
                "val_split": 0.1,
                "seed": 0,
                "train_limit": None,
            },
            {
                "id": "r2",
                "state": "done",
                "arch": "simple_cnn",
                "lr": 1e-2,
                "batch_size": 64,
                "dataset": "d",
                "epochs": 3,
                "optimizer": "sgd",
                "momentum": 0.9,
                "weight_decay": 0.0,
                "val_split": 0.1,
                "seed": 0,
                "train_limit": None,
            },
            {
                "id": "r3",
                "state": "done",
                "arch": "simple_cnn",
                "lr": 1e-1,
                "batch_size": 32,
                "dataset": "d",
                "epochs": 3,
                "optimizer": "sgd",
                "momentum": 0.9,
                "weight_decay": 0.0,
                "val_split": 0.1,
                "seed": 0,
                "train_limit": None,
            },
        ]
    )
    long = metrics_long({"r1": metrics(3, 2.0), "r2": metrics(3, 1.0), "r3": metrics(2, 1.5)})
    return long, runs


def test_curves_draw_one_trace_per_run_and_split_with_a_dash_per_split(frames):
    long, runs = frames
    fig = curves_figure(long, runs, metric="loss", splits=("train", "test"))
    assert len(fig.data) == 6
    assert {t.line.dash for t in fig.data} == {DASHES["train"], DASHES["test"]}
    first = fig.data[0]
    assert first.name == "r1 label · train" and list(first.y) == pytest.approx([2.0, 1.0, 2 / 3])


def test_accuracy_curves_are_in_percent_and_can_use_elapsed_seconds(frames):
    long, runs = frames
    fig = curves_figure(long, runs, metric="acc", splits=("test",), x="elapsed")
    assert list(fig.data[0].y) == pytest.approx([41.0, 42.0, 43.0])
    assert list(fig.data[0].x) == [2.0, 4.0, 6.0]
    assert fig.layout.yaxis.title.text == "accuracy (%)"


def test_colouring_by_a_hyperparameter_gives_runs_with_the_same_value_the_same_colour(frames):
    long, runs = frames
    by_arch = curves_figure(long, runs, splits=("test",), color_by="arch")
    colours = [t.line.color for t in by_arch.data]
    assert colours[1] == colours[2] != colours[0]
    by_lr = curves_figure(long, runs, splits=("test",), color_by="lr")
    assert len({t.line.color for t in by_lr.data}) == 3


def test_curves_reject_an_unknown_metric_or_axis(frames):
    long, runs = frames
    with pytest.raises(ValueError, match="metric must be one of loss, acc"):
        curves_figure(long, runs, metric="f1")
    with pytest.raises(ValueError, match="x must be one of epoch, elapsed"):
        curves_figure(long, runs, x="step")


def test_colour_map_orders_numbers_numerically():
    cmap = color_map([0.1, 0.01, 1])
    assert list(cmap) == ["0.01", "0.1", "1"]


def test_scatter_puts_a_swept_learning_rate_on_a_log_axis(frames):
    long, runs = frames
    summary = summary_table(long, runs, SummarySpec(metric="acc"))
    fig = scatter_figure(summary, "lr")
    assert sum(len(t.x) for t in fig.data) == 3
    assert fig.layout.xaxis.type == "log"
    assert scatter_figure(summary, "optimizer", color_by="arch").layout.xaxis.type == "category"


def test_parallel_coordinates_have_an_axis_per_parameter_plus_the_result(frames):
    long, runs = frames
    summary = summary_table(long, runs, SummarySpec(metric="acc"))
    fig = parallel_figure(summary, ["arch", "lr", "batch_size"])
    dims = fig.data[0].dimensions
    assert [d.label for d in dims][:3] == ["arch", "log10 lr", "batch_size"]
    assert list(dims[0].ticktext) == ["basic_nn", "simple_cnn"]
    assert list(dims[-1].values) == pytest.approx(list(summary["value"]))


# ---------------------------------------------------------------- groups of seeds, smoothing, log y, highlight


@pytest.fixture
def seed_groups():
    """Two groups: three seeds of a (test accuracy .90/.92/.94 at the last epoch) and one run of b."""

    def rows(final):
        return [
            {
                "epoch": e,
                "train_loss": 1.0 / e,
                "train_acc": final - 0.1 / e,
                "test_loss": 1.1 / e,
                "test_acc": final - 0.05 * (3 - e),
                "seconds": 2.0,
            }
            for e in (1, 2, 3)
        ]

    long = metrics_long({"a0": rows(0.90), "a1": rows(0.92), "a2": rows(0.94), "b0": rows(0.80)})
    return long, [("a", ["a0", "a1", "a2"]), ("b", ["b0"])]


def test_a_group_is_a_mean_line_with_a_std_band_behind_it_and_a_group_of_one_has_no_band(seed_groups):
    long, groups = seed_groups
    fig = group_curves_figure(long, groups, metric="acc", splits=("test",))
    bands = [t for t in fig.data if t.fill == "toself"]
    lines = [t for t in fig.data if t.fill != "toself"]
    assert [t.name for t in bands] == ["a · test · band"]  # b has one run: nothing to spread
    assert [t.name for t in lines] == ["a · test (mean of 3 runs)", "b · test (1 run)"]
    assert list(lines[0].y) == pytest.approx([82.0, 87.0, 92.0]) and list(lines[1].y) == pytest.approx([70, 75, 80])
    std = 100 * np.std([0.90, 0.92, 0.94], ddof=1)  # the same at every epoch here
    band = bands[0]
    assert list(band.x) == [1, 2, 3, 3, 2, 1]  # along the top, back along the bottom
    assert list(band.y) == pytest.approx([82 + std, 87 + std, 92 + std, 92 - std, 87 - std, 82 - std])
    assert band.line.color == lines[0].line.color and band.showlegend is False


def test_the_band_can_span_min_to_max_instead(seed_groups):
    long, groups = seed_groups
    band = next(
        t
        for t in group_curves_figure(long, groups, metric="acc", splits=("test",), band="range").data
        if t.fill == "toself"
    )
    assert list(band.y) == pytest.approx([84.0, 89.0, 94.0, 90.0, 85.0, 80.0])
    with pytest.raises(ValueError, match="band must be one of std, range"):
        group_curves_figure(long, groups, band="iqr")


def test_smoothing_draws_the_moving_average_over_the_raw_curve_faded_behind(frames):
    long, runs = frames
    fig = curves_figure(long, runs.iloc[:1], metric="loss", splits=("train",), smoothing=0.6)
    raw, smooth = fig.data
    assert list(raw.y) == pytest.approx([2.0, 1.0, 2 / 3]) and raw.opacity < 0.5 and raw.showlegend is False
    expected = pd.Series([2.0, 1.0, 2 / 3]).ewm(alpha=0.4, adjust=True).mean()
    assert list(smooth.y) == pytest.approx(list(expected)) and smooth.y[0] == pytest.approx(2.0)
    assert len(curves_figure(long, runs.iloc[:1], splits=("train",)).data) == 1  # off: no raw copy


def test_smoothing_a_group_smooths_each_run_before_the_mean_and_keeps_the_raw_mean(seed_groups):
    long, groups = seed_groups
    fig = group_curves_figure(long, groups[:1], metric="loss", splits=("train",), smoothing=0.5)
    band, raw, mean = fig.data
    assert list(raw.y) == pytest.approx([1.0, 0.5, 1 / 3]) and raw.opacity < 0.5
    assert list(mean.y) == pytest.approx(list(ema([1.0, 0.5, 1 / 3], 0.5)))  # the runs' losses are equal here


def test_log_y_and_highlight_one_run_while_the_others_fade(frames, seed_groups):
    long, runs = frames
    fig = curves_figure(long, runs, splits=("test",), log_y=True, highlight="r2")
    assert fig.layout.yaxis.type == "log" and "log scale" in fig.layout.yaxis.title.text
    opacity = {t.legendgroup: t.opacity for t in fig.data}
    assert opacity["r2"] == 1.0 and opacity["r1"] == opacity["r3"] < 0.5
    assert fig.data[1].line.width > fig.data[0].line.width
    long, groups = seed_groups
    fig = group_curves_figure(long, groups, splits=("test",), highlight="b")
    assert {t.legendgroup: t.opacity for t in fig.data if t.fill != "toself"} == {"a": FADED, "b": 1.0}


def test_a_logged_value_is_one_line_per_run_that_logged_it(frames):
    from dashboard.figures import values_figure
    from dashboard.tables import extra_metric_frame

    _, runs = frames
    frame = extra_metric_frame(
        {"r1": [{"epoch": 1, "grad_norm": 3.0}, {"epoch": 2, "grad_norm": 2.0}], "r2": []}, "grad_norm"
    )
    fig = values_figure(frame, runs, "grad_norm")
    assert [t.name for t in fig.data] == ["r1 label"] and list(fig.data[0].y) == [3.0, 2.0]
    assert fig.layout.yaxis.title.text == "grad_norm"
