"""dashboard.assignments.measures: a run's numbers as the report quotes them, model sizes from the engine."""

from __future__ import annotations

import math

import pytest

from dashboard.assignments.measures import (
    images_in_test_set,
    largest_layer,
    mean_summary,
    parameter_count,
    pct,
    points,
    seed_group,
    spread,
    steps_per_epoch,
    summarise,
)
from dashboard.assignments.plan import Planned, RunStatus, baseline
from engine.ml.inspection import shape_trace
from engine.ml.models import build_model, count_parameters
from engine.runs.records import RunState
from tests.assignment_runs import metrics_rows


def done(key: str, rows: list[dict], seed: int = 0, batch_size: int = 64, batches: int = 0) -> RunStatus:
    config = baseline("simple_cnn", "mnist_sample", "data", seed=seed, batch_size=batch_size)
    return RunStatus(Planned(key, key, config), RunState.DONE.value, f"run-{key}-{seed}", rows, batches=batches)


def test_a_summary_reads_the_last_and_best_epochs_and_counts_test_loss_rises():
    rows = metrics_rows(5, 0.4, 0.95, 2.0, bumps=(3,))
    s = summarise(list(reversed(rows)))  # the order of the rows does not matter
    assert s.losses == [r["train_loss"] for r in rows] and s.epochs == 5
    assert s.test_acc == pytest.approx(0.95) and s.best_epoch == 5 and s.error_rate == pytest.approx(0.05)
    assert s.sec_per_epoch == pytest.approx(2.03) and s.loss_rises == 1
    assert summarise([]) is None


def test_seconds_are_nan_when_no_epoch_recorded_them():
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in metrics_rows(2, 0.4, 0.9, 1.0)]
    assert math.isnan(summarise(rows).sec_per_epoch)


def test_percentages_and_points_read_as_the_course_writes_them():
    assert pct(0.97106) == "97.11%" and pct(1.0) == "100.00%"
    assert points(-0.0123) == "1.23 points" and points(0.01) == "1.00 point"


def test_parameter_counts_are_the_engines_for_the_datasets_shape():
    for arch, dataset, shape in (("basic_nn", "mnist_sample", (1, 28, 28)), ("cifar10_cnn", "cifar10", (3, 32, 32))):
        config = baseline(arch, dataset, "data")
        assert parameter_count(config) == count_parameters(build_model(arch, shape, 10))
    assert parameter_count(baseline("basic_nn", "folder:/somewhere", "data")) is None  # shape unknown unread


def test_the_largest_layer_comes_from_the_shape_trace():
    config = baseline("simple_cnn", "mnist_sample", "data")
    biggest = max(shape_trace(build_model("simple_cnn", (1, 28, 28), 10), (1, 28, 28)), key=lambda r: r.params)
    assert largest_layer(config) == (biggest.layer, biggest.params) == ("Linear(1568→128)", 200832)


def test_steps_per_epoch_are_the_measured_batches_else_derived_from_the_training_images():
    rows = metrics_rows(1, 0.4, 0.9, 1.0)
    assert steps_per_epoch(done("a", rows, batches=57)) == 57  # what the run did (a train_limit, a val split)
    assert steps_per_epoch(done("b", rows, batch_size=32)) == 125  # 4,000 images in batches of 32
    assert images_in_test_set("mnist_sample") == 1000 and images_in_test_set("folder:/x") is None


def test_seed_groups_keep_finished_seeds_only_and_their_spread_reads_as_mean_and_std():
    runs = [done("cnn", metrics_rows(5, 0.3, acc, 2.0), seed=s) for s, acc in enumerate((0.97, 0.972, 0.968))]
    runs.append(RunStatus(runs[0].planned, RunState.RUNNING.value, "still-running"))
    group = seed_group(runs, "SimpleCNN")
    assert group.n == 3 and group.seeds == (0, 1, 2) and group.mean == pytest.approx(0.97)
    assert spread(group) == "97.00% ± 0.20 points over seeds 0-2 (mean ± std)"
    mean = mean_summary(runs[:3])
    assert mean.test_acc == pytest.approx(0.97) and mean.losses == summarise(runs[0].metrics).losses
