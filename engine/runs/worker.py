"""The background worker: claim a job, hand it to an executor, record what happened, never die on a bad job.

`python -m engine worker` serves one results root. It registers itself in the `workers` table,
requeues jobs abandoned by dead workers (and runs whose foreground `train` command died), then
claims jobs while its executor (engine.runs.executor) has a free slot, and runs each in a thread
of its own with its own database connection and heartbeat: the local executor has one slot (one
job at a time), a Ray cluster as many as its nodes fit. A job whose handler raises is marked failed,
with the traceback saved in the run folder; the worker goes on.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType

from engine.errors import RunNotFound
from engine.files import atomic_write_text
from engine.runs import claims, jobs, workers
from engine.runs.claims import STALE_AFTER
from engine.runs.executor import Executor, JobContext, LocalExecutor, Pulse
from engine.runs.handlers import JobFailed, JobRetry, resolve_handler
from engine.runs.jobs import Job, JobKind, JobState
from engine.runs.procs import HOST, interrupt_orphaned_scripts, orphaned_foreground_runs
from engine.runs.records import RunState
from engine.runs.runner import patiently
from engine.runs.store import Store
from engine.settings import Settings

HEARTBEAT_EVERY = 1.0  # seconds between heartbeats of a running job (and cancel-flag reads)
POLL_EVERY = 0.5  # seconds between looks at an empty queue
IDLE_BEAT_EVERY = 2.0  # seconds between heartbeats of an idle worker
RETRY_BACKOFF = (5.0, 60.0)  # after a job put back for a passing fault (a full disk): first and longest pause


class Worker:
    """Serves one results root: claims jobs while its executor has a free slot and runs each in its own thread."""

    def __init__(
        self,
        store: Store,
        *,
        stale_after: float = STALE_AFTER,
        poll: float = POLL_EVERY,
        heartbeat_every: float = HEARTBEAT_EVERY,
        batch_delay: float = 0.0,
        download: bool = False,
        executor: Executor | None = None,
        retry_backoff: tuple[float, float] = RETRY_BACKOFF,
        log: Callable[[str], None] | None = None,
    ):
        self.store = store
        self.stale_after, self.poll, self.heartbeat_every = stale_after, poll, heartbeat_every
        self.batch_delay, self.download = batch_delay, download
        self.executor = executor or LocalExecutor()
        self.retry_backoff = retry_backoff
        self.pause = 0.0  # seconds to wait before the next claim after a passing fault; grows while it lasts
        self.paused_until = 0.0  # time.monotonic() before which no job is claimed
        self.id = f"{HOST}-{os.getpid()}-{secrets.token_hex(3)}"
        self.shutdown = threading.Event()  # set by SIGTERM/SIGINT: stop after the current batch
        self.log = log or self._print
        self.running: dict[int, threading.Thread] = {}  # job id -> the thread running it (see serve)
        self._ended = threading.Event()  # set when a job thread ends: a slot is free

    def _print(self, message: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} worker {self.id}: {message}", flush=True)

    # -- registry

    def register(self, now: float | None = None) -> None:
        workers.register(self.store, self.id, time.time() if now is None else now)

    def unregister(self, now: float | None = None) -> None:
        workers.unregister(self.store, self.id, time.time() if now is None else now)

    def beat(self, now: float | None = None) -> None:
        workers.beat(self.store, self.id, time.time() if now is None else now)

    def recover(self, now: float | None = None) -> list[Job]:
        """Requeue the jobs of dead or silent workers; returns them."""
        now = time.time() if now is None else now
        dead = workers.dead_workers(self.store)
        handled = claims.requeue_stale(self.store, now, self.stale_after, dead)
        workers.mark_stopped(self.store, dead, now)
        for run_id, pid in orphaned_foreground_runs(self.store):
            reason = f"its foreground `train` command (pid {pid}) stopped; requeued to resume from its last checkpoint"
            self.store.set_state(run_id, RunState.INTERRUPTED, reason, now)
            jobs.submit_job(self.store, JobKind.TRAIN, run_id, now=now)
            with contextlib.suppress(OSError):
                self.store.paths(run_id).foreground.unlink()
            self.log(f"run {run_id}: {reason}")
        for run_id, reason in interrupt_orphaned_scripts(self.store, now):
            self.log(f"run {run_id}: {reason}")
        workers.forget_old(self.store, now)
        for job in handled:
            what = "requeued" if job.state == JobState.QUEUED else "cancelled"
            self.log(f"job {job.id} ({job.kind} {job.run_id}) of worker {job.worker} stopped responding: {what}")
        return handled

    # -- jobs

    def step(self, now: float | None = None) -> Job | None:
        """Claim the oldest queued job and run it; returns it as it ended, or None when the queue is empty
        (or while the worker pauses after a passing fault)."""
        if time.monotonic() < self.paused_until:
            return None
        job = claims.claim(self.store, self.id, now)
        if job is None:
            return None
        return self.run_job(job)

    def run_job(self, job: Job, store: Store | None = None) -> Job:
        """Run a claimed job to its end through the executor and record how it ended; `store` is the
        calling thread's own connection (default: the worker's)."""
        store = store or self.store
        self.log(f"claimed job {job.id}: {job.kind} {job.run_id} (attempt {job.attempts})")
        pulse = Pulse(store.db_path, job, self.id, self.heartbeat_every, self.log)
        ctx = JobContext(job, pulse, self.shutdown, self.download, self.batch_delay)
        note, error, retry = None, None, None
        pulse.start()
        try:
            result = self.executor.execute(resolve_handler(job.kind), store, job, ctx)
            note = result if isinstance(result, str) else None
        except JobRetry as exc:
            retry = str(exc)
        except JobFailed as exc:
            error = str(exc)
        except Exception as exc:  # a bad job never takes the worker down
            error = f"{type(exc).__name__}: {exc}"
            self._save_traceback(store, job, traceback.format_exc())
        finally:
            pulse.stop()

        reason = ctx.stop_reason() if ctx.stopped else None
        if pulse.lost:
            self.log(f"job {job.id} was requeued while it ran here (heartbeat too late); dropped it")
            self._restore_run_state(store, job)
        elif retry is not None:
            claims.requeue(store, job, self.id, retry)
            first, longest = self.retry_backoff
            self.pause = min(longest, self.pause * 2) if self.pause else first
            self.paused_until = time.monotonic() + self.pause
            self.log(f"job {job.id} put back on the queue ({retry}); waiting {self.pause:g}s before the next one")
        elif error is not None:
            if job.kind == JobKind.TRAIN:
                self._mark_run_failed(store, job.run_id, error)
            claims.finish(store, job, self.id, JobState.FAILED, error)
            self.log(f"job {job.id} failed: {error}")
        elif reason == "cancel" or (ctx.requeue and pulse.cancel):
            claims.finish(store, job, self.id, JobState.CANCELLED, "cancelled")
            self.log(f"job {job.id} cancelled")
        elif ctx.requeue:  # the executor lost the job's node: it resumes elsewhere
            claims.requeue(store, job, self.id, ctx.requeue)
            self.log(f"job {job.id}: {ctx.requeue}")
        elif reason == "shutdown":
            reason = "its worker shut down; requeued"
            if job.kind == JobKind.TRAIN:
                done = store.get_run(job.run_id).epoch
                reason += f" to resume from its last checkpoint ({done} epoch(s) done)"
            claims.requeue(store, job, self.id, reason)
            self.log(f"job {job.id} interrupted by shutdown: requeued")
        else:
            claims.finish(store, job, self.id, JobState.DONE, note=note)
            self.pause = 0.0
            self.log(f"job {job.id} done" + (f": {note}" if note else ""))
        return jobs.get_job(store, job.id)

    def _save_traceback(self, store: Store, job: Job, text: str) -> None:
        paths = store.paths(job.run_id)
        path = paths.traceback if job.kind == JobKind.TRAIN else paths.job_traceback(job.kind, job.id)
        try:
            if paths.dir.is_dir():
                atomic_write_text(path, text)
        except OSError as exc:
            self.log(f"could not save the traceback of job {job.id}: {exc}")
        self.log(f"job {job.id} raised:\n{text.rstrip()}")

    def _mark_run_failed(self, store: Store, run_id: str, error: str) -> None:
        try:
            if store.get_run(run_id).state != RunState.FAILED:
                store.set_state(run_id, RunState.FAILED, error)
        except RunNotFound:
            pass

    def _restore_run_state(self, store: Store, job: Job) -> None:
        """Our late writes may have overwritten the state of a run another worker now owns."""
        if job.kind != JobKind.TRAIN:
            return
        now_job = jobs.get_job(store, job.id)
        if now_job.state == JobState.RUNNING:
            store.set_state(job.run_id, RunState.RUNNING)
        elif now_job.state == JobState.QUEUED:
            store.set_state(job.run_id, RunState.INTERRUPTED, now_job.error)

    # -- slots: each running job in a thread of its own

    def fill_slots(self, limit: int | None = None) -> int:
        """Claim jobs while the executor has a free slot (at most `limit`), each started in its own
        thread; returns how many were started."""
        started = 0
        while len(self.running) < self.executor.slots and (limit is None or started < limit):
            if self.shutdown.is_set() or time.monotonic() < self.paused_until:  # paused after a passing fault
                break
            job = claims.claim(self.store, self.id)
            if job is None:
                break
            thread = threading.Thread(target=self._run_in_thread, args=(job,), name=f"job-{job.id}", daemon=True)
            self.running[job.id] = thread
            thread.start()
            started += 1
        return started

    def _run_in_thread(self, job: Job) -> None:
        try:
            store = Store(self.store.root, busy_timeout=self.store.busy_timeout)  # a connection of its own
            try:
                self.run_job(job, store)
            finally:
                store.close()
        except Exception as exc:  # the database was busy too long, a disk error, ...: recover() requeues it
            self.log(f"error while running job {job.id} (left to recovery): {type(exc).__name__}: {exc}")
        finally:
            self.running.pop(job.id, None)
            self._ended.set()

    def wait_for_jobs(self) -> None:
        """Wait for every running job's thread to end (after a shutdown they stop after their current batch)."""
        for thread in list(self.running.values()):
            thread.join()

    # -- the loop

    def serve(self, once: bool = False, idle_exit: float | None = None) -> int:
        """Run jobs until shut down (or idle for `idle_exit` seconds, or after one job with `once`);
        returns how many jobs it ran."""
        patiently(self.register)  # a database locked by another process only delays the start
        self.log(f"serving {self.store.root} (pid {os.getpid()}, {self.executor.name} executor)")
        ran = 0
        check_every = max(0.5, min(self.stale_after / 2, 5.0))
        last_work = last_beat = time.monotonic()
        last_check = -float("inf")  # recover at once: jobs of workers that died before we started
        try:
            while not self.shutdown.is_set():
                self._ended.clear()
                try:
                    if time.monotonic() - last_check >= check_every:
                        self.recover()
                        last_check = time.monotonic()
                    started = self.fill_slots(limit=1 - ran if once else None)
                except Exception as exc:  # the database was busy too long, a disk error, ...
                    self.log(f"error in the worker loop (going on): {type(exc).__name__}: {exc}")
                    self.shutdown.wait(self.poll)
                    continue
                ran += started
                if self.running:
                    last_work = last_beat = time.monotonic()  # the jobs' heartbeats say we are alive
                elif once and ran:
                    break
                elif once and idle_exit is None:
                    self.log("the queue is empty")
                    break
                elif idle_exit is not None and time.monotonic() - last_work >= idle_exit:
                    self.log(f"nothing to do for {idle_exit:g}s: exiting")
                    break
                elif time.monotonic() - last_beat >= IDLE_BEAT_EVERY:
                    try:
                        self.beat()
                    except Exception as exc:  # a locked database, a full disk: the next beat tries again
                        self.log(f"heartbeat failed (going on): {type(exc).__name__}: {exc}")
                    last_beat = time.monotonic()
                if not started:
                    self._ended.wait(self.poll)  # a job ending frees a slot: claim again at once
            self.wait_for_jobs()  # shut down: each stops after its current batch and is requeued
        finally:
            try:
                self.unregister()
            except Exception as exc:  # its heartbeat goes stale, and other workers treat it as gone
                self.log(f"could not sign off ({type(exc).__name__}: {exc})")
            why = " (asked to stop)" if self.shutdown.is_set() else ""
            self.log(f"stopped after {ran} job(s){why}")
        return ran


def run_worker(
    settings: Settings,
    *,
    once: bool = False,
    idle_exit: float | None = None,
    stale_after: float = STALE_AFTER,
    poll: float = POLL_EVERY,
    batch_delay: float = 0.0,
    executor: Executor | None = None,
) -> int:
    """The `worker` command: serve a results root until SIGTERM/SIGINT; returns how many jobs ran.

    The first SIGTERM or Ctrl+C stops the running jobs after their current batch and requeues them
    (their runs resume from the last checkpoint); a second Ctrl+C stops at once. `executor`: where
    the jobs run (default: in this process, one at a time).
    """
    store = Store(settings.results)
    worker = Worker(
        store,
        stale_after=stale_after,
        poll=poll,
        batch_delay=batch_delay,
        download=settings.download,
        executor=executor,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if worker.shutdown.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        worker.shutdown.set()  # only a flag: printing here could re-enter a print in progress

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return worker.serve(once=once, idle_exit=idle_exit)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        store.close()
