"""dashboard.assignments: the five assignments, locating their runs, and the measured report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dashboard import assignments as A
from engine.runs.jobs import JobState, jobs_for_run
from engine.runs.store import RunState
from engine.files import append_metrics

ROOT = "/data/root"


def metrics_rows(epochs: int, start_loss: float, final_acc: float, seconds: float, bumps=()) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        acc = final_acc - 0.01 * (epochs - e)
        test_loss = 0.5 / e + (0.2 if e in bumps else 0.0)
        rows.append({"epoch": e, "train_loss": round(start_loss / e, 6), "train_acc": acc + 0.005,
                     "test_loss": test_loss, "test_acc": acc, "seconds": seconds + 0.01 * e})
    return rows


def add_run(store, config, rows, state=RunState.DONE, error=None) -> str:
    run_id = store.create_run(config)
    for row in rows:
        append_metrics(store.run_dir(run_id) / "metrics.jsonl", row)
        store.record_epoch(run_id, row)
    if state == RunState.DONE:
        (store.run_dir(run_id) / "model.pt").write_bytes(b"weights")  # find_finished wants a model file
    store.set_state(run_id, state, error)
    return run_id


@pytest.fixture
def plan():
    return A.assignments("mnist_sample", ROOT, cifar_root=ROOT)


def everything_done(store, plan):
    """Runs for every planned config with distinct, known metrics; returns {key: rows}."""
    made = {}
    specs = {"basic_nn": (0.40, 0.9420, 1.0), "simple_cnn": (0.30, 0.9710, 4.0),
             "batch 32": (0.28, 0.9650, 6.5), "batch 128": (0.36, 0.9600, 2.5),
             "lr 0.01": (0.25, 0.9580, 4.1), "lr 0.0001": (0.90, 0.9100, 3.9),
             "10 epochs": (0.30, 0.9750, 4.0), "cifar10": (1.60, 0.6120, 9.0)}
    for a in plan:
        for p in a.runs:
            key = "simple_cnn" if p.key == "baseline" else p.key
            if key in made:
                continue
            loss, acc, sec = specs[key]
            rows = metrics_rows(p.config.epochs, loss, acc, sec, bumps=(3,) if key == "lr 0.01" else ())
            add_run(store, p.config, rows)
            made[key] = rows
    return made


def statuses_for(store, plan):
    return A.locate(store, [p for a in plan for p in a.runs])


def test_the_plan_follows_the_course_baseline_and_changes(plan):
    assert [a.number for a in plan] == [1, 2, 3, 4, 5]
    mlp, cnn = plan[0].runs[0].config, plan[1].runs[0].config
    assert (mlp.arch, cnn.arch) == ("basic_nn", "simple_cnn")
    for c in (mlp, cnn):
        assert (c.batch_size, c.lr, c.epochs, c.optimizer, c.dataset) == (64, 0.001, 5, "adam", "mnist_sample")
    changes = {p.key: p.config for p in plan[3].runs}
    assert changes["baseline"] == cnn  # assignment 4's baseline is assignment 2's run
    assert (changes["batch 32"].batch_size, changes["batch 128"].batch_size) == (32, 128)
    assert (changes["lr 0.01"].lr, changes["lr 0.0001"].lr, changes["10 epochs"].epochs) == (0.01, 1e-4, 10)
    assert sum(c != cnn for c in changes.values()) == 5
    assert plan[4].runs[0].config.arch == "cifar10_cnn" and plan[4].runs[0].config.dataset == "cifar10"


def test_locate_prefers_a_done_run_then_an_active_one_and_reports_missing(store, plan):
    cnn = plan[1].runs[0]
    failed = add_run(store, cnn.config, [], state=RunState.FAILED, error="boom")
    found = A.locate(store, [cnn, plan[0].runs[0]])
    assert found["simple_cnn"].state == "failed" and found["simple_cnn"].error == "boom"
    assert found["simple_cnn"].needs_run and found["basic_nn"].state == "missing"
    queued = store.create_run(cnn.config)
    assert A.locate(store, [cnn])["simple_cnn"].run_id == queued
    done = add_run(store, cnn.config, metrics_rows(5, 0.3, 0.97, 4.0))
    status = A.locate(store, [cnn])["simple_cnn"]
    assert status.run_id == done and status.done and len(status.metrics) == 5
    assert failed != done != queued
    other = add_run(store, cnn.config.replace(seed=1), metrics_rows(5, 0.3, 0.5, 1.0))
    assert A.locate(store, [cnn])["simple_cnn"].run_id != other  # only identical configs count


def test_run_this_assignment_queues_exactly_the_missing_runs(store):
    plan = A.assignments("mnist_sample", "data")
    a4 = plan[3]
    add_run(store, a4.runs[0].config, metrics_rows(5, 0.3, 0.97, 4.0))  # baseline done
    store.create_run(a4.runs[1].config)  # batch 32 already queued
    before = {r.id for r in store.list_runs()}
    statuses = A.locate(store, a4.runs)
    run_ids = A.queue_missing(store, a4, statuses)
    assert len(run_ids) == 4
    queued = {store.get_run(r).train_config() for r in run_ids}
    assert queued == {p.config for p in a4.runs[2:]}
    assert not before & set(run_ids)
    assert all(jobs_for_run(store, r)[0].state == JobState.QUEUED for r in run_ids)
    again = A.locate(store, a4.runs)
    assert A.queue_missing(store, a4, again) == []  # nothing left to queue
    assert len({r.sweep_id for r in map(store.get_run, run_ids)}) == 1  # one sweep per press


def test_assignment_3_queues_each_model_once(store):
    plan = A.assignments("mnist_sample", "data")
    statuses = A.locate(store, plan[2].runs)
    assert [c.arch for c in A.to_queue(statuses, plan[2])] == ["basic_nn", "simple_cnn"]


def test_the_report_fills_the_template_with_the_runs_numbers(store, plan):
    made = everything_done(store, plan)
    sections = A.build_report(plan, statuses_for(store, plan))
    assert all(s.complete for s in sections)
    a1, a2 = sections[0].markdown, sections[1].markdown
    for text, rows in ((a1, made["basic_nn"]), (a2, made["simple_cnn"])):
        for row in rows:
            assert f"Epoch {row['epoch']} loss: **{row['train_loss']:.4f}**" in text
        assert f"Test accuracy: **{100 * rows[-1]['test_acc']:.2f}%**" in text
    table = sections[0].tables["assignment1_basic_nn.csv"]
    assert table["train loss"].tolist() == [round(r["train_loss"], 4) for r in made["basic_nn"]]


def test_the_comparison_answers_come_from_the_measurements(store, plan):
    made = everything_done(store, plan)
    a3 = A.build_report(plan, statuses_for(store, plan))[2]
    mlp, cnn = made["basic_nn"], made["simple_cnn"]
    diff = 100 * (cnn[-1]["test_acc"] - mlp[-1]["test_acc"])
    assert f"{100 * cnn[-1]['test_acc']:.2f}% test accuracy against {100 * mlp[-1]['test_acc']:.2f}%" in a3.markdown
    assert f"{diff:.2f} points higher" in a3.markdown
    sec_mlp = sum(r["seconds"] for r in mlp) / 5
    sec_cnn = sum(r["seconds"] for r in cnn) / 5
    assert f"{sec_cnn:.2f} s per epoch for SimpleCNN against {sec_mlp:.2f} s for BasicNN, " \
           f"{sec_cnn / sec_mlp:.2f}x the time" in a3.markdown
    assert "**Slower**" in a3.markdown and "**Yes**" in a3.markdown
    assert "BasicNN has 109,386, SimpleCNN 206,922" in a3.markdown
    assert "Linear(1568→128)" in a3.markdown
    table = a3.tables["assignment3_comparison.csv"].set_index("measure")
    assert table.loc["parameters", "SimpleCNN"] == 206922
    assert table.loc["test accuracy %", "BasicNN"] == round(100 * mlp[-1]["test_acc"], 2)


def test_a_smaller_cnn_gain_is_called_marginal(store, plan):
    add_run(store, plan[0].runs[0].config, metrics_rows(5, 0.4, 0.970, 1.0))
    add_run(store, plan[1].runs[0].config, metrics_rows(5, 0.3, 0.972, 3.0))
    a3 = A.build_report(plan, statuses_for(store, plan))[2]
    assert "**Marginal**" in a3.markdown and "0.20 points higher" in a3.markdown


def test_assignment_4_table_and_observations_are_measured_against_the_baseline(store, plan):
    made = everything_done(store, plan)
    a4 = A.build_report(plan, statuses_for(store, plan))[3]
    table = a4.tables["assignment4_hyperparameters.csv"].set_index("change")
    base = made["simple_cnn"][-1]["test_acc"]
    for key in ("batch 32", "batch 128", "lr 0.01", "lr 0.0001", "10 epochs"):
        acc = made[key][-1]["test_acc"]
        assert table.loc[key, "test acc %"] == round(100 * acc, 2)
        assert table.loc[key, "vs baseline (points)"] == round(100 * (acc - base), 2)
    lr = made["lr 0.01"][-1]["test_acc"]
    assert f"**lr 0.01** ended at {100 * lr:.2f}%, {100 * (base - lr):.2f} points below the baseline" in a4.markdown
    assert "its test loss was noisier: it rose in 1 of 4 epochs (baseline: 0)" in a4.markdown
    assert "for 125 steps instead of 63" in a4.markdown  # 4,000 images in batches of 32 and 64
    assert "**10 epochs** ended at 97.50%, 0.40 points above the baseline" in a4.markdown
    assert "the epochs after 5 added +5.00 points" in a4.markdown
    assert "its test loss rose in 0 of the 5 extra epochs" in a4.markdown


def test_a_diverged_change_is_reported_with_its_message(store, plan):
    everything_done(store, plan)
    lr = plan[3].runs[3]
    store.delete_run(A.locate(store, [lr])["lr 0.01"].run_id)
    add_run(store, lr.config, [], state=RunState.DIVERGED, error="the loss became nan at epoch 1")
    a4 = A.build_report(plan, statuses_for(store, plan))[3]
    assert "**lr 0.01** diverged: the loss became nan at epoch 1" in a4.markdown and not a4.complete


def test_missing_runs_leave_the_template_empty_and_say_so(store, plan):
    sections = A.build_report(plan, statuses_for(store, plan), cifar_available=False)
    assert not any(s.complete for s in sections)
    assert "Epoch 1 loss: **…**" in sections[0].markdown and "not run yet" in sections[0].markdown
    assert "filled in when both runs have finished" in sections[2].markdown
    assert f"{ROOT}/cifar-10-batches-py/" in sections[4].markdown
    assert "data_batch_1" in sections[4].markdown and "batches.meta" in sections[4].markdown


def test_a_running_run_shows_its_epochs_so_far(store, plan):
    cfg = plan[0].runs[0].config
    run_id = add_run(store, cfg, metrics_rows(2, 0.4, 0.9, 1.0), state=RunState.RUNNING)
    store.set_progress(run_id, 2, 10, 63)
    a1 = A.build_report(plan, statuses_for(store, plan))[0]
    assert "training, epoch 3 of 5, batch 10/63" in a1.markdown
    assert "Epoch 2 loss: **0.2000**" in a1.markdown and "Epoch 3 loss: **…**" in a1.markdown


def test_assignment_5_compares_cifar_with_mnist(store, plan):
    made = everything_done(store, plan)
    a5 = A.build_report(plan, statuses_for(store, plan))[4]
    cifar, mnist = made["cifar10"][-1]["test_acc"], made["simple_cnn"][-1]["test_acc"]
    assert f"CIFAR10CNN reached {100 * cifar:.2f}% on CIFAR-10 against {100 * mnist:.2f}% for SimpleCNN" in a5.markdown
    assert f"{100 * (mnist - cifar):.2f} points lower" in a5.markdown
    assert "620,362 parameters against 206,922" in a5.markdown


def test_export_has_every_section_and_every_table_as_csv(store, plan):
    everything_done(store, plan)
    sections = A.build_report(plan, statuses_for(store, plan))
    md = A.report_markdown(sections, note=A.dataset_note("mnist_sample", ROOT), generated="2026-11-22 01:00")
    for n in range(1, 6):
        assert f"## Assignment {n}:" in md
    assert "mnist_sample" in md and "| epoch | train loss |" in md
    csvs = A.report_csvs(sections)
    assert set(csvs) == {"assignment1_basic_nn.csv", "assignment2_simple_cnn.csv", "assignment3_comparison.csv",
                         "assignment4_hyperparameters.csv", "assignment5_cifar10.csv"}
    frame = pd.read_csv(__import__("io").StringIO(csvs["assignment4_hyperparameters.csv"]))
    assert len(frame) == 6 and "vs baseline (points)" in frame.columns


def test_report_on_real_finished_runs_matches_their_metrics(finished_root):
    """The conftest runs are real trainings: their numbers land in the report unchanged."""
    from engine.runs.store import Store

    store = Store(finished_root)
    try:
        records = {r.arch: r for r in store.list_runs()}
        plan = A.assignments("mnist_sample", "data")
        mlp, cnn = (A.Planned(k, k, records[k].train_config()) for k in ("basic_nn", "simple_cnn"))
        statuses = A.locate(store, [mlp, cnn])
        plan[2] = A.Assignment(3, plan[2].title, plan[2].task, (mlp, cnn))
        a3 = A._compare_section(plan[2], statuses["basic_nn"], statuses["simple_cnn"])
        rows = {k: store.metrics(records[k].id) for k in records}
    finally:
        store.close()
    table = a3.tables["assignment3_comparison.csv"].set_index("measure")
    for arch, column in (("basic_nn", "BasicNN"), ("simple_cnn", "SimpleCNN")):
        assert table.loc["test accuracy %", column] == round(100 * rows[arch][-1]["test_acc"], 2)
        assert table.loc["final training loss", column] == round(rows[arch][-1]["train_loss"], 4)
    assert json.dumps(a3.markdown)  # plain text


def test_overlay_figure_draws_one_line_per_finished_change(store, plan):
    everything_done(store, plan)
    statuses = statuses_for(store, plan)
    fig = A.overlay_figure([statuses[p.key] for p in plan[3].runs], "test_acc")
    assert [t.name for t in fig.data] == [p.key for p in plan[3].runs[1:]] + ["baseline"]  # baseline on top
    assert fig.data[-1].line.width > fig.data[0].line.width and fig.data[-1].legendrank == 1
    assert len(fig.data[-2].x) == 10
    with pytest.raises(ValueError, match="metric must be one of"):
        A.overlay_figure([], "speed")


# ---------------------------------------------------------------- seeds


SEEDED = {"basic_nn": 0.9420, "simple_cnn": 0.9710, "batch 32": 0.9650, "batch 128": 0.9600, "lr 0.01": 0.9580,
          "lr 0.0001": 0.9100, "10 epochs": 0.9712}
OFFSETS = {"10 epochs": (0.006, -0.006, 0.0)}  # a change within seed noise of the baseline


def everything_done_with_seeds(store, plan):
    """Three seeds of every run of assignments 1 to 4; returns {planned key: final test accuracy}."""
    made = {}
    for a in plan[:4]:
        for p in a.runs:
            first = p.seed_of or p.key
            name = "simple_cnn" if first == "baseline" else first
            acc = SEEDED[name] + OFFSETS.get(name, (0.0, 0.001, -0.001))[p.config.seed]
            if A.locate(store, [p])[p.key].done:
                continue
            add_run(store, p.config, metrics_rows(p.config.epochs, 0.3, acc, 2.0))
            made[p.key] = acc
    return made


def test_with_seeds_every_run_of_assignments_1_to_4_is_planned_once_per_seed():
    plan = A.assignments("mnist_sample", ROOT, seeds=3)
    assert [p.key for p in plan[0].runs] == ["basic_nn", "basic_nn · seed 1", "basic_nn · seed 2"]
    assert [p.config.seed for p in plan[0].runs] == [0, 1, 2] and plan[0].runs[2].seed_of == "basic_nn"
    assert len(plan[2].runs) == 6 and len(plan[3].runs) == 18 and len(plan[4].runs) == 1


def test_with_seeds_the_answers_say_whether_a_difference_is_beyond_seed_noise(store):
    from engine.runs.compare import verdict

    plan = A.assignments("mnist_sample", ROOT, cifar_root=ROOT, seeds=3)
    everything_done_with_seeds(store, plan)
    statuses = statuses_for(store, plan)
    sections = A.build_report(plan, statuses)
    assert all(s.complete for s in sections[:4])
    mlps, cnns = A.seed_runs(statuses, "basic_nn"), A.seed_runs(statuses, "simple_cnn")
    said = verdict(A.seed_group(cnns, "SimpleCNN"), A.seed_group(mlps, "BasicNN"), "test_acc")
    a3 = sections[2].markdown
    assert f"**Which model performed better?** {said.text}" in a3 and "far beyond seed noise (3 seeds each" in a3
    assert "Welch's t-test on the final test accuracy of each seed" in a3
    table = sections[2].tables["assignment3_comparison.csv"].set_index("measure")
    assert table.loc["mean test accuracy %", "BasicNN"] == pytest.approx(94.20)
    assert table.loc["seeds", "SimpleCNN"] == 3
    assert "Test accuracy over the 3 seeds: 94.20% ± 0.10 points over seeds 0-2 (mean ± std)" in sections[0].markdown
    a4 = sections[3]
    assert "**batch 32** ended at 96.50% ± 0.10 points over seeds 0-2 (mean ± std); the baseline is 0.60 points " \
           "ahead of batch 32, far beyond seed noise (3 seeds each, p = " in a4.markdown
    assert "Seed 0 alone ended at 96.50%, 0.60 points below the baseline" in a4.markdown
    assert "10 epochs is 0.02 points ahead of the baseline, within seed noise (seeds vary by" in a4.markdown
    hyper = a4.tables["assignment4_hyperparameters.csv"].set_index("change")
    assert hyper.loc["batch 32", "vs baseline"] == "real" and hyper.loc["10 epochs", "vs baseline"] == "within noise"
    assert hyper.loc["batch 32", "seeds"] == 3 and hyper.loc["batch 32", "p vs baseline"] < 0.05


def test_with_seeds_the_answers_wait_for_every_seed(store):
    plan = A.assignments("mnist_sample", ROOT, seeds=2)
    for p in plan[0].runs[:1] + plan[1].runs:
        add_run(store, p.config, metrics_rows(5, 0.3, 0.95, 1.0))
    sections = A.build_report(plan, statuses_for(store, plan))
    assert not sections[0].complete and sections[1].complete
    assert "filled in when all 4 runs (every seed) have finished" in sections[2].markdown
    assert [c.seed for c in A.to_queue(statuses_for(store, plan), plan[2])] == [1]
