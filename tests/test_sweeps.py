"""The Sweeps page's pure builders on hand-made reports: frames, figures and the plain-language reading."""

from __future__ import annotations

import pytest

from dashboard.sweeps import (
    best_so_far_figure,
    best_values_text,
    curves_figure,
    epochs_figure,
    importance_figure,
    parallel_coordinates_figure,
    param_figure,
    reading,
    replay_reading,
    trials_frame,
)
from engine.config import TrainConfig
from engine.runs.replay import Replay
from engine.runs.search_space import build_spec, parse_field
from engine.runs.sweep_report import SweepReport, TrialReport

SPEC = build_spec(TrainConfig(val_split=0.1, epochs=3),
                  {"lr": parse_field("lr", "1e-4:1e-1:log"), "batch_size": [32, 128]}, prune="asha", trials=8)


def trial(n: int, lr: float, bs: int, values: list[float], state: str = "done", budget: int = 3) -> TrialReport:
    curve = {e: v for e, v in enumerate(values, start=1)}
    return TrialReport(f"run-{n}", n, state, {"lr": lr, "batch_size": bs}, values[-1] if values else None,
                       len(values), budget, curve, len(values) if state == "pruned" else None)


def report(trials, importance=None, spec=SPEC, objective="val_acc") -> SweepReport:
    return SweepReport("sweep-x", "tpe" if spec else "grid", objective,
                       "maximize" if objective.endswith("acc") else "minimize", ["lr", "batch_size"], trials,
                       importance or {}, spec)


TRIALS = [
    trial(0, 0.05, 32, [0.60, 0.70, 0.72]),
    trial(1, 0.002, 128, [0.85, 0.90, 0.93]),
    trial(2, 1e-4, 32, [0.30], "pruned"),
    trial(3, 0.001, 32, [0.88, 0.92, 0.95]),
    trial(4, 0.003, 128, [0.86, 0.91, 0.94]),
    trial(5, 0.08, 128, [0.40], "pruned"),
    trial(6, 0.02, 32, [], "running"),
]


def test_the_reading_names_what_mattered_the_values_the_best_trials_used_and_what_barely_mattered():
    said = reading(report(TRIALS, {"lr": 0.92, "batch_size": 0.08}))
    assert said[0].startswith("The best trial so far is #3 · lr 0.001 · batch_size 32, with 95.0% validation")
    assert ("The learning rate mattered most (92% of the importance over the 4 trials that ran to the end): the "
            "best trials used 0.001 to 0.003; the batch size barely mattered.") in said
    said = reading(report(TRIALS[:2] + TRIALS[3:5], {"lr": 0.6, "batch_size": 0.4}))
    assert ("The learning rate mattered most (60% of the importance): the best trials used 0.001 to 0.003; then "
            "the batch size (40%).") in said


def test_a_hyperparameter_every_finished_trial_shared_is_not_called_unimportant():
    same = [trial(0, 0.05, 64, [0.7] * 3), trial(1, 0.002, 64, [0.9] * 3), trial(2, 0.01, 32, [0.2], "pruned")]
    said = reading(report(same, {"lr": 0.99, "batch_size": 0.01}))
    assert ("Every trial that ran to the end used 64 for the batch size (the others were stopped early), so the "
            "importance cannot weigh it.") in said
    assert not any("barely" in s for s in said)


def test_the_reading_says_what_early_stopping_saved_and_that_it_stopped_only_trials_behind_the_best():
    said = reading(report(TRIALS, {"lr": 1.0, "batch_size": 0.0}))
    # 6 finished trials: 4 x 3 epochs + 2 x 1 of a budget of 18 -> 4 of 18 saved
    assert ("Early stopping (ASHA) stopped 2 of 6 finished trials and saved 22% of their epochs; every trial it "
            "stopped was behind the best one at the same epoch.") in said


def test_the_reading_warns_when_early_stopping_stopped_a_trial_that_was_ahead_of_the_winner():
    ahead = trial(7, 0.004, 32, [0.90], "pruned")  # at epoch 1 it beat the best trial's 0.88
    said = " ".join(reading(report([*TRIALS, ahead])))
    assert "stopped 1 trial(s) that were ahead of the best one at the epoch they were stopped (#7)" in said


def test_the_reading_of_a_categorical_winner_counts_how_many_best_trials_used_it():
    assert best_values_text(report(TRIALS), "batch_size") == "2 of the best 3 trials used 128"
    assert best_values_text(report(TRIALS[:2]), "batch_size") == "1 of the best 2 trials used 128"


def test_the_reading_before_any_trial_finished_says_it_fills_in_later():
    said = reading(report([trial(0, 0.01, 32, [0.5], "running")]))
    assert said == ["No trial has run to the end yet: the reading fills in as trials finish."]


def test_the_reading_of_a_grid_on_the_test_set_says_it_is_not_for_picking_a_model():
    said = reading(report(TRIALS[:2], spec=None, objective="test_acc"))
    assert any("values are on the test set" in s for s in said)


def test_replay_reading_says_what_would_have_been_stopped_saved_and_whether_the_winner_survived():
    rep = report([trial(i, 0.01 * (i + 1), 32, [0.5 + i / 10] * 3) for i in range(4)], spec=None)
    kept = Replay("asha", ("run-0", "run-1"), {"run-0": 1, "run-1": 1}, 12, 8, "run-3", True)
    assert replay_reading(rep, kept) == ("Had ASHA been on, it would have stopped 2 of 4 runs and saved 33% of the "
                                         "epochs, and the winner (#3 · lr 0.04 · batch_size 32) would have survived.")
    lost = Replay("asha", ("run-3",), {"run-3": 1}, 12, 10, "run-3", False)
    assert "would have stopped the winner (#3 · lr 0.04 · batch_size 32) at epoch 1: with these settings ASHA " \
           "would have cost you the best run" in replay_reading(rep, lost)
    none = Replay("median", (), {}, 12, 12, "run-3", True)
    assert "stopped none of these 4 runs (the median rule waits until 5 runs" in replay_reading(rep, none)


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


def test_the_trials_table_shows_accuracy_in_percent_and_each_searched_hyperparameter():
    df = trials_frame(report(TRIALS))
    assert list(df.columns) == ["#", "state", "value", "epochs", "stopped after epoch", "lr", "batch_size", "run"]
    assert df.loc[3, "value"] == pytest.approx(95.0) and df.loc[2, "stopped after epoch"] == 1
    assert df.loc[2, "epochs"] == "1/3"
