"""The Assignments page in Streamlit's AppTest: empty root, queueing, and a filled-in section."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.files import append_metrics
from engine.runs.jobs import JobState, jobs_for_run
from engine.runs.records import RunState
from engine.runs.store import Store

PAGE = str(Path(__file__).resolve().parents[1] / "dashboard" / "pages" / "assignments.py")


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("LENSBOARD_NO_WORKER", "1")
    monkeypatch.setenv("LENSBOARD_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LENSBOARD_RESULTS", str(tmp_path / "results"))
    return tmp_path


def finish_as_the_worker_would(store: Store, run_id: str) -> list[dict]:
    """Five epochs of metrics, the model file and the done state, written through the store's API."""
    rows = [
        {
            "epoch": e,
            "train_loss": 0.5 / e + 0.01234,
            "train_acc": 0.8 + 0.02 * e,
            "test_loss": 0.4 / e,
            "test_acc": 0.79 + 0.021 * e,
            "seconds": 0.5 + 0.1 * e,
        }
        for e in range(1, 6)
    ]
    for row in rows:
        append_metrics(store.run_dir(run_id) / "metrics.jsonl", row)
        store.record_epoch(run_id, row)
    (store.run_dir(run_id) / "model.pt").write_bytes(b"weights")
    store.set_state(run_id, RunState.DONE)
    return rows


def page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=120).run()


def everything(at: AppTest) -> str:
    return "\n".join(
        [m.value for m in at.markdown]
        + [c.value for c in at.caption]
        + [i.value for i in at.info]
        + [w.value for w in at.warning]
    )


def test_with_no_runs_every_assignment_waits_for_its_button(env):
    at = page()
    assert not at.exception and not at.error
    text = everything(at)
    assert "use **mnist_sample**" in text  # no MNIST on disk: said clearly
    assert [s.value for s in at.subheader][:5] == [
        "Assignment 1: BasicNN on MNIST",
        "Assignment 2: SimpleCNN on MNIST",
        "Assignment 3: Compare the models",
        "Assignment 4: Change one hyperparameter at a time",
        "Assignment 5: CIFAR-10",
    ]
    assert "Epoch 1 loss: **…**" in text
    assert f"{env / 'data'}/cifar-10-batches-py/" in text and "data_batch_1" in text
    assert at.button(key="run_5").label == "Download CIFAR-10 and run" and not at.button(key="run_1").disabled


def test_without_cifar_and_without_internet_the_run_button_says_where_to_put_the_files(env, monkeypatch):
    monkeypatch.setenv("LENSBOARD_OFFLINE", "1")  # engine.ml.readers: never try a download
    at = page()
    at.button(key="run_5").click().run()
    assert not at.exception
    assert any("Could not queue assignment 5" in e.value and "cifar-10-batches-py" in e.value for e in at.error)
    store = Store(env / "results")
    try:
        assert store.list_runs() == []  # nothing half-queued
    finally:
        store.close()


def test_the_cifar_data_root_can_be_changed(env):
    at = page()
    other = env / "elsewhere"
    at.text_input(key="cifar_root").set_value(str(other)).run()
    assert not at.exception
    assert f"{other}/cifar-10-batches-py/" in everything(at)


def test_run_this_assignment_queues_the_run_and_the_report_fills_in(env):
    at = page()
    at.button(key="run_1").click().run()
    assert not at.exception and not at.error
    store = Store(env / "results")
    try:
        runs = store.list_runs()
        assert len(runs) == 1 and runs[0].state == RunState.QUEUED
        config = runs[0].train_config()
        assert (config.arch, config.dataset, config.epochs, config.batch_size, config.lr, config.optimizer) == (
            "basic_nn",
            "mnist_sample",
            5,
            64,
            0.001,
            "adam",
        )
        assert jobs_for_run(store, runs[0].id)[0].state == JobState.QUEUED
        assert "queued, waiting for the worker" in everything(at)
        assert at.button(key="run_1").disabled  # nothing left to queue

        # assignment 3 needs both models: only SimpleCNN is missing now
        at.button(key="run_3").click().run()
        assert len(store.list_runs()) == 2

        rows = finish_as_the_worker_would(store, runs[0].id)
    finally:
        store.close()
    at = page()
    assert not at.exception
    text = everything(at)
    for row in rows:
        assert f"Epoch {row['epoch']} loss: **{row['train_loss']:.4f}**" in text
    assert f"Test accuracy: **{100 * rows[-1]['test_acc']:.2f}%**" in text
    report = at.get("download_button")
    assert any(b.label == "Download the report (Markdown)" for b in report)


def test_the_seeds_setting_queues_every_seed_and_recommends_three(env):
    at = page()
    seeds = at.sidebar.number_input(key="a_seeds")
    assert seeds.value == 1 and "3 recommended" in seeds.help and "Welch's t-test" in seeds.help
    seeds.set_value(3).run()
    assert "Queues 3 run(s)" in at.button(key="run_1").help
    at.button(key="run_1").click().run()
    assert not at.exception and not at.error
    store = Store(env / "results")
    try:
        runs = store.list_runs()
        assert sorted(r.config["seed"] for r in runs) == [0, 1, 2] and {r.arch for r in runs} == {"basic_nn"}
    finally:
        store.close()
    assert "BasicNN (seed 2) (`basic_nn` on `mnist_sample`" in everything(at)


def test_runs_with_other_configs_are_not_taken_for_assignment_runs(env, monkeypatch, finished_root):
    monkeypatch.setenv("LENSBOARD_RESULTS", str(finished_root))  # 2-epoch runs with a validation split
    at = page()
    assert not at.exception and not at.error
    assert "BasicNN (`basic_nn` on `mnist_sample`, batch 64, lr 0.001, 5 epochs, Adam): not run yet." in everything(at)


def test_full_mnist_on_disk_is_used_and_said(env):
    raw = env / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"")  # what available_datasets looks for
    at = page()
    assert not at.exception
    text = everything(at)
    assert "use the full MNIST dataset (60,000 training images)" in " ".join(s.value for s in at.success)
    assert "BasicNN (`basic_nn` on `mnist`, batch 64" in text
