"""dashboard.assignments.comparisons: the answers of assignments 3 and 4, worked out from the measurements."""

from __future__ import annotations

import pytest

from dashboard.assignments.comparisons import TEST_WORDS, compare_section, hyper_section, observation
from dashboard.assignments.measures import seed_group
from dashboard.assignments.plan import Assignment, Planned, assignments, locate, seed_runs
from engine.runs.records import RunState
from engine.runs.store import Store
from engine.runs.verdicts import verdict
from tests.assignment_runs import ROOT, add_run, everything_done, everything_done_with_seeds, metrics_rows, statuses_for


@pytest.fixture
def plan():
    return assignments("mnist_sample", ROOT, cifar_root=ROOT)


def a3_of(store, plan):
    statuses = statuses_for(store, plan)
    return compare_section(plan[2], statuses["basic_nn"], statuses["simple_cnn"])


def test_the_comparison_answers_come_from_the_measurements(store, plan):
    made = everything_done(store, plan)
    a3 = a3_of(store, plan)
    mlp, cnn = made["basic_nn"], made["simple_cnn"]
    diff = 100 * (cnn[-1]["test_acc"] - mlp[-1]["test_acc"])
    assert f"{100 * cnn[-1]['test_acc']:.2f}% test accuracy against {100 * mlp[-1]['test_acc']:.2f}%" in a3.markdown
    assert f"{diff:.2f} points higher" in a3.markdown
    assert f"({round(diff * 10):,} fewer of the 1,000 test images wrong for the CNN)" in a3.markdown
    sec_mlp = sum(r["seconds"] for r in mlp) / 5
    sec_cnn = sum(r["seconds"] for r in cnn) / 5
    assert (
        f"{sec_cnn:.2f} s per epoch for SimpleCNN against {sec_mlp:.2f} s for BasicNN, "
        f"{sec_cnn / sec_mlp:.2f}x the time" in a3.markdown
    )
    assert "**Slower**" in a3.markdown and "**Yes**" in a3.markdown
    assert "BasicNN has 109,386, SimpleCNN 206,922" in a3.markdown
    assert "97% of the CNN's in one layer, Linear(1568→128)" in a3.markdown
    table = a3.tables["assignment3_comparison.csv"].set_index("measure")
    assert table.loc["parameters", "SimpleCNN"] == 206922
    assert table.loc["test accuracy %", "BasicNN"] == round(100 * mlp[-1]["test_acc"], 2)
    assert a3.complete


def test_a_smaller_cnn_gain_is_called_marginal(store, plan):
    add_run(store, plan[0].runs[0].config, metrics_rows(5, 0.4, 0.970, 1.0))
    add_run(store, plan[1].runs[0].config, metrics_rows(5, 0.3, 0.972, 3.0))
    a3 = a3_of(store, plan)
    assert "**Marginal**" in a3.markdown and "0.20 points higher" in a3.markdown


def test_an_mlp_that_wins_is_named_and_the_cnn_called_not_worth_it(store, plan):
    add_run(store, plan[0].runs[0].config, metrics_rows(5, 0.4, 0.975, 1.0))
    add_run(store, plan[1].runs[0].config, metrics_rows(5, 0.3, 0.970, 0.5))
    a3 = a3_of(store, plan)
    assert (
        "**Which model performed better?** **BasicNN**, this time: 97.50% test accuracy against 97.00%" in a3.markdown
    )
    assert "**Faster**" in a3.markdown and "**No, not in this run**" in a3.markdown


def test_the_comparison_waits_until_both_runs_are_done(store, plan):
    add_run(store, plan[0].runs[0].config, metrics_rows(5, 0.4, 0.97, 1.0))
    a3 = a3_of(store, plan)
    assert "filled in when both runs have finished" in a3.markdown and not a3.complete and a3.tables == {}


def test_on_real_finished_runs_the_comparison_quotes_their_metrics(finished_root):
    """The conftest runs are real trainings (2 epochs): their numbers land in the answers unchanged."""
    store = Store(finished_root)
    try:
        records = {r.arch: r for r in store.list_runs()}
        mlp, cnn = (Planned(k, k, records[k].train_config()) for k in ("basic_nn", "simple_cnn"))
        statuses = locate(store, [mlp, cnn])
        a3 = compare_section(Assignment(3, "Compare", "task", (mlp, cnn)), statuses["basic_nn"], statuses["simple_cnn"])
        rows = {k: store.metrics(records[k].id) for k in records}
    finally:
        store.close()
    table = a3.tables["assignment3_comparison.csv"].set_index("measure")
    for arch, column in (("basic_nn", "BasicNN"), ("simple_cnn", "SimpleCNN")):
        assert table.loc["test accuracy %", column] == round(100 * rows[arch][-1]["test_acc"], 2)
        assert table.loc["final training loss", column] == round(rows[arch][-1]["train_loss"], 4)
    mlp_acc, cnn_acc = (100 * rows[k][-1]["test_acc"] for k in ("basic_nn", "simple_cnn"))
    if cnn_acc != mlp_acc:
        winner = "**SimpleCNN**" if cnn_acc > mlp_acc else "**BasicNN**, this time"
        assert (
            f"**Which model performed better?** {winner}: {max(cnn_acc, mlp_acc):.2f}% test accuracy "
            f"against {min(cnn_acc, mlp_acc):.2f}%" in a3.markdown
        )
    seconds = sum(r["seconds"] for r in rows["simple_cnn"]) / len(rows["simple_cnn"])
    assert f"{seconds:.2f} s per epoch for SimpleCNN" in a3.markdown


def test_assignment_4_table_and_observations_are_measured_against_the_baseline(store, plan):
    made = everything_done(store, plan)
    a4 = hyper_section(plan[3], statuses_for(store, plan))
    table = a4.tables["assignment4_hyperparameters.csv"].set_index("change")
    base = made["simple_cnn"][-1]["test_acc"]
    for key in ("batch 32", "batch 128", "lr 0.01", "lr 0.0001", "10 epochs"):
        acc = made[key][-1]["test_acc"]
        assert table.loc[key, "test acc %"] == round(100 * acc, 2)
        assert table.loc[key, "vs baseline (points)"] == round(100 * (acc - base), 2)
    lr = made["lr 0.01"][-1]["test_acc"]
    assert f"**lr 0.01** ended at {100 * lr:.2f}%, {100 * (base - lr):.2f} points below the baseline" in a4.markdown
    assert "its test loss was noisier: it rose in 1 of 4 epochs (baseline: 0)" in a4.markdown
    assert "for 125 steps instead of 63" in a4.markdown  # the batches each run recorded per epoch
    assert "**10 epochs** ended at 97.50%, 0.40 points above the baseline" in a4.markdown
    assert "the epochs after 5 added +5.00 points" in a4.markdown
    assert "its test loss rose in 0 of the 5 extra epochs" in a4.markdown
    assert a4.complete


def test_a_diverged_change_is_reported_with_its_message(store, plan):
    everything_done(store, plan)
    lr = plan[3].runs[3]
    store.delete_run(locate(store, [lr])["lr 0.01"].run_id)
    add_run(store, lr.config, [], state=RunState.DIVERGED, error="the loss became nan at epoch 1")
    a4 = hyper_section(plan[3], statuses_for(store, plan))
    assert "**lr 0.01** diverged: the loss became nan at epoch 1" in a4.markdown and not a4.complete


def test_an_observation_before_the_baseline_finishes_says_it_needs_it(store, plan):
    statuses = {}
    for p in plan[3].runs[:2]:
        if p.key == "batch 32":
            add_run(store, p.config, metrics_rows(5, 0.3, 0.96, 6.0))
        statuses.update(locate(store, [p]))
    said = observation("batch 32", statuses["batch 32"], statuses["baseline"])
    assert said == "**batch 32** ended at 96.00%; the comparison needs the finished baseline."


def test_with_seeds_the_answers_say_whether_a_difference_is_beyond_seed_noise(store):
    plan = assignments("mnist_sample", ROOT, cifar_root=ROOT, seeds=3)
    everything_done_with_seeds(store, plan)
    statuses = statuses_for(store, plan)
    mlps, cnns = seed_runs(statuses, "basic_nn"), seed_runs(statuses, "simple_cnn")
    a3 = compare_section(plan[2], statuses["basic_nn"], statuses["simple_cnn"], mlps, cnns)
    said = verdict(seed_group(cnns, "SimpleCNN"), seed_group(mlps, "BasicNN"), "test_acc")
    assert f"**Which model performed better?** {said.text}" in a3.markdown
    assert "far beyond seed noise (3 seeds each" in a3.markdown and TEST_WORDS in a3.markdown
    table = a3.tables["assignment3_comparison.csv"].set_index("measure")
    assert table.loc["mean test accuracy %", "BasicNN"] == pytest.approx(94.20)
    assert table.loc["seeds", "SimpleCNN"] == 3
    a4 = hyper_section(plan[3], statuses)
    assert (
        "**batch 32** ended at 96.50% ± 0.10 points over seeds 0-2 (mean ± std); the baseline is 0.60 points "
        "ahead of batch 32, far beyond seed noise (3 seeds each, p = " in a4.markdown
    )
    assert "Seed 0 alone ended at 96.50%, 0.60 points below the baseline" in a4.markdown
    assert "10 epochs is 0.02 points ahead of the baseline, within seed noise (seeds vary by" in a4.markdown
    hyper = a4.tables["assignment4_hyperparameters.csv"].set_index("change")
    assert hyper.loc["batch 32", "vs baseline"] == "real" and hyper.loc["10 epochs", "vs baseline"] == "within noise"
    assert hyper.loc["batch 32", "seeds"] == 3 and hyper.loc["batch 32", "p vs baseline"] < 0.05
