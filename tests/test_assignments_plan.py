"""dashboard.assignments.plan: the five assignments, the runs that answer them, queueing the missing ones."""

from __future__ import annotations

import pytest

from dashboard.assignments.plan import MISSING, assignments, locate, queue_missing, status_line, to_queue
from engine.runs.jobs import JobState, jobs_for_run
from engine.runs.records import RunState
from tests.assignment_runs import ROOT, add_run, metrics_rows


@pytest.fixture
def plan():
    return assignments("mnist_sample", ROOT, cifar_root=ROOT)


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


def test_assignment_4_changes_the_model_picked_for_it():
    plan = assignments("mnist_sample", ROOT, a4_arch="basic_nn")
    assert {p.config.arch for p in plan[3].runs} == {"basic_nn"} and "train BasicNN with batch" in plan[3].task


def test_with_seeds_every_run_of_assignments_1_to_4_is_planned_once_per_seed():
    plan = assignments("mnist_sample", ROOT, seeds=3)
    assert [p.key for p in plan[0].runs] == ["basic_nn", "basic_nn · seed 1", "basic_nn · seed 2"]
    assert [p.config.seed for p in plan[0].runs] == [0, 1, 2] and plan[0].runs[2].seed_of == "basic_nn"
    assert len(plan[2].runs) == 6 and len(plan[3].runs) == 18 and len(plan[4].runs) == 1


def test_locate_prefers_a_done_run_then_an_active_one_and_reports_missing(store, plan):
    cnn = plan[1].runs[0]
    failed = add_run(store, cnn.config, [], state=RunState.FAILED, error="boom")
    found = locate(store, [cnn, plan[0].runs[0]])
    assert found["simple_cnn"].state == "failed" and found["simple_cnn"].error == "boom"
    assert found["simple_cnn"].needs_run and found["basic_nn"].state == MISSING
    queued = store.create_run(cnn.config)
    assert locate(store, [cnn])["simple_cnn"].run_id == queued and locate(store, [cnn])["simple_cnn"].active
    done = add_run(store, cnn.config, metrics_rows(5, 0.3, 0.97, 4.0))
    status = locate(store, [cnn])["simple_cnn"]
    assert status.run_id == done and status.done and len(status.metrics) == 5
    assert failed != done != queued
    other = add_run(store, cnn.config.replace(seed=1), metrics_rows(5, 0.3, 0.5, 1.0))
    assert locate(store, [cnn])["simple_cnn"].run_id != other  # only identical configs count


def test_locate_reads_metrics_through_the_reader_it_is_given(store, plan):
    cnn = plan[1].runs[0]
    done = add_run(store, cnn.config, metrics_rows(5, 0.3, 0.97, 4.0))
    asked = []
    status = locate(store, [cnn], metrics=lambda record: asked.append(record.id) or [{"epoch": 1}])["simple_cnn"]
    assert asked == [done] and status.metrics == [{"epoch": 1}]


def test_run_this_assignment_queues_exactly_the_missing_runs(store):
    plan = assignments("mnist_sample", "data")
    a4 = plan[3]
    add_run(store, a4.runs[0].config, metrics_rows(5, 0.3, 0.97, 4.0))  # baseline done
    store.create_run(a4.runs[1].config)  # batch 32 already queued
    before = {r.id for r in store.list_runs()}
    run_ids = queue_missing(store, a4, locate(store, a4.runs))
    assert len(run_ids) == 4
    queued = {store.get_run(r).train_config() for r in run_ids}
    assert queued == {p.config for p in a4.runs[2:]}
    assert not before & set(run_ids)
    assert all(jobs_for_run(store, r)[0].state == JobState.QUEUED for r in run_ids)
    assert queue_missing(store, a4, locate(store, a4.runs)) == []  # nothing left to queue
    assert len({r.sweep_id for r in map(store.get_run, run_ids)}) == 1  # one sweep per press


def test_assignment_3_queues_each_model_once(store):
    plan = assignments("mnist_sample", "data")
    statuses = locate(store, plan[2].runs)
    assert [c.arch for c in to_queue(statuses, plan[2])] == ["basic_nn", "simple_cnn"]


def test_the_status_line_says_what_a_run_trains_and_where_it_stands(store, plan):
    mlp = plan[0].runs[0]
    assert status_line(locate(store, [mlp])["basic_nn"]) == (
        "BasicNN (`basic_nn` on `mnist_sample`, batch 64, lr 0.001, 5 epochs, Adam): not run yet."
    )
    run_id = add_run(store, mlp.config, [], state=RunState.DIVERGED, error="the loss became nan at epoch 2")
    assert status_line(locate(store, [mlp])["basic_nn"]).endswith(
        f": diverged: the loss became nan at epoch 2 (run `{run_id}`); run the assignment again to retrain it."
    )
