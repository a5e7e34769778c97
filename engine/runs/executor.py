"""Executors: where a claimed job's work happens, and the context that connects it to the queue.

The worker loop claims a job and hands it, with its handler and a `JobContext`, to an executor.
Cancel, heartbeat and progress flow through the context whatever the executor: a heartbeat thread
(its own database connection) writes the job's heartbeat and `Progress` every second and reads its
cancel flag, so the work itself only checks plain attributes between batches. `LocalExecutor` runs
the handler in this process; an executor that runs it elsewhere (a Ray task) implements the same
`Executor` protocol and leaves the loop as it is. An executor runs up to `slots` jobs at once (the
worker gives each its own thread and context) and records where each one's work runs (`claims.place`).
A train job's handler trains through `ctx.fit`: `engine.ml.train.fit` here, a remote trial with
the same signature under Ray, so the handler and its hooks stay on the worker either way.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from engine.ml.train import fit
from engine.runs import claims
from engine.runs.database import connect
from engine.runs.jobs import Job, Progress
from engine.runs.procs import HOST
from engine.runs.store import Store

Log = Callable[[str], None]


class Pulse:
    """The heartbeat thread of one running job: writes heartbeat + progress, reads the cancel flag."""

    def __init__(self, db_path: Path, job: Job, worker_id: str, every: float, log: Log):
        self.db_path, self.job, self.worker_id, self.every, self.log = db_path, job, worker_id, every, log
        self.progress = Progress()
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
                    flag = claims.heartbeat(conn, self.job.id, self.worker_id, self.progress)
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
    pulse: Pulse
    shutdown: threading.Event  # set when the worker is asked to stop: the job is requeued
    download: bool = False  # a missing dataset or weights file may be downloaded (Settings.download)
    batch_delay: float = 0.0  # seconds to sleep after each training batch (slows runs down for tests and demos)
    stopped: str | None = field(default=None)  # why should_stop() first said True: cancel, shutdown or lost
    fit: Callable = fit  # how a train job trains: engine.ml.train.fit, or an executor's remote trial (same signature)
    requeue: str | None = None  # set by an executor that lost the job's node: why the job goes back on the queue

    def progress(self, done: int, total: int, stage: str = "") -> None:
        self.pulse.progress = Progress(done=done, total=total, stage=stage)

    def train_batch(self, epoch: int, batch: int, batches: int) -> None:
        self.pulse.progress = Progress(epoch=epoch, batch=batch, batches=batches)
        if self.batch_delay > 0:
            time.sleep(self.batch_delay)

    def stop_reason(self) -> str | None:
        if self.pulse.lost:
            return "lost"
        if self.pulse.cancel:
            return "cancel"
        if self.shutdown.is_set():
            return "shutdown"
        return None

    def should_stop(self) -> bool:
        reason = self.stop_reason()
        if reason and self.stopped is None:
            self.stopped = reason
        return reason is not None


JobFn = Callable[[Store, Job, JobContext], "str | None"]


class Executor(Protocol):
    """Runs one claimed job's work to its end; raises what the work raised."""

    name: str  # "local", "ray", ...

    @property
    def slots(self) -> int:
        """How many jobs it runs at once now (the worker claims while one is free)."""
        ...

    def node(self) -> str:
        """Where this process runs (a host name, a Ray node id)."""
        ...

    def execute(self, fn: JobFn, store: Store, job: Job, ctx: JobContext) -> str | None: ...


class LocalExecutor:
    """Runs the handler in this process, in the worker's own thread."""

    name = "local"
    slots = 1  # one job at a time: a second would only share the same cores

    def node(self) -> str:
        return HOST

    def execute(self, fn: JobFn, store: Store, job: Job, ctx: JobContext) -> str | None:
        claims.place(store, job.id, ctx.pulse.worker_id, self.name, HOST)
        return fn(store, job, ctx)
