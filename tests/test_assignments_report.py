"""dashboard.assignments.report: the course's template of every assignment filled in with measured numbers."""

from __future__ import annotations

import pytest

from dashboard.assignments.plan import assignments, to_queue
from dashboard.assignments.report import build_report, cifar_instructions, dataset_note
from engine.runs.records import RunState
from tests.assignment_runs import ROOT, add_run, everything_done, metrics_rows, statuses_for


@pytest.fixture
def plan():
    return assignments("mnist_sample", ROOT, cifar_root=ROOT)


def test_the_report_fills_the_template_with_the_runs_numbers(store, plan):
    made = everything_done(store, plan)
    sections = build_report(plan, statuses_for(store, plan))
    assert [s.number for s in sections] == [1, 2, 3, 4, 5] and all(s.complete for s in sections)
    a1, a2 = sections[0].markdown, sections[1].markdown
    for text, rows in ((a1, made["basic_nn"]), (a2, made["simple_cnn"])):
        for row in rows:
            assert f"Epoch {row['epoch']} loss: **{row['train_loss']:.4f}**" in text
        assert f"Test accuracy: **{100 * rows[-1]['test_acc']:.2f}%**" in text
    assert "· parameters: 109,386" in a1 and "· parameters: 206,922" in a2
    table = sections[0].tables["assignment1_basic_nn.csv"]
    assert table["train loss"].tolist() == [round(r["train_loss"], 4) for r in made["basic_nn"]]


def test_missing_runs_leave_the_template_empty_and_say_so(store, plan):
    sections = build_report(plan, statuses_for(store, plan), cifar_available=False)
    assert not any(s.complete for s in sections)
    assert "Epoch 1 loss: **…**" in sections[0].markdown and "not run yet" in sections[0].markdown
    assert "filled in when both runs have finished" in sections[2].markdown
    assert f"{ROOT}/cifar-10-batches-py/" in sections[4].markdown
    assert "data_batch_1" in sections[4].markdown and "batches.meta" in sections[4].markdown


def test_a_running_run_shows_its_epochs_so_far(store, plan):
    cfg = plan[0].runs[0].config
    run_id = add_run(store, cfg, metrics_rows(2, 0.4, 0.9, 1.0), state=RunState.RUNNING)
    store.set_progress(run_id, 2, 10, 63)
    a1 = build_report(plan, statuses_for(store, plan))[0]
    assert "training, epoch 3 of 5, batch 10/63" in a1.markdown
    assert "Epoch 2 loss: **0.2000**" in a1.markdown and "Epoch 3 loss: **…**" in a1.markdown


def test_assignment_5_compares_cifar_with_mnist(store, plan):
    made = everything_done(store, plan)
    a5 = build_report(plan, statuses_for(store, plan))[4]
    cifar, mnist = made["cifar10"][-1]["test_acc"], made["simple_cnn"][-1]["test_acc"]
    assert f"CIFAR10CNN reached {100 * cifar:.2f}% on CIFAR-10 against {100 * mnist:.2f}% for SimpleCNN" in a5.markdown
    assert f"{100 * (mnist - cifar):.2f} points lower" in a5.markdown
    assert "620,362 parameters against 206,922" in a5.markdown
    assert list(a5.tables) == ["assignment5_cifar10.csv"] and len(a5.tables["assignment5_cifar10.csv"]) == 5


def test_with_seeds_the_answers_wait_for_every_seed(store):
    plan = assignments("mnist_sample", ROOT, seeds=2)
    for p in plan[0].runs[:1] + plan[1].runs:
        add_run(store, p.config, metrics_rows(5, 0.3, 0.95, 1.0))
    sections = build_report(plan, statuses_for(store, plan))
    assert not sections[0].complete and sections[1].complete
    assert "filled in when all 4 runs (every seed) have finished" in sections[2].markdown
    assert [c.seed for c in to_queue(statuses_for(store, plan), plan[2])] == [1]


def test_the_notes_say_which_mnist_is_used_and_where_cifar_goes():
    assert dataset_note("mnist", "/d") == (
        "These assignments use the full MNIST dataset (60,000 training images) from `/d`."
    )
    sample = dataset_note("mnist_sample", "/d")
    assert "`/d/MNIST/raw/train-images-idx3-ubyte`" in sample and "4,000 for training and 1,000 for testing" in sample
    assert (
        "in `/c/cifar-10-batches-py/`, or point the data root at a folder that holds `cifar-10-batches-py/`"
        in cifar_instructions("/c/")
    )
