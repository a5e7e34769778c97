"""The background worker: runs jobs, survives bad ones, cancels, resumes after a crash, never starts twice."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.config import TrainConfig
from engine.runs import claims, handlers, jobs, supervisor, sweeps
from engine.runs.executor import LocalExecutor
from engine.runs.jobs import JobState
from engine.runs.procs import HOST
from engine.runs.records import RunState
from engine.runs.store import Store
from engine.runs.supervisor import ensure_worker
from engine.runs.worker import Worker
from engine.runs.workers import worker_status
from tests.waiting import WAIT, settled, wait_until

PROJECT = Path(__file__).resolve().parent.parent
TINY = TrainConfig(arch="basic_nn", dataset="mnist_sample", epochs=1, batch_size=32, train_limit=64)


def epochs_in(store: Store, run_id: str) -> list[int]:
    return [row["epoch"] for row in store.metrics(run_id)]


@pytest.fixture
def spawn(tmp_path):
    """Start `python -m engine worker` processes; every one is killed at the end of the test."""
    procs: list[subprocess.Popen] = []

    def start(root: Path, *args: str) -> subprocess.Popen:
        log_path = tmp_path / f"worker-{len(procs)}.log"
        env = dict(os.environ, PYTHONPATH=str(PROJECT))
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "engine",
                    "worker",
                    "--results",
                    str(root),
                    "--poll",
                    "0.1",
                    "--idle-exit",
                    "120",
                    *args,
                ],  # --idle-exit: a leaked worker still ends on its own
                cwd=PROJECT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc.log_path = log_path
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def claims_in(*procs: subprocess.Popen) -> collections.Counter:
    """How often each job id was claimed, from the workers' logs."""
    counts = collections.Counter()
    for proc in procs:
        counts.update(int(m) for m in re.findall(r"claimed job (\d+):", proc.log_path.read_text()))
    return counts


# ---------------------------------------------------------------- in this process


def test_worker_trains_a_queued_run_and_records_its_progress(store):
    run_id = sweeps.submit(store, TINY)
    job = Worker(store, log=lambda m: None).step()
    assert job.state == JobState.DONE and job.worker is not None
    assert (job.executor, job.node) == ("local", HOST)  # where it ran, for `show --json`
    assert job.progress.to_json() == {"epoch": 1, "batch": 2, "batches": 2}  # the last beat carries the final progress
    run = store.get_run(run_id)
    assert run.state == RunState.DONE and run.epoch == 1 and run.final_test_acc is not None
    assert epochs_in(store, run_id) == [1]
    assert Worker(store, log=lambda m: None).step() is None  # the queue is empty


def test_a_worker_whose_executor_has_two_slots_runs_two_jobs_at_once_each_in_its_own_thread(store):
    class TwoSlots(LocalExecutor):
        slots = 2

        def __init__(self):
            self.together = threading.Barrier(2, timeout=WAIT)  # the first two jobs pass it only at the same time
            self.threads = set()

        def execute(self, fn, store, job, ctx):
            self.threads.add(threading.current_thread().name)
            if job.id <= 2:
                self.together.wait()
            return super().execute(lambda s, j, c: f"ran {j.id}", store, job, ctx)

    run_ids = [sweeps.submit(store, TINY) for _ in range(3)]
    executor = TwoSlots()
    assert Worker(store, poll=0.05, executor=executor, log=lambda m: None).serve(idle_exit=0.2) == 3
    assert executor.threads == {"job-1", "job-2", "job-3"}
    assert [jobs.jobs_for_run(store, r)[0].note for r in run_ids] == ["ran 1", "ran 2", "ran 3"]


def test_a_failing_handler_fails_its_job_and_the_worker_goes_on(store, monkeypatch):
    def boom(store, job, ctx):
        ctx.progress(1, 3, "embedding")
        raise RuntimeError("the index file is corrupt")

    monkeypatch.setitem(handlers.HANDLERS, "boom", boom)
    first = sweeps.submit(store, TINY)
    jobs.submit_job(store, "boom", first)
    second = sweeps.submit(store, TINY.replace(seed=1))

    ran = Worker(store, log=lambda m: None).serve(idle_exit=0)

    assert ran == 3
    [train1, failed] = jobs.jobs_for_run(store, first)
    assert failed.state == JobState.FAILED and failed.error == "RuntimeError: the index file is corrupt"
    assert "the index file is corrupt" in (store.run_dir(first) / f"traceback-boom-{failed.id}.txt").read_text()
    assert store.get_run(first).state == RunState.DONE  # a failed side job leaves the trained run alone
    assert store.get_run(second).state == RunState.DONE


def test_a_run_that_cannot_train_is_failed_with_its_traceback_and_the_worker_goes_on(store):
    broken = sweeps.submit(store, TINY)
    # its config names a model that no longer exists (e.g. a run queued by an older version)
    store.conn.execute("UPDATE runs SET config = json_set(config, '$.arch', 'vanished_net') WHERE id = ?", (broken,))
    fine = sweeps.submit(store, TINY.replace(seed=3))

    Worker(store, log=lambda m: None).serve(idle_exit=0)

    run = store.get_run(broken)
    assert run.state == RunState.FAILED and "vanished_net" in run.error
    assert "vanished_net" in (run.path / "traceback.txt").read_text()
    assert jobs.jobs_for_run(store, broken)[0].state == JobState.FAILED
    assert store.get_run(fine).state == RunState.DONE


def test_a_job_of_an_unknown_kind_fails_naming_the_known_kinds(store):
    run_id = sweeps.submit(store, TINY)
    jobs.cancel(store, run_id)
    jobs.submit_job(store, "teleport", run_id)
    job = Worker(store, log=lambda m: None).step()
    assert job.state == JobState.FAILED
    assert "no handler for job kind 'teleport'; known kinds:" in job.error and "train" in job.error


def test_a_handler_sees_a_cancel_within_a_heartbeat_and_the_job_ends_cancelled(store, monkeypatch):
    seen = {}

    def patient(store_, job, ctx):
        other = Store(store_.root)  # the cancel comes from elsewhere, e.g. the dashboard
        jobs.cancel(other, job.run_id)
        other.close()
        deadline = time.monotonic() + 30
        while not ctx.should_stop() and time.monotonic() < deadline:
            ctx.progress(1, 10, "waiting")
            time.sleep(0.02)
        seen["stopped"] = ctx.stopped

    monkeypatch.setitem(handlers.HANDLERS, "patient", patient)
    run_id = store.create_run(TINY, RunState.DONE)
    jobs.submit_job(store, "patient", run_id)
    job = Worker(store, heartbeat_every=0.05, log=lambda m: None).step()
    assert seen["stopped"] == "cancel"
    assert job.state == JobState.CANCELLED and job.progress.to_json() == {"done": 1, "total": 10, "stage": "waiting"}


def test_a_worker_shutting_down_requeues_its_run_which_then_finishes_every_epoch_once(store):
    run_id = sweeps.submit(store, TINY.replace(epochs=2))
    w = Worker(store, log=lambda m: None)
    w.shutdown.set()  # as SIGTERM does: stop after the current batch
    job = w.step()
    assert job.state == JobState.QUEUED and job.worker is None
    assert store.get_run(run_id).state == RunState.INTERRUPTED
    w.shutdown.clear()
    job = w.step()
    assert job.state == JobState.DONE and job.attempts == 2
    assert epochs_in(store, run_id) == [1, 2]
    assert store.get_run(run_id).state == RunState.DONE


def test_worker_status_counts_a_worker_alive_until_its_heartbeat_is_stale(store):
    w = Worker(store, log=lambda m: None)
    w.register(now=1000.0)
    assert worker_status(store, now=1010.0).alive
    w.beat(now=1020.0)
    assert worker_status(store, now=1049.0, stale_after=30).alive
    status = worker_status(store, now=1051.0, stale_after=30)
    assert not status.alive and status.workers == []
    w.beat(now=1060.0)
    w.unregister(now=1061.0)
    assert not worker_status(store, now=1062.0).alive  # it said goodbye


def test_jobs_of_a_worker_whose_process_is_gone_are_requeued_at_once(store):
    gone = subprocess.Popen(["true"])
    gone.wait()
    store.conn.execute(
        "INSERT INTO workers (id, pid, host, started, heartbeat) VALUES ('ghost', ?, ?, ?, ?)",
        (gone.pid, HOST, time.time(), time.time()),
    )
    run_id = sweeps.submit(store, TINY)
    claims.claim(store, "ghost")
    assert worker_status(store).alive is False  # a fresh heartbeat, but no process behind it

    [job] = Worker(store, log=lambda m: None).recover()

    assert job.state == JobState.QUEUED and store.get_run(run_id).state == RunState.INTERRUPTED


def test_a_run_whose_foreground_train_command_died_is_requeued_to_resume_and_a_live_one_is_left_alone(store):
    import json

    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "engine", "train"])
    try:
        orphan, running = (store.create_run(TINY, RunState.RUNNING) for _ in range(2))
        for run_id, pid in ((orphan, dead.pid), (running, live.pid)):
            store.paths(run_id).foreground.write_text(json.dumps({"host": HOST, "pid": pid}))

        Worker(store, log=lambda m: None).recover()

        assert store.get_run(orphan).state == RunState.INTERRUPTED
        assert [(j.kind, j.state) for j in jobs.jobs_for_run(store, orphan)] == [("train", JobState.QUEUED)]
        assert store.get_run(running).state == RunState.RUNNING and jobs.jobs_for_run(store, running) == []
    finally:
        live.kill()
        live.wait()


# ---------------------------------------------------------------- worker processes


def test_two_workers_drain_twenty_jobs_and_run_each_exactly_once(tmp_path, spawn):
    root = tmp_path / "results"
    store = Store(root)
    a = spawn(root, "--batch-delay", "0.2")  # each job takes long enough for the other worker to poll
    b = spawn(root, "--batch-delay", "0.2")
    wait_until(lambda: len(worker_status(store).workers) == 2, what="both workers to register")

    _, run_ids = sweeps.submit_sweep(store, sweeps.sweep_grid(TINY.replace(batch_size=64), seed=list(range(20))))
    wait_until(lambda: all(settled(store, r) for r in run_ids), what="the queue to drain")

    assert all(store.get_run(r).state == RunState.DONE for r in run_ids)
    assert all(epochs_in(store, r) == [1] for r in run_ids)
    all_jobs = [j for r in run_ids for j in jobs.jobs_for_run(store, r)]
    assert len(all_jobs) == 20 and all(j.attempts == 1 and j.state == JobState.DONE for j in all_jobs)
    claimed = claims_in(a, b)
    assert sorted(claimed) == sorted(j.id for j in all_jobs) and set(claimed.values()) == {1}
    assert len({j.worker for j in all_jobs}) == 2  # both took part

    for proc in (a, b):
        proc.send_signal(signal.SIGTERM)
    assert [a.wait(timeout=60), b.wait(timeout=60)] == [0, 0]
    assert not worker_status(store).alive


def test_a_run_whose_worker_was_killed_resumes_on_a_new_worker_with_every_epoch_once(tmp_path, spawn):
    root = tmp_path / "results"
    store = Store(root)
    config = TINY.replace(epochs=6, train_limit=256)  # 8 batches of 32 per epoch
    run_id = sweeps.submit(store, config)
    first = spawn(root, "--batch-delay", "0.1")
    wait_until(lambda: epochs_in(store, run_id), what="the first finished epoch")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    before = store.metrics(run_id)
    assert 1 <= len(before) < 6, "the run must be killed in the middle"
    assert store.get_run(run_id).state == RunState.RUNNING  # nobody told the database

    second = spawn(root, "--stale-after", "2")
    wait_until(lambda: settled(store, run_id), what="the resumed run to end")

    run = store.get_run(run_id)
    assert run.state == RunState.DONE and run.epoch == 6
    after = store.metrics(run_id)
    assert [r["epoch"] for r in after] == [1, 2, 3, 4, 5, 6]
    assert after[: len(before)] == before  # the finished epochs were kept, not trained again
    [job] = jobs.jobs_for_run(store, run_id)
    assert job.state == JobState.DONE and job.attempts == 2
    assert "requeued" in second.log_path.read_text()


def test_cancel_stops_a_running_run_keeping_its_epochs_and_drops_a_queued_one(tmp_path, spawn):
    root = tmp_path / "results"
    store = Store(root)
    running = sweeps.submit(store, TINY.replace(epochs=50, train_limit=128))
    waiting = sweeps.submit(store, TINY.replace(seed=1))
    proc = spawn(root, "--batch-delay", "0.05")
    wait_until(lambda: epochs_in(store, running), what="the first finished epoch")

    assert "removed queued" in jobs.cancel(store, waiting)
    assert "stop after its current batch" in jobs.cancel(store, running)
    wait_until(lambda: settled(store, running), what="the cancel to take effect")

    run = store.get_run(running)
    assert run.state == RunState.CANCELLED
    kept = epochs_in(store, running)
    assert 1 <= len(kept) < 50 and kept == list(range(1, len(kept) + 1)) and run.epoch == len(kept)
    assert (run.path / "checkpoint.pt").exists()
    assert jobs.jobs_for_run(store, running)[0].state == JobState.CANCELLED
    [dropped] = jobs.jobs_for_run(store, waiting)
    assert dropped.state == JobState.CANCELLED and dropped.attempts == 0
    assert store.get_run(waiting).state == RunState.CANCELLED

    after = sweeps.submit(store, TINY.replace(seed=2))  # the worker is still there for the next job
    wait_until(lambda: settled(store, after), what="the next job")
    assert store.get_run(after).state == RunState.DONE and proc.poll() is None


def test_ensure_worker_starts_one_worker_even_when_called_concurrently_and_restarts_a_dead_one(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    extra = ["--idle-exit", "120", "--poll", "0.1", "--slots", "1"]  # one process: its pid is the worker's
    started: list[int | None] = []
    barrier = threading.Barrier(3)

    def call():
        barrier.wait()
        started.append(ensure_worker(root, extra))

    threads = [threading.Thread(target=call) for _ in range(3)]
    pids: list[int] = []
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        pids = [p for p in started if p is not None]
        assert len(started) == 3 and len(pids) == 1
        assert ensure_worker(root, extra) is None  # still importing torch, or already serving
        status = wait_until(lambda: (s := worker_status(store)).alive and s, what="the worker to register")
        assert [w.pid for w in status.workers] == pids
        assert ensure_worker(root, extra) is None

        os.killpg(pids[0], signal.SIGKILL)  # it dies
        wait_until(lambda: not worker_status(store).alive, what="the dead worker to be noticed")
        restarted = ensure_worker(root, extra)
        assert restarted is not None and restarted != pids[0]
        pids.append(restarted)
        status = wait_until(lambda: (s := worker_status(store)).alive and s, what="the new worker")
        assert [w.pid for w in status.workers] == [restarted]
        assert "serving" in (root / "worker.log").read_text()
    finally:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in supervisor._spawned:
            proc.wait(timeout=30)


def test_worker_command_with_once_runs_one_job_and_exits(tmp_path, capsys):
    from engine.cli.main import main

    root = tmp_path / "results"
    store = Store(root)
    first, second = (sweeps.submit(store, TINY.replace(seed=s)) for s in (0, 1))
    assert main(["worker", "--results", str(root), "--once"]) == 0
    assert [store.get_run(r).state for r in (first, second)] == [RunState.DONE, RunState.QUEUED]
    assert main(["worker", "--results", str(root), "--once"]) == 0
    assert main(["worker", "--results", str(root), "--once"]) == 0  # an empty queue: exits at once
    assert "the queue is empty" in capsys.readouterr().out
    assert store.get_run(second).state == RunState.DONE
    assert not worker_status(store).alive


def test_a_handlers_note_is_kept_on_its_done_job(store, monkeypatch):
    def count(store_, job, ctx):
        ctx.progress(3, 3, "counting")
        return f"counted {job.payload['n']} things"

    monkeypatch.setitem(handlers.HANDLERS, "count", count)
    run_id = store.create_run(TINY, RunState.DONE)
    jobs.submit_job(store, "count", run_id, {"n": 3})
    job = Worker(store, log=lambda m: None).step()
    assert (job.state, job.note, job.error) == (JobState.DONE, "counted 3 things", None)
    assert store.get_run(run_id).state == RunState.DONE
