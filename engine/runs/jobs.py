"""The job queue on SQLite, in the same database as the run registry, as a user and the pages see it.

A job is one unit of background work on a run: `train` (the run itself), or
`embed`, `project`, `index`, ... on a finished run. This module submits, cancels,
retries and lists jobs; what a worker does with one (claim, heartbeat, finish,
requeue) is engine.runs.claims. Every function takes `now` so tests need no clock patching.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from enum import Enum

from engine.config import TrainConfig
from engine.errors import JobError
from engine.model_files import pin
from engine.runs.records import RunKind, RunState
from engine.runs.store import Store, write_state


class JobKind(str, Enum):
    """The built-in kinds of work on a run; the worker's handler registry maps each to its handler."""

    TRAIN = "train"  # train the run (it makes a train run)
    EMBED = "embed"  # embed its images (it makes a pretrained extractor run)
    PROJECT = "project"  # a t-SNE or PCA map of its embeddings
    INDEX = "index"  # a FAISS index over its embeddings


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in ACTIVE_JOB_STATES


ACTIVE_JOB_STATES = (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class Progress:
    """How far a running job is: a training job by epoch and batch, any other by done of total."""

    epoch: int | None = None  # the epoch being trained (1-based), for train jobs
    batch: int = 0  # batches done in that epoch
    batches: int = 0  # batches per epoch
    done: int | None = None  # units of work done, for other jobs
    total: int = 0  # units of work in all
    stage: str = ""  # what is being done now, e.g. "embedding the test split"

    def to_json(self) -> dict:
        if self.epoch is not None:
            return {"epoch": self.epoch, "batch": self.batch, "batches": self.batches}
        if self.done is not None:
            return {"done": self.done, "total": self.total, "stage": self.stage}
        return {}

    @classmethod
    def from_json(cls, d: dict) -> Progress:
        if "epoch" in d:
            return cls(epoch=d["epoch"], batch=d.get("batch", 0), batches=d.get("batches", 0))
        if "total" in d:
            return cls(done=d.get("done", 0), total=d["total"], stage=d.get("stage", ""))
        return cls()

    @property
    def fraction(self) -> float | None:
        """Done of total in [0, 1] for non-training work; None for training (see the run's epochs)."""
        return min(1.0, self.done / self.total) if self.done is not None and self.total else None

    def describe(self) -> str:
        """' at epoch 2, batch 30/63', ' at 500/1000 (embedding the train split)', or ''."""
        if self.epoch is not None:
            return f" at epoch {self.epoch}, batch {self.batch}/{self.batches}"
        if self.done is not None:
            return f" at {self.done}/{self.total}" + (f" ({self.stage})" if self.stage else "")
        return ""


@dataclass
class Job:
    id: int
    kind: str
    run_id: str
    payload: dict
    state: JobState
    created: float
    claimed_at: float | None
    worker: str | None
    heartbeat: float | None
    cancel_requested: bool
    error: str | None
    progress: Progress
    finished_at: float | None = None
    attempts: int = 0
    note: str | None = None  # a finished job's one-line result, e.g. why its run diverged
    executor: str | None = None  # where its work ran: "local" (the worker's process) or "ray"
    node: str | None = None  # the host name (local) or the Ray node id in hex (ray); None until placed

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "run_id": self.run_id,
            "payload": self.payload,
            "state": self.state.value,
            "created": self.created,
            "claimed_at": self.claimed_at,
            "finished_at": self.finished_at,
            "worker": self.worker,
            "heartbeat": self.heartbeat,
            "cancel_requested": self.cancel_requested,
            "error": self.error,
            "progress": self.progress.to_json(),
            "attempts": self.attempts,
            "note": self.note,
            "executor": self.executor,
            "node": self.node,
        }


# ---------------------------------------------------------------- schema and rows


def job_from_row(row: sqlite3.Row) -> Job:
    d = dict(row)
    return Job(
        id=d["id"],
        kind=d["kind"],
        run_id=d["run_id"],
        payload=json.loads(d["payload"] or "{}"),
        state=JobState(d["state"]),
        created=d["created"],
        claimed_at=d["claimed_at"],
        worker=d["worker"],
        heartbeat=d["heartbeat"],
        cancel_requested=bool(d["cancel_requested"]),
        error=d["error"],
        progress=Progress.from_json(json.loads(d["progress"] or "{}")),
        finished_at=d["finished_at"],
        attempts=d["attempts"],
        note=d.get("note"),
        executor=d.get("executor"),
        node=d.get("node"),
    )


def now_or_time(now: float | None) -> float:
    return time.time() if now is None else now


# ---------------------------------------------------------------- submitting


def submit_job(store: Store, kind: str, run_id: str, payload: dict | None = None, now: float | None = None) -> int:
    """Queue a job of `kind` on an existing run; returns the job id."""
    if not kind or not isinstance(kind, str):
        raise JobError(f"a job kind must be a non-empty string, got {kind!r}")
    store.get_run(run_id)  # RunNotFound with a clear message
    with store.transaction() as c:
        return insert_job(c, kind, run_id, payload, now_or_time(now))


def insert_job(conn: sqlite3.Connection, kind: str, run_id: str, payload: dict | None, now: float) -> int:
    """Queue a job inside the caller's transaction (e.g. a search queueing a trial's run with it); its id."""
    cur = conn.execute(
        "INSERT INTO jobs (kind, run_id, payload, state, created) VALUES (?, ?, ?, ?, ?)",
        (kind, run_id, json.dumps(payload or {}, sort_keys=True), JobState.QUEUED.value, now),
    )
    return int(cur.lastrowid or 0)  # never 0: SQLite's rowids start at 1


def queue_train(store: Store, config: TrainConfig, sweep_id: str | None = None, now: float | None = None) -> str:
    """Create a queued run of `config` and its train job; returns the run id (no checks: see sweeps.submit)."""
    run_id = store.create_run(config, RunState.QUEUED, sweep_id=sweep_id, now=now)
    try:
        submit_job(store, JobKind.TRAIN, run_id, now=now)
    except BaseException:
        store.delete_run(run_id)  # never leave a queued run that no job will ever train
        raise
    return run_id


# ---------------------------------------------------------------- cancel and retry


def cancel(store: Store, run_id: str, now: float | None = None) -> str:
    """Cancel a run's queued or running jobs; returns what was done, in one line.

    A queued job leaves the queue at once (a queued train run becomes cancelled);
    a running job gets its cancel flag and stops after its current batch.
    """
    run = store.get_run(run_id)
    now = now_or_time(now)
    with store.transaction() as c:
        rows = c.execute(
            "SELECT * FROM jobs WHERE run_id = ? AND state IN (?, ?) ORDER BY id",
            (run_id, JobState.QUEUED.value, JobState.RUNNING.value),
        ).fetchall()
        jobs = [job_from_row(r) for r in rows]
        if not jobs:
            if run.kind == RunKind.TRACKED and run.state == RunState.RUNNING:
                raise JobError(
                    f"run {run_id} is recorded by a running script (engine.track); stop the script "
                    "itself (Ctrl+C where it runs)"
                )
            if run.state in (RunState.RUNNING, RunState.QUEUED):
                raise JobError(
                    f"run {run_id} is {run.state.value} but not on the queue (started with `train`"
                    " in the foreground?); stop it with Ctrl+C where it runs"
                )
            raise JobError(f"run {run_id} is {run.state.value}; nothing to cancel")
        said = []
        for job in jobs:
            if job.state == JobState.QUEUED:
                c.execute(
                    "UPDATE jobs SET state = ?, finished_at = ?, cancel_requested = 1,"
                    " error = 'cancelled before it started' WHERE id = ?",
                    (JobState.CANCELLED.value, now, job.id),
                )
                if job.kind == run.kind:  # the job that makes the run (train, or a pretrained extractor's embed)
                    kept = run.epoch
                    write_state(
                        c,
                        run_id,
                        RunState.CANCELLED,
                        f"cancelled while queued; {kept} finished epoch(s) kept"
                        if kept
                        else "cancelled before it started",
                        now,
                    )
                said.append(f"removed queued {job.kind} job {job.id} from the queue")
            else:
                c.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job.id,))
                said.append(f"asked running {job.kind} job {job.id} to stop after its current batch")
    return f"run {run_id}: " + "; ".join(said)


def retry(store: Store, run_id: str, now: float | None = None) -> str:
    """Queue the same config again as a new run (same sweep); returns the new run id."""
    run = store.get_run(run_id)
    if run.kind != RunKind.TRAIN:
        raise JobError(f"run {run_id} is a {run.kind!r} run; only train runs can be retried")
    # Its config passed every check when it was first queued; the worker says so if its data is gone since.
    # your own model: the file as it is now (its new hash), as a new run must record it
    return queue_train(store, pin(run.train_config()), run.sweep_id, now)


# ---------------------------------------------------------------- reading


def queue_length(store: Store) -> int:
    return store.conn.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (JobState.QUEUED.value,)).fetchone()[0]


def active_jobs(store: Store) -> list[Job]:
    """Running and queued jobs, running first, each in FIFO order."""
    rows = store.conn.execute(
        "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY state = ?, id",
        (JobState.QUEUED.value, JobState.RUNNING.value, JobState.QUEUED.value),
    )
    return [job_from_row(r) for r in rows]


def jobs_for_run(store: Store, run_id: str) -> list[Job]:
    rows = store.conn.execute("SELECT * FROM jobs WHERE run_id = ? ORDER BY id", (run_id,))
    return [job_from_row(r) for r in rows]


def where(executor: str | None, node: str | None) -> str:
    """Where a job's work ran, in a few words: the host name, or "ray node <id[:8]>"; "" when not known."""
    if not node:
        return ""
    return f"ray node {node[:8]}" if executor == "ray" else node


def trained_where(store: Store) -> dict[str, str]:
    """run id -> where its latest train job ran (see `where`), for the runs whose train job was placed."""
    rows = store.conn.execute(
        "SELECT run_id, executor, node FROM jobs WHERE kind = ? AND node IS NOT NULL ORDER BY id",
        (JobKind.TRAIN.value,),
    )
    return {row["run_id"]: where(row["executor"], row["node"]) for row in rows}


def get_job(store: Store, job_id: int) -> Job:
    row = store.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobError(f"no job {job_id} in {store.root}")
    return job_from_row(row)
