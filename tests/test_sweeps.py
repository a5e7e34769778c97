"""The Sweeps page's pure builders on hand-made reports: the trials table and the plain-language reading."""

from __future__ import annotations

import pytest

from dashboard.sweeps import best_values_text, reading, replay_reading, trials_frame
from engine.runs.replay import Replay
from tests.sweep_reports import TRIALS, report, trial


def test_the_reading_names_what_mattered_the_values_the_best_trials_used_and_what_barely_mattered():
    said = reading(report(TRIALS, {"lr": 0.92, "batch_size": 0.08}))
    assert said[0].startswith("The best trial so far is #3 · lr 0.001 · batch_size 32, with 95.0% validation")
    assert (
        "The learning rate mattered most (92% of the importance over the 4 trials that ran to the end): the "
        "best trials used 0.001 to 0.003; the batch size barely mattered."
    ) in said
    said = reading(report(TRIALS[:2] + TRIALS[3:5], {"lr": 0.6, "batch_size": 0.4}))
    assert (
        "The learning rate mattered most (60% of the importance): the best trials used 0.001 to 0.003; then "
        "the batch size (40%)."
    ) in said


def test_a_hyperparameter_every_finished_trial_shared_is_not_called_unimportant():
    same = [trial(0, 0.05, 64, [0.7] * 3), trial(1, 0.002, 64, [0.9] * 3), trial(2, 0.01, 32, [0.2], "pruned")]
    said = reading(report(same, {"lr": 0.99, "batch_size": 0.01}))
    assert (
        "Every trial that ran to the end used 64 for the batch size (the others were stopped early), so the "
        "importance cannot weigh it."
    ) in said
    assert not any("barely" in s for s in said)


def test_the_reading_says_what_early_stopping_saved_and_that_it_stopped_only_trials_behind_the_best():
    said = reading(report(TRIALS, {"lr": 1.0, "batch_size": 0.0}))
    # 6 finished trials: 4 x 3 epochs + 2 x 1 of a budget of 18 -> 4 of 18 saved
    assert (
        "Early stopping (ASHA) stopped 2 of 6 finished trials and saved 22% of their epochs; every trial it "
        "stopped was behind the best one at the same epoch."
    ) in said


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
    assert replay_reading(rep, kept) == (
        "Had ASHA been on, it would have stopped 2 of 4 runs and saved 33% of the "
        "epochs, and the winner (#3 · lr 0.04 · batch_size 32) would have survived."
    )
    lost = Replay("asha", ("run-3",), {"run-3": 1}, 12, 10, "run-3", False)
    assert (
        "would have stopped the winner (#3 · lr 0.04 · batch_size 32) at epoch 1: with these settings ASHA "
        "would have cost you the best run" in replay_reading(rep, lost)
    )
    none = Replay("median", (), {}, 12, 12, "run-3", True)
    assert "stopped none of these 4 runs (the median rule waits until 5 runs" in replay_reading(rep, none)


def test_the_trials_table_shows_accuracy_in_percent_and_each_searched_hyperparameter():
    df = trials_frame(report(TRIALS))
    assert list(df.columns) == ["#", "state", "value", "epochs", "stopped after epoch", "lr", "batch_size", "run"]
    assert df.loc[3, "value"] == pytest.approx(95.0) and df.loc[2, "stopped after epoch"] == 1
    assert df.loc[2, "epochs"] == "1/3"
