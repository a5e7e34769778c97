"""engine.runs.compare: groups of seeds, their labels, each run's value and the whole comparison."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import TrainConfig
from engine.errors import CompareError
from engine.files import append_metrics
from engine.runs.compare import RunData, build, group_by_config, group_by_field, labels, load_runs, run_value, seed_text
from tests.test_verdicts import CNN, MLP


def config(**changes) -> dict:
    return TrainConfig(dataset="mnist_sample", epochs=1, train_limit=300, **changes).to_dict()


def rows(*accs: float, val: bool = False) -> tuple[dict, ...]:
    out = []
    for epoch, acc in enumerate(accs, start=1):
        row = {
            "epoch": epoch,
            "train_loss": 1 / epoch,
            "train_acc": acc,
            "test_loss": 1 - acc,
            "test_acc": acc,
            "seconds": 1.0,
        }
        if val:
            row.update(val_loss=1.1 - acc, val_acc=acc - 0.01)
        out.append(row)
    return tuple(out)


def seeded_runs() -> list[RunData]:
    return [RunData(f"m{s}", config(arch="basic_nn", seed=s), rows(0.5, MLP[s])) for s in range(3)] + [
        RunData(f"c{s}", config(arch="simple_cnn", seed=s), rows(0.6, CNN[s])) for s in range(3)
    ]


# ---------------------------------------------------------------- groups


def test_runs_that_differ_only_in_seed_form_one_group_in_the_order_given():
    configs = {
        "a": config(arch="basic_nn", seed=0),
        "b": config(arch="simple_cnn", seed=0),
        "c": config(arch="basic_nn", seed=1),
        "d": config(arch="basic_nn", seed=2, lr=0.01),
        "e": config(arch="simple_cnn", seed=7) | {"data_root": "/elsewhere"},
    }  # unread by mnist_sample
    assert group_by_config(configs) == [["a", "c"], ["b", "e"], ["d"]]


def test_any_hyperparameter_can_group_the_runs():
    configs = {
        "a": config(arch="basic_nn", lr=0.01),
        "b": config(arch="simple_cnn", lr=0.001),
        "c": config(arch="simple_cnn", lr=0.01),
    }
    assert group_by_field(configs, "lr") == [["a", "c"], ["b"]]
    assert group_by_field(configs, "arch") == [["a"], ["b", "c"]]


def test_labels_name_what_sets_each_group_apart_or_fall_back_to_their_seeds():
    configs = {
        "a": config(arch="basic_nn", seed=0),
        "b": config(arch="simple_cnn", lr=0.01, seed=0),
        "c": config(arch="simple_cnn", seed=3),
        "d": config(arch="simple_cnn", seed=4),
        "e": config(arch="simple_cnn", seed=5),
    }
    assert labels([["a"], ["b"]], configs) == ["basic_nn · lr 0.001", "simple_cnn · lr 0.01"]
    assert labels([["a"], ["c", "d"]], configs) == ["basic_nn", "simple_cnn"]
    assert labels([["c"], ["d", "e"]], configs) == ["group 1 · seed 3", "group 2 · seeds 4, 5"]
    assert seed_text([2, 0, 1]) == "seeds 0-2" and seed_text([]) == "seeds unknown"


# ---------------------------------------------------------------- values


def test_the_value_of_a_run_is_its_final_or_best_epoch():
    run = RunData("r", config(), rows(0.80, 0.90, 0.85))
    assert run_value(run, "test_acc", "final") == 0.85
    assert run_value(run, "test_acc", "best") == 0.90
    assert run_value(run, "test_loss", "best") == pytest.approx(0.10)  # the lowest loss


def test_a_run_without_the_metric_or_without_an_epoch_is_named():
    with pytest.raises(CompareError, match="run r has no val_acc: it was trained without a validation split"):
        run_value(RunData("r", config(), rows(0.8)), "val_acc", "final")
    with pytest.raises(CompareError, match="run q has no finished epoch yet"):
        run_value(RunData("q", config(), ()), "test_acc", "final")
    assert run_value(RunData("v", config(), rows(0.8, val=True)), "val_acc", "final") == pytest.approx(0.79)


# ---------------------------------------------------------------- a whole comparison


def test_a_comparison_groups_by_config_and_reports_the_exact_json_keys():
    out = build(seeded_runs()).to_json()
    assert list(out) == ["metric", "groups", "pairs"] and out["metric"] == "test_acc"
    assert [list(g) for g in out["groups"]] == [["label", "runs", "n", "mean", "std"]] * 2
    assert [g["label"] for g in out["groups"]] == ["basic_nn", "simple_cnn"]
    assert out["groups"][1]["runs"] == ["c0", "c1", "c2"] and out["groups"][1]["n"] == 3
    assert out["groups"][0]["mean"] == pytest.approx(np.mean(MLP))
    (pair,) = out["pairs"]
    assert list(pair) == ["a", "b", "diff", "p", "real"]
    assert pair["diff"] == pytest.approx(np.mean(MLP) - np.mean(CNN)) and pair["real"] is True


def test_explicit_groups_are_kept_as_given_and_the_other_runs_grouped_by_config():
    runs = {r.id: r for r in seeded_runs()}
    comparison = build([runs[i] for i in ("m0", "m2", "c1")], [[runs["c0"], runs["m1"]], [runs["c2"]]])
    assert [g.runs for g in comparison.groups] == [("c0", "m1"), ("c2",), ("m0", "m2"), ("c1",)]
    assert len(comparison.pairs) == 6


@pytest.mark.parametrize(
    "loose,explicit,words",
    [
        ([], [["m0", "m1"], ["m1", "c0"]], "run m1 is in two groups (1 and 2)"),
        ([], [["m0", "m0"], ["c0"]], "run m0 is given twice in group 1"),
        (["m0", "c0"], [["m0", "c1"]], "run m0 is given on its own and in group 1"),
        (["m0", "c0", "m0"], [], "run m0 is given twice;"),
    ],
)
def test_a_run_in_two_groups_or_given_twice_is_refused(loose, explicit, words):
    runs = {r.id: r for r in seeded_runs()}
    with pytest.raises(CompareError, match=words.replace("(", r"\(").replace(")", r"\)")):
        build([runs[i] for i in loose], [[runs[i] for i in g] for g in explicit])


def test_fewer_than_two_groups_cannot_be_compared():
    with pytest.raises(CompareError, match="at least two groups, and these 3 run"):
        build(seeded_runs()[:3])


def test_load_runs_reads_configs_and_metrics_and_names_every_unknown_run(store):
    run_id = store.create_run(TrainConfig(arch="basic_nn", seed=3))
    for row in rows(0.7, 0.8):
        append_metrics(store.paths(run_id).metrics, row)
    (run,) = load_runs(store, [str(store.run_dir(run_id))])  # a folder works like an id
    assert run.id == run_id and run.config["seed"] == 3 and [r["test_acc"] for r in run.rows] == [0.7, 0.8]
    with pytest.raises(CompareError, match="unknown run\\(s\\) x, y in"):
        load_runs(store, ["x", run_id, "y"])
