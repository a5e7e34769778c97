"""The metric tables and form parsers behind the pages, tested without Streamlit."""

from __future__ import annotations

import math

import pytest

from dashboard.forms import grid_size, human_count, parameter_count, parse_float, parse_list
from dashboard.runs_table import runs_frame
from dashboard.tables import (
    SummarySpec,
    ValueRule,
    metrics_long,
    metrics_wide,
    summary_table,
    varying_hyperparams,
)
from engine.errors import ConfigError
from tests.table_runs import epoch_row, make_runs


def test_metrics_long_has_one_row_per_split_and_cumulative_elapsed_time():
    rows = [
        epoch_row(1, 1.0, 0.9, 0.6, val_loss=0.95, seconds=2.0),
        epoch_row(2, 0.5, 0.6, 0.8, val_loss=0.65, seconds=3.0),
    ]
    long = metrics_long({"a": rows, "b": [epoch_row(1, 2.0, 1.9, 0.3)], "empty": []})
    assert set(long["split"]) == {"train", "val", "test"}
    assert len(long[long["run"] == "a"]) == 6 and len(long[long["run"] == "b"]) == 2
    a_test = long[(long["run"] == "a") & (long["split"] == "test")]
    assert list(a_test["elapsed"]) == [2.0, 5.0] and list(a_test["acc"]) == [0.6, 0.8]
    assert metrics_long({}).empty


def test_metrics_wide_restores_one_row_per_run_and_epoch_for_the_csv():
    rows = [epoch_row(1, 1.0, 0.9, 0.6, seconds=2.0), epoch_row(2, 0.5, 0.6, 0.8, seconds=3.0)]
    wide = metrics_wide(metrics_long({"a": rows}))
    assert list(wide["epoch"]) == [1, 2]
    assert list(wide["test_acc"]) == [0.6, 0.8] and list(wide["seconds"]) == [2.0, 3.0]
    assert {"train_loss", "test_loss"} <= set(wide.columns)


@pytest.fixture
def two_runs(store):
    a, b = make_runs(store, [("basic_nn", 1e-3, "done", []), ("simple_cnn", 1e-2, "done", [])])
    long = metrics_long(
        {
            a: [
                epoch_row(1, 1.0, 0.9, 0.60, seconds=1),
                epoch_row(2, 0.6, 0.7, 0.75, seconds=1),
                epoch_row(3, 0.4, 0.8, 0.70, seconds=1),
            ],
            b: [epoch_row(1, 0.8, 0.5, 0.80, seconds=4), epoch_row(2, 0.4, 0.45, 0.85, seconds=4)],
        }
    )
    return a, b, long, runs_frame(store.list_runs())


def test_summary_table_final_value_and_difference_to_the_baseline_in_points(two_runs):
    a, b, long, runs = two_runs
    table = summary_table(long, runs, SummarySpec(metric="acc", split="test", baseline=a)).set_index("run")
    assert table.loc[a, "value"] == pytest.approx(70.0) and table.loc[b, "value"] == pytest.approx(85.0)
    assert table.loc[b, "vs baseline"] == pytest.approx(15.0) and table.loc[a, "vs baseline"] == 0
    assert table.loc[a, "s / epoch"] == pytest.approx(1.0) and table.loc[b, "s / epoch"] == pytest.approx(4.0)
    assert table.attrs["diff_unit"] == "percentage points"
    assert "final test accuracy" in table.attrs["value_name"]


def test_summary_table_best_rule_takes_max_accuracy_and_min_loss(two_runs):
    a, b, long, runs = two_runs
    acc = summary_table(long, runs, SummarySpec(metric="acc", rule=ValueRule.BEST)).set_index("run")
    assert acc.loc[a, "value"] == pytest.approx(75.0) and acc.loc[a, "from epoch"] == 2
    loss = summary_table(long, runs, SummarySpec(metric="loss", rule=ValueRule.BEST)).set_index("run")
    assert loss.loc[a, "value"] == pytest.approx(0.7) and loss.loc[a, "from epoch"] == 2
    assert math.isnan(loss.loc[a, "vs baseline"])  # no baseline chosen


def test_summary_table_at_epoch_k_is_missing_for_runs_that_stopped_before_k(two_runs):
    a, b, long, runs = two_runs
    table = summary_table(
        long, runs, SummarySpec(metric="loss", split="train", rule=ValueRule.AT_EPOCH, epoch=3, baseline=b)
    ).set_index("run")
    assert table.loc[a, "value"] == pytest.approx(0.4)
    assert math.isnan(table.loc[b, "value"])
    assert "at epoch 3" in table.attrs["value_name"]


def test_varying_hyperparams_names_what_a_sweep_changed(two_runs):
    _, _, _, runs = two_runs
    assert varying_hyperparams(runs) == ["arch", "lr"]
    assert varying_hyperparams(runs.iloc[:1]) == []


def test_parse_list_reads_comma_separated_values_and_explains_mistakes():
    assert parse_list("1e-3, 1e-2, 1e-3", "learning rates", float) == [1e-3, 1e-2]
    assert parse_list(" 32;128 ", "batch sizes", int) == [32, 128]
    with pytest.raises(ConfigError, match="batch sizes: '3.5' is not a whole number"):
        parse_list("32, 3.5", "batch sizes", int)
    with pytest.raises(ConfigError, match="at least one value"):
        parse_list(" , ", "seeds", int)
    with pytest.raises(ConfigError, match="learning rate must be a number"):
        parse_float("fast", "learning rate")
    with pytest.raises(ConfigError, match="finite"):
        parse_float("inf", "learning rate")


def test_parameter_count_depends_on_the_image_shape():
    mnist = parameter_count("basic_nn", (1, 28, 28), 10)
    assert mnist == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert parameter_count("basic_nn", (3, 32, 32), 10) > mnist
    assert human_count(mnist) == "109.4k" and human_count(11_200_000) == "11.20M" and human_count(42) == "42"


def test_grid_size_is_the_product_of_the_list_lengths():
    assert grid_size(lr=[1, 2, 3], batch_size=[1, 2], arch=["a", "b"]) == 12
    assert grid_size() == 0


def test_a_split_logged_with_only_its_accuracy_still_has_a_curve():
    long = metrics_long({"a": [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.6, "train_loss": 1.0}]})
    test = long[long["split"] == "test"]
    assert list(test["acc"]) == [0.5, 0.6] and test["loss"].isna().all()
    assert list(long[long["split"] == "train"]["loss"]) == [1.0]


def test_values_a_script_logged_besides_loss_and_accuracy_are_found_by_name():
    from dashboard.tables import extra_metric_frame, extra_metric_names

    metrics = {
        "a": [
            epoch_row(1, 1.0, 0.9, 0.6) | {"grad_norm": 3.0, "note": "x", "lr": 0.1},
            epoch_row(2, 0.5, 0.6, 0.8) | {"grad_norm": 2.0},
        ],
        "b": [epoch_row(1, 1.0, 0.9, 0.6)],
    }
    assert extra_metric_names(metrics) == ["grad_norm"]
    frame = extra_metric_frame(metrics, "grad_norm")
    assert frame.to_dict("list") == {"run": ["a", "a"], "epoch": [1, 2], "value": [3.0, 2.0]}


def test_parameter_count_of_your_own_model_follows_edits_to_its_file(tmp_path):
    path = tmp_path / "net.py"
    source = (
        "from torch import nn\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n"
        "        super().__init__()\n        self.fc = nn.Linear(784, num_classes)\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n"
    )
    path.write_text(source)
    assert parameter_count(f"{path}:Net", (1, 28, 28), 10) == 7850
    path.write_text(source.replace("num_classes)\n", "num_classes, bias=False)\n"))
    assert parameter_count(f"{path}:Net", (1, 28, 28), 10) == 7840
