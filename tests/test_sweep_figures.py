"""The Sweeps page's figures (dashboard/sweep_figures.py) on hand-made reports."""

from __future__ import annotations

import pytest

from dashboard.sweep_figures import (
    best_so_far_figure,
    curves_figure,
    epochs_figure,
    importance_figure,
    parallel_coordinates_figure,
    param_figure,
)
from tests.sweep_reports import TRIALS, report


def test_best_so_far_steps_up_only_on_trials_that_ran_to_the_end():
    fig = best_so_far_figure(report(TRIALS))
    best = next(t for t in fig.data if t.name == "best so far")
    assert list(best.x) == [0, 1, 2, 3, 4, 5, 6]
    assert list(best.y) == pytest.approx([72, 93, 93, 95, 95, 95, 95])
    pruned = next(t for t in fig.data if t.name == "pruned")
    assert pruned.marker.symbol == "x" and list(pruned.x) == [2, 5]


def test_curves_mark_where_each_trial_was_stopped_and_fade_what_a_replay_would_have_saved():
    fig = curves_figure(report(TRIALS))
    stops = [t for t in fig.data if t.mode == "markers"]
    assert sorted(float(t.x[0]) for t in stops) == [1.0, 1.0]  # the two pruned trials, after epoch 1
    replayed = curves_figure(report(TRIALS), {"run-0": 1})
    faint = [t for t in replayed.data if t.opacity == 0.35]
    assert len(faint) == 1 and list(faint[0].x) == [1, 2, 3]


def test_importance_bars_are_shares_in_percent_with_the_biggest_on_top():
    fig = importance_figure(report(TRIALS, {"lr": 0.75, "batch_size": 0.25}))
    assert list(fig.data[0].y) == ["batch_size", "lr"] and list(fig.data[0].x) == [25, 75]


def test_value_against_the_learning_rate_uses_a_log_axis_and_marks_pruned_trials():
    fig = param_figure(report(TRIALS), "lr")
    assert fig.layout.xaxis.type == "log"
    assert {t.marker.symbol for t in fig.data} == {"circle", "x"}
    assert param_figure(report(TRIALS), "batch_size").layout.xaxis.type is None


def test_parallel_coordinates_have_one_axis_per_searched_hyperparameter_and_one_for_the_value():
    fig = parallel_coordinates_figure(report(TRIALS))
    assert [d.label for d in fig.data[0].dimensions] == ["log10 lr", "batch_size", "validation accuracy (%)"]


def test_epochs_against_budget_accumulate_trial_by_trial():
    fig = epochs_figure(report(TRIALS))
    budget, spent = fig.data
    assert list(spent.y) == [3, 6, 7, 10, 13, 14, 14] and list(budget.y) == [3, 6, 9, 12, 15, 18, 21]
