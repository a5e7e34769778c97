"""The background worker: claim a job, run it, record what happened, never die on a bad job.

`python -m engine worker` serves one results root. It registers itself in the
`workers` table, requeues jobs abandoned by dead workers, then claims and runs
one job at a time. While a job runs, a heartbeat thread (its own database
connection) writes the job's heartbeat and progress every second and reads its
cancel flag, so training only checks plain attributes between batches.

Job kinds map to handlers `fn(store, job, ctx)`; `train` is built in, other
kinds are added to HANDLERS as "module:function" paths (imported when first
used) or with register_handler(). A handler may return a one-line note (kept
as the job's `note`); one that raises marks its job failed, with the traceback
saved in the run folder; the worker goes on. A handler that polls
ctx.should_stop() and returns early ends its job cancelled (or requeued when
the worker is shutting down).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from engine import jobs
from engine.jobs import STALE_AFTER, Job, JobState
from engine.store import RunNotFound, RunState, Store, atomic_write_text, connect, results_root

HEARTBEAT_EVERY = 1.0  # seconds between heartbeats of a running job (and cancel-flag reads)
POLL_EVERY = 0.5  # seconds between looks at an empty queue
IDLE_BEAT_EVERY = 2.0  # seconds between heartbeats of an idle worker
FORGET_AFTER = 86400.0  # seconds after which a stopped or silent worker's row is deleted
HOST = socket.gethostname()

Handler = Callable[[Store, Job, "JobContext"], object]

# kind -> handler, or "module:function" imported on first use
HANDLERS: dict[str, Handler | str] = {
    "train": "engine.worker:run_train_job",
    "embed": "engine.embed:run_embed_job",  # payload {}
    "project": "engine.projection:run_project_job",  # payload: ProjectionParams.to_json()
    "index": "engine.retrieval:run_index_job",  # payload {"kind": ..., "metric": ...}
}


def register_handler(kind: str, fn: Handler | str) -> None:
    """Make the worker run jobs of `kind` with fn(store, job, ctx) (or a "module:function" path)."""
    if not kind or not isinstance(kind, str):
        raise ValueError(f"a job kind must be a non-empty string, got {kind!r}")
    HANDLERS[kind] = fn


def resolve_handler(kind: str) -> Handler:
    target = HANDLERS.get(kind)
    if target is None:
        raise LookupError(f"no handler for job kind {kind!r}; known kinds: {', '.join(sorted(HANDLERS))}")
    if isinstance(target, str):
        module, _, name = target.partition(":")
        target = getattr(importlib.import_module(module), name)
        HANDLERS[kind] = target
    return target


class JobFailed(Exception):
    """Raised by a handler whose failure is already recorded (message, traceback): just mark the job failed."""


# ---------------------------------------------------------------- a running job


class _Pulse:
    """The heartbeat thread of one running job: writes heartbeat + progress, reads the cancel flag."""

    def __init__(self, db_path: Path, job: Job, worker_id: str, every: float, log: Callable[[str], None]):
        self.db_path, self.job, self.worker_id, self.every, self.log = db_path, job, worker_id, every, log
        self.progress: dict = {}
        self.cancel = job.cancel_requested
        self.lost = False  # the job was taken from us (requeued as stale): drop it
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-job-{job.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        conn = connect(self.db_path)
        try:
            while True:
                stopping = self._done.is_set()
                try:
                    flag = jobs.heartbeat(conn, self.job.id, self.worker_id, self.progress)
                    if flag is None:
                        self.lost = True
                    else:
                        self.cancel = flag
                except sqlite3.Error as exc:  # a long lock; try again next beat
                    self.log(f"heartbeat of job {self.job.id} failed: {exc}")
                if stopping:
                    return  # that was the last beat, with the final progress
                self._done.wait(self.every)
        finally:
            conn.close()


@dataclass
class JobContext:
    """What a handler gets besides the store and the job: progress reporting and a stop check."""

    job: Job
    _pulse: _Pulse
    _shutdown: threading.Event
    batch_delay: float = 0.0  # seconds to sleep after each training batch (slows runs down for tests and demos)
    stopped: str | None = field(default=None)  # why should_stop() first said True: cancel, shutdown or lost

    def progress(self, done: int, total: int, stage: str = "") -> None:
        self._pulse.progress = {"done": done, "total": total, "stage": stage}

    def train_batch(self, epoch: int, batch: int, batches: int) -> None:
        self._pulse.progress = {"epoch": epoch, "batch": batch, "batches": batches}
        if self.batch_delay > 0:
            time.sleep(self.batch_delay)

    def stop_reason(self) -> str | None:
        if self._pulse.lost:
            return "lost"
        if self._pulse.cancel:
            return "cancel"
        if self._shutdown.is_set():
            return "shutdown"
        return None

    def should_stop(self) -> bool:
        reason = self.stop_reason()
        if reason and self.stopped is None:
            self.stopped = reason
        return reason is not None


def run_train_job(store: Store, job: Job, ctx: JobContext) -> str | None:
    """The `train` handler: the same run_training as the foreground `train` command."""
    from engine.runner import run_training

    state, message = run_training(store, job.run_id, on_batch=ctx.train_batch, should_stop=ctx.should_stop)
    if state == RunState.FAILED:
        raise JobFailed(message)  # runner saved traceback.txt and marked the run failed
    return message or None  # e.g. why it diverged


# ---------------------------------------------------------------- processes


def pid_alive(pid: int) -> bool:
    """True when process `pid` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _looks_like(pid: int, command: bytes) -> bool:
    """True when process `pid` looks like `python -m engine <command>` (so a reused pid is not taken for it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid
    return b"engine" in cmdline and command in cmdline


def _looks_like_worker(pid: int) -> bool:
    return _looks_like(pid, b"worker")


# ---------------------------------------------------------------- runs trained in the foreground

FOREGROUND_FILE = "foreground.json"  # in a run folder while a `train` command trains it: {"host", "pid"}


def mark_foreground(run_dir: Path) -> None:
    """Say that this process trains the run in `run_dir` in the foreground (the `train` command)."""
    atomic_write_text(Path(run_dir) / FOREGROUND_FILE, json.dumps({"host": HOST, "pid": os.getpid()}) + "\n")


def orphaned_foreground_runs(store: Store) -> list[tuple[str, int]]:
    """(run id, pid) of runs still `running` whose foreground `train` process on this host is gone
    (killed, or its terminal closed): no job and no heartbeat would ever end them otherwise."""
    jobs.ensure_schema(store)
    rows = store.conn.execute(
        "SELECT id FROM runs WHERE state = ? AND kind = 'train' AND id NOT IN"
        " (SELECT run_id FROM jobs WHERE state IN (?, ?))",
        (RunState.RUNNING.value, JobState.QUEUED.value, JobState.RUNNING.value)).fetchall()
    orphans = []
    for row in rows:
        try:
            info = json.loads((store.run_dir(row["id"]) / FOREGROUND_FILE).read_text())
            host, pid = info["host"], int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not (yet) marked: leave it alone
        if host == HOST and not (pid_alive(pid) and _looks_like(pid, b"train")):
            orphans.append((row["id"], pid))
    return orphans


@dataclass
class WorkerInfo:
    id: str
    pid: int
    host: str
    started: float
    heartbeat: float
    job_id: int | None


@dataclass
class WorkerStatus:
    alive: bool  # at least one live worker serves this results root
    workers: list[WorkerInfo]  # the live ones
    current: list[Job]  # running jobs
    queued: int  # jobs waiting


def _worker_rows(store: Store) -> list[WorkerInfo]:
    jobs.ensure_schema(store)
    rows = store.conn.execute("SELECT id, pid, host, started, heartbeat, job_id FROM workers"
                              " WHERE stopped IS NULL ORDER BY started")
    return [WorkerInfo(**dict(r)) for r in rows]


def _is_alive(w: WorkerInfo, now: float, stale_after: float) -> bool:
    return w.heartbeat >= now - stale_after and (w.host != HOST or pid_alive(w.pid))


def worker_status(store: Store, now: float | None = None, stale_after: float = STALE_AFTER) -> WorkerStatus:
    """Which workers are alive (fresh heartbeat, and a living process when on this host), what runs, what waits."""
    now = time.time() if now is None else now
    alive = [w for w in _worker_rows(store) if _is_alive(w, now, stale_after)]
    current = [j for j in jobs.active_jobs(store) if j.state == JobState.RUNNING]
    return WorkerStatus(bool(alive), alive, current, jobs.queue_length(store))


def dead_workers(store: Store) -> list[str]:
    """Workers on this host that never said goodbye and whose process is gone."""
    return [w.id for w in _worker_rows(store) if w.host == HOST and not pid_alive(w.pid)]


# ---------------------------------------------------------------- the worker


class Worker:
    """Serves one results root: claims and runs one job at a time."""

    def __init__(self, store: Store, *, stale_after: float = STALE_AFTER, poll: float = POLL_EVERY,
                 heartbeat_every: float = HEARTBEAT_EVERY, batch_delay: float = 0.0,
                 log: Callable[[str], None] | None = None):
        self.store = store
        self.stale_after, self.poll, self.heartbeat_every = stale_after, poll, heartbeat_every
        self.batch_delay = batch_delay
        self.id = f"{HOST}-{os.getpid()}-{secrets.token_hex(3)}"
        self.shutdown = threading.Event()  # set by SIGTERM/SIGINT: stop after the current batch
        self.log = log or self._print

    def _print(self, message: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} worker {self.id}: {message}", flush=True)

    # -- registry

    def register(self, now: float | None = None) -> None:
        jobs.ensure_schema(self.store)
        now = time.time() if now is None else now
        with self.store.transaction() as c:
            c.execute("INSERT INTO workers (id, pid, host, started, heartbeat) VALUES (?, ?, ?, ?, ?)",
                      (self.id, os.getpid(), HOST, now, now))

    def unregister(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.store.conn.execute("UPDATE workers SET stopped = ?, job_id = NULL WHERE id = ?", (now, self.id))

    def beat(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.store.conn.execute("UPDATE workers SET heartbeat = ? WHERE id = ?", (now, self.id))

    def recover(self, now: float | None = None) -> list[Job]:
        """Requeue the jobs of dead or silent workers; returns them."""
        now = time.time() if now is None else now
        dead = dead_workers(self.store)
        handled = jobs.requeue_stale(self.store, now, self.stale_after, dead)
        if dead:
            self.store.conn.execute(f"UPDATE workers SET stopped = ? WHERE id IN ({','.join('?' * len(dead))})",
                                    [now, *dead])
        for run_id, pid in orphaned_foreground_runs(self.store):
            reason = (f"its foreground `train` command (pid {pid}) stopped; requeued to resume from its last "
                      f"checkpoint")
            self.store.set_state(run_id, RunState.INTERRUPTED, reason, now)
            jobs.submit_job(self.store, "train", run_id, now=now)
            with contextlib.suppress(OSError):
                (self.store.run_dir(run_id) / FOREGROUND_FILE).unlink()
            self.log(f"run {run_id}: {reason}")
        # forget workers gone for a day, so the table stays small
        self.store.conn.execute("DELETE FROM workers WHERE COALESCE(stopped, heartbeat) < ?", (now - FORGET_AFTER,))
        for job in handled:
            what = "requeued" if job.state == JobState.QUEUED else "cancelled"
            self.log(f"job {job.id} ({job.kind} {job.run_id}) of worker {job.worker} stopped "
                     f"responding: {what}")
        return handled

    # -- jobs

    def step(self, now: float | None = None) -> Job | None:
        """Claim the oldest queued job and run it; returns it as it ended, or None when the queue is empty."""
        job = jobs.claim(self.store, self.id, now)
        if job is None:
            return None
        return self.run_job(job)

    def run_job(self, job: Job) -> Job:
        self.log(f"claimed job {job.id}: {job.kind} {job.run_id} (attempt {job.attempts})")
        pulse = _Pulse(self.store.db_path, job, self.id, self.heartbeat_every, self.log)
        ctx = JobContext(job, pulse, self.shutdown, self.batch_delay)
        note, error = None, None
        pulse.start()
        try:
            result = resolve_handler(job.kind)(self.store, job, ctx)
            note = result if isinstance(result, str) else None
        except JobFailed as exc:
            error = str(exc)
        except Exception as exc:  # a bad job never takes the worker down
            error = f"{type(exc).__name__}: {exc}"
            self._save_traceback(job, traceback.format_exc())
        finally:
            pulse.stop()

        reason = ctx.stop_reason() if ctx.stopped else None
        if pulse.lost:
            self.log(f"job {job.id} was requeued while it ran here (heartbeat too late); dropped it")
            self._restore_run_state(job)
        elif error is not None:
            if job.kind == "train":
                self._mark_run_failed(job.run_id, error)
            jobs.finish(self.store, job, self.id, JobState.FAILED, error)
            self.log(f"job {job.id} failed: {error}")
        elif reason == "cancel":
            jobs.finish(self.store, job, self.id, JobState.CANCELLED, "cancelled")
            self.log(f"job {job.id} cancelled")
        elif reason == "shutdown":
            reason = "its worker shut down; requeued"
            if job.kind == "train":
                done = self.store.get_run(job.run_id).epoch
                reason += f" to resume from its last checkpoint ({done} epoch(s) done)"
            jobs.requeue(self.store, job, self.id, reason)
            self.log(f"job {job.id} interrupted by shutdown: requeued")
        else:
            jobs.finish(self.store, job, self.id, JobState.DONE, note=note)
            self.log(f"job {job.id} done" + (f": {note}" if note else ""))
        return jobs.get_job(self.store, job.id)

    def _save_traceback(self, job: Job, text: str) -> None:
        folder = self.store.run_dir(job.run_id)
        name = "traceback.txt" if job.kind == "train" else f"traceback-{job.kind}-{job.id}.txt"
        try:
            if folder.is_dir():
                atomic_write_text(folder / name, text)
        except OSError as exc:
            self.log(f"could not save the traceback of job {job.id}: {exc}")
        self.log(f"job {job.id} raised:\n{text.rstrip()}")

    def _mark_run_failed(self, run_id: str, error: str) -> None:
        try:
            if self.store.get_run(run_id).state != RunState.FAILED:
                self.store.set_state(run_id, RunState.FAILED, error)
        except RunNotFound:
            pass

    def _restore_run_state(self, job: Job) -> None:
        """Our late writes may have overwritten the state of a run another worker now owns."""
        if job.kind != "train":
            return
        now_job = jobs.get_job(self.store, job.id)
        if now_job.state == JobState.RUNNING:
            self.store.set_state(job.run_id, RunState.RUNNING)
        elif now_job.state == JobState.QUEUED:
            self.store.set_state(job.run_id, RunState.INTERRUPTED, now_job.error)

    # -- the loop

    def serve(self, once: bool = False, idle_exit: float | None = None) -> int:
        """Run jobs until shut down (or idle for `idle_exit` seconds, or after one job with `once`);
        returns how many jobs it ran."""
        self.register()
        self.log(f"serving {self.store.root} (pid {os.getpid()})")
        ran = 0
        check_every = max(0.5, min(self.stale_after / 2, 5.0))
        last_work = last_beat = time.monotonic()
        last_check = -float("inf")  # recover at once: jobs of workers that died before we started
        try:
            while not self.shutdown.is_set():
                try:
                    if time.monotonic() - last_check >= check_every:
                        self.recover()
                        last_check = time.monotonic()
                    job = self.step()
                except Exception as exc:  # the database was busy too long, a disk error, ...
                    self.log(f"error in the worker loop (going on): {type(exc).__name__}: {exc}")
                    self.shutdown.wait(self.poll)
                    continue
                if job is not None:
                    ran += 1
                    last_work = last_beat = time.monotonic()
                    if once:
                        break
                    continue
                if once and idle_exit is None:
                    self.log("the queue is empty")
                    break
                if idle_exit is not None and time.monotonic() - last_work >= idle_exit:
                    self.log(f"nothing to do for {idle_exit:g}s: exiting")
                    break
                if time.monotonic() - last_beat >= IDLE_BEAT_EVERY:
                    self.beat()
                    last_beat = time.monotonic()
                self.shutdown.wait(self.poll)
        finally:
            self.unregister()
            why = " (asked to stop)" if self.shutdown.is_set() else ""
            self.log(f"stopped after {ran} job(s){why}")
        return ran


def run_worker(results: str | os.PathLike | None = None, *, once: bool = False, idle_exit: float | None = None,
               stale_after: float = STALE_AFTER, poll: float = POLL_EVERY, batch_delay: float = 0.0) -> int:
    """The `worker` command: serve a results root until SIGTERM/SIGINT; returns how many jobs ran.

    The first SIGTERM or Ctrl+C stops the running job after its current batch and requeues it
    (its run resumes from the last checkpoint); a second Ctrl+C stops at once.
    """
    store = Store(results)
    worker = Worker(store, stale_after=stale_after, poll=poll, batch_delay=batch_delay)

    def on_signal(signum, frame):
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


# ---------------------------------------------------------------- starting one from the dashboard

_spawned: list[subprocess.Popen] = []  # kept so finished children are reaped, not left as zombies


def starting_worker_pid(results: str | os.PathLike | None = None) -> int | None:
    """The pid of the worker last started for ROOT while it is alive (it may not have registered yet)."""
    try:
        pid = int((results_root(results) / "worker.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) and _looks_like_worker(pid) else None


def ensure_worker(results: str | os.PathLike | None = None, extra_args: Sequence[str] = ()) -> int | None:
    """Start one detached `python -m engine worker --results ROOT` unless a live worker serves ROOT.

    Returns the new worker's pid, or None when one is alive (or still starting). A lock file in
    the root serialises callers (Streamlit reruns, several tabs, several processes), and the pid of
    the last worker started here is remembered, so two are never started. Its output goes to
    ROOT/worker.log.
    """
    root = results_root(results)
    root.mkdir(parents=True, exist_ok=True)
    for proc in _spawned[:]:
        if proc.poll() is not None:
            _spawned.remove(proc)
    with open(root / "worker.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        store = Store(root)
        try:
            if worker_status(store).alive:
                return None
        finally:
            store.close()
        if starting_worker_pid(root):
            return None  # started, still importing torch
        pid_file = root / "worker.pid"
        project = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (project, os.environ.get("PYTHONPATH")) if p))
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # the thread policy (engine.ml.threads), before torch loads
        with open(root / "worker.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "worker", "--results", str(root), "--slots", "auto", *extra_args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, close_fds=True)
        _spawned.append(proc)
        atomic_write_text(pid_file, f"{proc.pid}\n")
        return proc.pid
