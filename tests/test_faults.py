"""Faults around a training run that must never cost it: a database locked past its busy timeout, a full
disk, a run folder deleted while the run trains, a heartbeat that cannot be written."""

from __future__ import annotations

import errno
import shutil
import sqlite3
import threading
import time

import pytest

from engine.cli.main import main
from engine.config import TrainConfig
from engine.errors import RegistryBusy
from engine.runs import jobs, sweeps
from engine.runs import worker as worker_module
from engine.runs.jobs import JobState
from engine.runs.records import RunState
from engine.runs.runner import run_training
from engine.runs.store import Store
from engine.runs.worker import Worker

TINY = TrainConfig(arch="basic_nn", dataset="mnist_sample", epochs=3, batch_size=32, train_limit=64)
pytestmark = pytest.mark.usefixtures("one_thread")


def same_numbers(rows: list[dict]) -> list[dict]:
    """A metrics row without its timings: what must be identical between two runs of one config."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in rows]


@pytest.fixture
def reference(tmp_path_factory) -> list[dict]:
    store = Store(tmp_path_factory.mktemp("reference") / "results")
    run_id = store.create_run(TINY)
    assert run_training(store, run_id)[0] == RunState.DONE
    rows = same_numbers(store.metrics(run_id))
    store.close()
    return rows


class Lock:
    """Another process's write lock on the results database, held until released."""

    def __init__(self, db_path):
        self.conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)

    def __enter__(self) -> Lock:
        self.conn.execute("BEGIN IMMEDIATE")
        return self

    def release(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def __exit__(self, *exc) -> None:
        self.release()
        self.conn.close()


def test_a_lock_held_past_the_busy_timeout_during_training_costs_no_epoch(tmp_path, reference):
    store = Store(tmp_path / "results", busy_timeout=0.2)
    run_id = store.create_run(TINY)
    lock = Lock(store.db_path)
    held = []

    def after_epoch(row: dict) -> None:
        if row["epoch"] == 1:  # from here on the registry is locked for a while
            lock.__enter__()
            held.append(True)
            threading.Timer(1.5, lock.release).start()

    state, message = run_training(store, run_id, on_epoch=after_epoch)
    lock.__exit__()
    assert held and state == RunState.DONE, message
    assert same_numbers(store.metrics(run_id)) == reference
    record = store.get_run(run_id)  # the summary caught up once the lock was gone
    assert (record.state, record.epoch, record.final_test_acc) == (RunState.DONE, 3, reference[-1]["test_acc"])


def test_a_run_cannot_be_created_while_the_database_is_locked_and_leaves_nothing_behind(tmp_path):
    store = Store(tmp_path / "results", busy_timeout=0.2)
    with Lock(store.db_path), pytest.raises(RegistryBusy, match="locked by another process.*try again"):
        store.create_run(TINY)
    assert list(store.runs_dir.iterdir()) == [] and store.list_runs() == []


def test_submit_while_the_database_is_locked_is_one_line_and_no_orphan_folder(tmp_path, monkeypatch, capsys):
    root = tmp_path / "results"
    Store(root).close()
    monkeypatch.setattr("engine.runs.store.BUSY_TIMEOUT", 0.2)
    with Lock(root / "lensboard.sqlite3"):
        code = main(["submit", "--arch", "basic_nn", "--epochs", "1", "--train-limit", "64", "--results", str(root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "locked" in err[0], err
    assert list((root / "runs").iterdir()) == []


def test_a_full_disk_puts_the_job_back_and_the_run_finishes_exactly_once_there_is_space(tmp_path, reference, full_disk):
    store = Store(tmp_path / "results")
    run_id = sweeps.submit(store, TINY)
    full_disk.fill()
    worker = Worker(store, retry_backoff=(0.05, 0.1), log=lambda m: None)
    job = worker.step()
    assert job.state == JobState.QUEUED and "disk is full" in job.error  # back on the queue, not failed
    run = store.get_run(run_id)
    assert run.state == RunState.INTERRUPTED and "disk is full" in run.error and run.epoch == 1
    assert worker.step() is None  # it waits a moment before trying again

    full_disk.free()  # space is back
    time.sleep(0.06)
    job = worker.step()
    assert job.state == JobState.DONE and job.attempts == 2
    assert store.get_run(run_id).state == RunState.DONE
    assert same_numbers(store.metrics(run_id)) == reference


def test_a_run_whose_folder_is_deleted_while_it_trains_fails_saying_so(tmp_path):
    store = Store(tmp_path / "results")
    run_id = store.create_run(TINY.replace(epochs=4))
    folder = store.run_dir(run_id)

    def delete_in_epoch_two(epoch: int, batch: int, batches: int) -> None:
        if epoch == 2 and batch == 1 and folder.exists():
            shutil.rmtree(folder)

    state, message = run_training(store, run_id, on_batch=delete_in_epoch_two)
    record = store.get_run(run_id)
    assert state == record.state == RunState.FAILED
    assert "was deleted while it trained" in message and "was deleted while it trained" in record.error
    assert record.epoch < 4  # it did not go on to report the run done


def test_a_heartbeat_that_cannot_be_written_never_stops_the_worker(tmp_path, monkeypatch):
    store = Store(tmp_path / "results")
    logged = []

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(worker_module, "IDLE_BEAT_EVERY", 0.01)
    monkeypatch.setattr(worker_module.workers, "beat", disk_full)
    ran = Worker(store, poll=0.01, log=logged.append).serve(idle_exit=0.2)
    assert ran == 0 and any("heartbeat failed" in line for line in logged)
    assert any("stopped after 0 job(s)" in line for line in logged)
    assert jobs.queue_length(store) == 0
