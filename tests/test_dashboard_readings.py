"""Plain-language readings: each appears on curves made to show it, and stays away otherwise."""

from __future__ import annotations

import math

import pandas as pd

from dashboard.readings import (
    ReadingKind,
    differences,
    divergence,
    faster,
    overfitting,
    plateau,
    precision_note,
    read_curves,
    winner,
)
from dashboard.tables import SummarySpec, metrics_long


def curve(train, held, *, split="val", train_acc=None, seconds=1.0, run="r1"):
    rows = []
    for i, (t, h) in enumerate(zip(train, held), start=1):
        row = {
            "epoch": i,
            "train_loss": t,
            "train_acc": (train_acc or [0.95] * len(train))[i - 1],
            f"{split}_loss": h,
            f"{split}_acc": 0.9,
            "seconds": seconds,
        }
        if split == "val":
            row["test_loss"], row["test_acc"] = h, 0.9
        rows.append(row)
    return metrics_long({run: rows})


def test_overfitting_names_the_epoch_where_the_gap_starts_widening():
    run = curve(train=[1.0, 0.6, 0.4, 0.25, 0.15], held=[1.05, 0.7, 0.65, 0.75, 0.9])
    found = overfitting(run, "cnn")
    assert found is not None and found.kind == ReadingKind.OVERFITTING
    assert "from epoch 4" in found.text and "0.650 (epoch 3)" in found.text and "validation" in found.text
    assert "0.250 to 0.750" in found.text  # the gap at epoch 3 and at the end


def test_overfitting_uses_the_test_split_when_there_is_no_validation():
    run = curve(train=[1.0, 0.6, 0.4, 0.2], held=[1.0, 0.7, 0.8, 0.95], split="test")
    assert "test loss" in overfitting(run, "mlp").text


def test_no_overfitting_while_both_losses_fall():
    run = curve(train=[1.0, 0.6, 0.4, 0.3], held=[1.1, 0.75, 0.6, 0.55])
    assert overfitting(run, "cnn") is None


def test_no_overfitting_on_a_tiny_wobble_or_with_too_few_epochs():
    wobble = curve(train=[1.0, 0.6, 0.4, 0.3], held=[1.0, 0.60, 0.59, 0.595])
    assert overfitting(wobble, "cnn") is None
    assert overfitting(curve(train=[1.0, 0.5], held=[0.6, 0.9]), "cnn") is None


def test_plateau_from_the_start_blames_a_too_small_learning_rate():
    run = curve(train=[2.30, 2.29, 2.285, 2.28], held=[2.3] * 4, train_acc=[0.11] * 4)
    run.attrs["lr"] = 1e-6
    found = plateau(run, "mlp")
    assert found is not None and "too small" in found.text and "1e-06" in found.text


def test_plateau_at_low_training_accuracy_is_underfitting_from_the_epoch_it_flattened():
    run = curve(
        train=[2.0, 1.2, 1.0, 0.995, 0.992], held=[2.0, 1.3, 1.1, 1.1, 1.1], train_acc=[0.3, 0.5, 0.6, 0.6, 0.6]
    )
    found = plateau(run, "tiny")
    assert found is not None and "underfitting" in found.text and "epoch 3" in found.text
    assert "60.0 % training accuracy" in found.text


def test_plateau_at_high_training_accuracy_reads_as_converged():
    run = curve(
        train=[1.0, 0.3, 0.1, 0.0995, 0.0993], held=[1.0, 0.3, 0.2, 0.2, 0.2], train_acc=[0.7, 0.9, 0.99, 0.99, 0.99]
    )
    found = plateau(run, "cnn")
    assert found is not None and "Converged" in found.text and found.level == "info"


def test_no_plateau_while_the_training_loss_keeps_falling():
    run = curve(train=[1.0, 0.7, 0.5, 0.35, 0.25], held=[1.0, 0.8, 0.6, 0.5, 0.45])
    assert plateau(run, "cnn") is None


def test_divergence_is_read_from_a_blown_up_loss_or_the_diverged_state():
    blown = curve(train=[1.0, 0.8, 1.5, 4.0], held=[1.0, 0.9, 1.6, 4.5])
    found = divergence(blown, "sgd run")
    assert found is not None and "0.800 at epoch 2 to 4.000 at epoch 4" in found.text
    stopped = divergence(curve(train=[2.0], held=[2.0]), "big lr", state="diverged", error="the loss became nan")
    assert stopped is not None and "the loss became nan" in stopped.text
    nan = divergence(curve(train=[1.0, math.nan], held=[1.0, 1.0]), "x")
    assert nan is not None and "epoch 2" in nan.text


def test_no_divergence_on_a_healthy_run():
    assert divergence(curve(train=[1.0, 0.7, 0.72, 0.5], held=[1.0, 0.8, 0.7, 0.6]), "ok") is None


def summary(rows):
    return pd.DataFrame(rows, columns=["run", "label", "value", "s / epoch"])


def test_faster_says_which_run_is_faster_per_epoch_and_by_how_much():
    found = faster(summary([["a", "mlp", 90.0, 0.5], ["b", "cnn", 95.0, 2.0]]))
    assert found is not None and "mlp is the fastest at 0.50 s" in found.text and "4.0x faster than cnn" in found.text
    same = faster(summary([["a", "mlp", 90.0, 1.0], ["b", "cnn", 95.0, 1.05]]))
    assert "about the same time" in same.text


def test_faster_needs_two_timed_runs():
    assert faster(summary([["a", "mlp", 90.0, 0.5]])) is None
    assert faster(summary([["a", "mlp", 90.0, 0.5], ["b", "cnn", 95.0, math.nan]])) is None


def test_winner_says_who_won_and_by_how_many_points():
    spec = SummarySpec(metric="acc")
    found = winner(summary([["a", "mlp", 91.8, 1], ["b", "cnn", 95.2, 1], ["c", "tiny", 80.0, 1]]), spec)
    assert found is not None and found.runs == ("b", "a")
    assert "cnn with 95.20 %, 3.40 points ahead of mlp (91.80 %)" in found.text
    assert "15.20 points better than the last, tiny" in found.text


def test_winner_on_loss_prefers_the_lower_value_and_reports_ties():
    found = winner(summary([["a", "mlp", 0.30, 1], ["b", "cnn", 0.25, 1]]), SummarySpec(metric="loss"))
    assert "cnn with 0.2500, 0.05 lower than mlp" in found.text
    tie = winner(summary([["a", "mlp", 95.02, 1], ["b", "cnn", 95.0, 1]]), SummarySpec(metric="acc"))
    assert "Tie" in tie.text


def test_no_winner_with_a_single_run():
    assert winner(summary([["a", "mlp", 91.8, 1]]), SummarySpec()) is None


def test_read_curves_combines_per_run_and_cross_run_readings():
    long = pd.concat(
        [
            curve(train=[1.0, 0.6, 0.4, 0.2], held=[1.0, 0.7, 0.8, 0.95], run="a"),
            curve(train=[1.0, 1.5, 3.0, 9.0], held=[1.0, 1.5, 3.0, 9.0], run="b", seconds=3.0),
        ]
    )
    runs = pd.DataFrame(
        {
            "id": ["a", "b"],
            "label": ["A", "B"],
            "state": ["done", "done"],
            "error": [None, None],
            "lr": [1e-3, 1.0],
            "arch": ["x", "y"],
            "dataset": ["d", "d"],
            "epochs": [4, 4],
            "batch_size": [64, 64],
            "optimizer": ["adam"] * 2,
            "momentum": [0.9] * 2,
            "weight_decay": [0.0] * 2,
            "val_split": [0.1] * 2,
            "seed": [0] * 2,
            "train_limit": [None] * 2,
        }
    )
    from dashboard.tables import summary_table

    spec = SummarySpec(metric="loss", split="val")
    kinds = [r.kind for r in read_curves(long, runs, summary_table(long, runs, spec), spec)]
    assert kinds == [ReadingKind.OVERFITTING, ReadingKind.DIVERGENCE, ReadingKind.WINNER, ReadingKind.FASTER]


# ---------------------------------------------------------------- groups of seeds


def comparison(*groups):
    from engine.runs.compare import Comparison
    from engine.runs.verdicts import Group, compare_groups

    made = tuple(Group(label, tuple(f"{label}{i}" for i in range(len(v))), v) for label, v in groups)
    return Comparison("test_acc", "final", 0.05, made, compare_groups(made))


def test_a_gap_beyond_seed_noise_is_read_as_a_real_difference_with_the_test_named():
    (found,) = differences(
        comparison(("basic_nn", (0.912, 0.921, 0.905)), ("simple_cnn", (0.962, 0.958, 0.969))),
        SummarySpec(metric="acc"),
    )
    assert found.kind == ReadingKind.DIFFERENCE and found.level == "success"
    assert found.text.startswith(
        "**Real difference** on final test accuracy: simple_cnn is 5.03 points ahead of "
        "basic_nn, far beyond seed noise (3 seeds each, p = "
    )
    assert found.runs == ("simple_cnn0", "simple_cnn1", "simple_cnn2", "basic_nn0", "basic_nn1", "basic_nn2")


def test_a_gap_within_seed_noise_says_so_and_asks_for_more_seeds():
    (found,) = differences(
        comparison(("simple_cnn", (0.960, 0.955, 0.966)), ("cnn_dropout", (0.962, 0.958, 0.969))),
        SummarySpec(metric="acc"),
    )
    assert found.level == "info" and found.text.startswith(
        "**Within seed noise** on final test accuracy: "
        "cnn_dropout is 0.27 points ahead of simple_cnn, within "
        "seed noise (seeds vary by "
    )
    assert found.text.endswith("run more seeds to tell.")


def test_with_one_seed_the_noise_is_unknown_and_the_winner_says_so_too():
    (found,) = differences(comparison(("basic_nn", (0.91,)), ("simple_cnn", (0.96,))), SummarySpec(metric="acc"))
    assert found.text.startswith("**Noise unknown**") and "with one seed each the seed noise is unknown" in found.text
    ahead = winner(summary([["a", "mlp", 91.8, 1], ["b", "cnn", 95.2, 1]]), SummarySpec(metric="acc"))
    assert "With one run each the seed noise is unknown" in ahead.text


def test_the_best_group_is_set_against_every_other_and_replaces_the_single_run_winner():
    three = comparison(("a", (0.90, 0.91, 0.92)), ("b", (0.95, 0.96, 0.97)), ("c", (0.80, 0.81, 0.82)))
    found = differences(three, SummarySpec(metric="acc"))
    assert [r.text.split(": ", 1)[1].split(" is ")[0] for r in found] == ["b", "b"]
    assert " ahead of a," in found[0].text and " ahead of c," in found[1].text
    long = curve(train=[1.0, 0.6, 0.4], held=[1.0, 0.7, 0.5], run="a")
    runs = pd.DataFrame({"id": ["a"], "label": ["A"], "state": ["done"], "error": [None], "lr": [1e-3]})
    table = summary([["a", "A", 90.0, 1], ["b", "B", 95.0, 1]])
    kinds = [r.kind for r in read_curves(long, runs, table, SummarySpec(metric="acc"), three)]
    assert ReadingKind.WINNER not in kinds and kinds.count(ReadingKind.DIFFERENCE) == 2


def test_the_precision_note_says_when_auto_picked_bf16_and_nothing_for_fp32_or_old_runs():
    bf16_rows = [{"epoch": 1, "precision": "bf16"}, {"epoch": 2, "precision": "bf16"}]
    assert "auto picked bf16" in precision_note({"precision": "auto"}, bf16_rows)
    assert "as asked" in precision_note({"precision": "bf16"}, bf16_rows)
    assert precision_note({"precision": "auto"}, [{"epoch": 1, "precision": "fp32"}]) is None
    assert precision_note({}, [{"epoch": 1}]) is None  # a run from before precision was recorded
    assert precision_note({"precision": "auto"}, []) is None  # nothing ran yet
