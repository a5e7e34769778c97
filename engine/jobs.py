"""The job queue on SQLite, in the same database as the run registry.

A job is one unit of background work on a run: `train` (the run itself), or
`embed`, `project`, `index`, ... on a finished run. Workers claim the oldest
queued job in one `BEGIN IMMEDIATE` transaction with a single
`UPDATE ... RETURNING`, so no job is ever claimed twice, even by several worker
processes on one results root. A running job carries its worker's heartbeat; a
job whose heartbeat went stale (its worker died) is requeued and its run resumes
from `checkpoint.pt`. Every function takes `now` so tests need no clock patching.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import sqlite3
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Sequence

from engine.config import ConfigError, TrainConfig
from engine.store import RunState, Store

STALE_AFTER = 30.0  # seconds without a heartbeat before a running job counts as abandoned

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- FIFO order
    kind TEXT NOT NULL,                     -- train, embed, project, index, ...
    run_id TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',     -- JSON: what the job needs beyond the run
    state TEXT NOT NULL,
    created REAL NOT NULL,
    claimed_at REAL,
    finished_at REAL,
    worker TEXT,                            -- id of the claiming worker
    heartbeat REAL,                         -- last sign of life of that worker on this job
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    note TEXT,                              -- what a finished job says about its result
    progress TEXT NOT NULL DEFAULT '{}',    -- JSON: {"epoch", "batch", "batches"} or {"done", "total", "stage"}
    attempts INTEGER NOT NULL DEFAULT 0     -- how many times it was claimed (more than 1 after a requeue)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    job_id INTEGER,                         -- the job it is running, if any
    stopped REAL                            -- set when it exits cleanly
);
"""


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in (JobState.QUEUED, JobState.RUNNING)


class JobError(ValueError):
    """A queue request that cannot be done (e.g. cancelling a finished run); the message says why."""


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
    progress: dict
    finished_at: float | None = None
    attempts: int = 0
    note: str | None = None  # a finished job's one-line result, e.g. why its run diverged

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "run_id": self.run_id, "payload": self.payload,
                "state": self.state.value, "created": self.created, "claimed_at": self.claimed_at,
                "finished_at": self.finished_at, "worker": self.worker, "heartbeat": self.heartbeat,
                "cancel_requested": self.cancel_requested, "error": self.error,
                "progress": self.progress, "attempts": self.attempts, "note": self.note}


# ---------------------------------------------------------------- schema and rows


def ensure_schema(store: Store) -> None:
    """Create the jobs and workers tables once per Store (idempotent)."""
    if getattr(store, "_jobs_schema", False):
        return
    if store.read_only:  # it cannot create tables; a file without them (runs made by `train`) gets empty stand-ins
        have = {row[0] for row in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"jobs", "workers"} <= have:
            store.conn.executescript(SCHEMA.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE IF NOT EXISTS"))
        store._jobs_schema = True
        return
    store.conn.executescript(SCHEMA)
    columns = {row[1] for row in store.conn.execute("PRAGMA table_info(jobs)")}
    if "note" not in columns:  # a database from before the column existed
        store.conn.execute("ALTER TABLE jobs ADD COLUMN note TEXT")
    store._jobs_schema = True


def job_from_row(row: sqlite3.Row) -> Job:
    d = dict(row)
    return Job(id=d["id"], kind=d["kind"], run_id=d["run_id"], payload=json.loads(d["payload"] or "{}"),
               state=JobState(d["state"]), created=d["created"], claimed_at=d["claimed_at"],
               worker=d["worker"], heartbeat=d["heartbeat"], cancel_requested=bool(d["cancel_requested"]),
               error=d["error"], progress=json.loads(d["progress"] or "{}"),
               finished_at=d["finished_at"], attempts=d["attempts"], note=d.get("note"))


def _now(now: float | None) -> float:
    return time.time() if now is None else now


# ---------------------------------------------------------------- submitting


def submit_job(store: Store, kind: str, run_id: str, payload: dict | None = None,
               now: float | None = None) -> int:
    """Queue a job of `kind` on an existing run; returns the job id."""
    ensure_schema(store)
    if not kind or not isinstance(kind, str):
        raise JobError(f"a job kind must be a non-empty string, got {kind!r}")
    store.get_run(run_id)  # RunNotFound with a clear message
    with store.transaction() as c:
        cur = c.execute("INSERT INTO jobs (kind, run_id, payload, state, created) VALUES (?, ?, ?, ?, ?)",
                        (kind, run_id, json.dumps(payload or {}, sort_keys=True), JobState.QUEUED.value,
                         _now(now)))
        return int(cur.lastrowid)


def submit(store: Store, config: TrainConfig, *, sweep_id: str | None = None, now: float | None = None) -> str:
    """Validate `config` exactly like `train` does, create its queued run and a train job; returns the run id."""
    from engine.train import preflight

    preflight(config)
    return _queue_train(store, config, sweep_id, now)


def _queue_train(store: Store, config: TrainConfig, sweep_id: str | None, now: float | None) -> str:
    ensure_schema(store)
    run_id = store.create_run(config, RunState.QUEUED, sweep_id=sweep_id, now=now)
    try:
        submit_job(store, "train", run_id, now=now)
    except BaseException:
        store.delete_run(run_id)  # never leave a queued run that no job will ever train
        raise
    return run_id


SWEEPABLE = ("arch", "dataset", "batch_size", "lr", "epochs", "optimizer", "seed")
MAX_SWEEP_RUNS = 100  # runs in one grid unless the caller raises it (sweep --max-runs); more is likely a typo


def sweep_grid(base: TrainConfig, max_runs: int = MAX_SWEEP_RUNS, **lists: Sequence[Any]) -> list[TrainConfig]:
    """Every combination of the listed values over `base`, in a stable order, duplicates dropped.

    sweep_grid(base, lr=[0.1, 0.01], batch_size=[32, 64]) -> 4 configs. A grid of more than
    `max_runs` combinations is refused before any of it is built.
    """
    for name, values in lists.items():
        if name not in SWEEPABLE:
            raise ConfigError(f"cannot sweep over {name!r}; sweepable fields: {', '.join(SWEEPABLE)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ConfigError(f"sweep values for {name} must be a list, got {values!r}")
        if len(list(values)) == 0:
            raise ConfigError(f"sweep values for {name} are empty; give at least one value")
    names = list(lists)
    count = math.prod(len(list(lists[n])) for n in names)
    if count > max_runs:
        raise ConfigError(f"that grid has {count:,} runs, over the limit of {max_runs:,} runs per sweep; "
                          f"give fewer values (the command line's --max-runs raises the limit)")
    seen, grid = set(), []
    for combo in itertools.product(*(list(lists[n]) for n in names)):
        config = base.replace(**dict(zip(names, combo)))
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            grid.append(config)
    return grid


def new_sweep_id(now: float | None = None) -> str:
    return "sweep-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime(_now(now))) + "-" + secrets.token_hex(2)


@dataclass
class PlannedRun:
    config: TrainConfig
    reuse: str | None = None  # a finished run with the identical config, when reusing


def plan_sweep(store: Store, configs: Sequence[TrainConfig], reuse: bool = False) -> list[PlannedRun]:
    """Validate every config (preflight) and find reusable finished runs; queues nothing.

    A bad config raises ConfigError/DatasetError/ModelError naming its position and values.
    """
    from engine.data import DatasetError
    from engine.models import ModelError
    from engine.train import preflight

    if not configs:
        raise ConfigError("a sweep needs at least one configuration")
    plan = []
    for i, config in enumerate(configs, start=1):
        try:
            preflight(config)
        except (ConfigError, DatasetError, ModelError) as exc:
            what = ", ".join(f"{k}={getattr(config, k)}" for k in SWEEPABLE)
            raise type(exc)(f"sweep config {i} of {len(configs)} ({what}): {exc}") from None
        plan.append(PlannedRun(config, find_finished(store, config) if reuse else None))
    return plan


def submit_sweep(store: Store, configs: Sequence[TrainConfig], reuse: bool = False,
                 now: float | None = None) -> tuple[str, list[str]]:
    """Queue `configs` as one sweep; returns (sweep_id, run_ids in config order).

    With reuse=True a config identical to a finished (done) run is not retrained:
    that run's id is returned in its place (it keeps its own sweep id).
    """
    plan = plan_sweep(store, configs, reuse)
    sweep_id = new_sweep_id(now)
    run_ids = [p.reuse or _queue_train(store, p.config, sweep_id, now) for p in plan]
    return sweep_id, run_ids


def reuse_key(config: TrainConfig) -> dict:
    """What makes two configs train the same run: the data root counts only for the datasets read
    from it, and as an absolute path (the CLI and the dashboard may spell it differently)."""
    values = config.to_dict()
    if config.dataset in ("mnist", "fashion_mnist", "cifar10"):
        values["data_root"] = str(Path(config.data_root).expanduser().resolve())
    else:
        values.pop("data_root")
    return values


def find_finished(store: Store, config: TrainConfig) -> str | None:
    """The newest done train run whose config trains the same run as `config`, with its model on disk."""
    key = reuse_key(config)
    rows = store.conn.execute("SELECT id, config FROM runs WHERE kind = 'train' AND state = ? AND arch = ?"
                              " AND dataset = ? ORDER BY id DESC",
                              (RunState.DONE.value, config.arch, config.dataset)).fetchall()
    for row in rows:
        if (reuse_key(TrainConfig.from_dict(json.loads(row["config"]))) == key
                and (store.run_dir(row["id"]) / "model.pt").exists()):
            return row["id"]
    return None


# ---------------------------------------------------------------- cancel and retry


def cancel(store: Store, run_id: str, now: float | None = None) -> str:
    """Cancel a run's queued or running jobs; returns what was done, in one line.

    A queued job leaves the queue at once (a queued train run becomes cancelled);
    a running job gets its cancel flag and stops after its current batch.
    """
    ensure_schema(store)
    run = store.get_run(run_id)
    now = _now(now)
    with store.transaction() as c:
        rows = c.execute("SELECT * FROM jobs WHERE run_id = ? AND state IN (?, ?) ORDER BY id",
                         (run_id, JobState.QUEUED.value, JobState.RUNNING.value)).fetchall()
        jobs = [job_from_row(r) for r in rows]
        if not jobs:
            if run.state in (RunState.RUNNING, RunState.QUEUED):
                raise JobError(f"run {run_id} is {run.state.value} but not on the queue (started with `train`"
                               " in the foreground?); stop it with Ctrl+C where it runs")
            raise JobError(f"run {run_id} is {run.state.value}; nothing to cancel")
        said = []
        for job in jobs:
            if job.state == JobState.QUEUED:
                c.execute("UPDATE jobs SET state = ?, finished_at = ?, cancel_requested = 1,"
                          " error = 'cancelled before it started' WHERE id = ?",
                          (JobState.CANCELLED.value, now, job.id))
                if job.kind == run.kind:  # the job that makes the run (train, or a pretrained extractor's embed)
                    kept = run.epoch
                    c.execute("UPDATE runs SET state = ?, error = ?, updated = ? WHERE id = ?",
                              (RunState.CANCELLED.value,
                               f"cancelled while queued; {kept} finished epoch(s) kept" if kept
                               else "cancelled before it started", now, run_id))
                said.append(f"removed queued {job.kind} job {job.id} from the queue")
            else:
                c.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job.id,))
                said.append(f"asked running {job.kind} job {job.id} to stop after its current batch")
    return f"run {run_id}: " + "; ".join(said)


def retry(store: Store, run_id: str, now: float | None = None) -> str:
    """Queue the same config again as a new run (same sweep); returns the new run id."""
    run = store.get_run(run_id)
    if run.kind != "train":
        raise JobError(f"run {run_id} is a {run.kind!r} run; only train runs can be retried")
    return submit(store, run.train_config(), sweep_id=run.sweep_id, now=now)


# ---------------------------------------------------------------- the worker's side


def claim(store: Store, worker_id: str, now: float | None = None) -> Job | None:
    """Atomically take the oldest queued job for `worker_id`, or None when the queue is empty."""
    ensure_schema(store)
    now = _now(now)
    if store.conn.execute("SELECT 1 FROM jobs WHERE state = ? LIMIT 1", (JobState.QUEUED.value,)).fetchone() is None:
        return None  # a plain read first: an idle worker polling never takes the write lock
    with store.transaction() as c:
        row = c.execute(
            "UPDATE jobs SET state = ?, claimed_at = ?, worker = ?, heartbeat = ?, attempts = attempts + 1,"
            " progress = '{}' WHERE id = (SELECT id FROM jobs WHERE state = ? ORDER BY id LIMIT 1)"
            " RETURNING *",
            (JobState.RUNNING.value, now, worker_id, now, JobState.QUEUED.value)).fetchone()
        if row is None:
            return None
        job = job_from_row(row)
        if job.kind == "train":
            c.execute("UPDATE runs SET state = ?, error = NULL, updated = ? WHERE id = ?",
                      (RunState.RUNNING.value, now, job.run_id))
        c.execute("UPDATE workers SET job_id = ?, heartbeat = ? WHERE id = ?", (job.id, now, worker_id))
    return job


def heartbeat(conn: sqlite3.Connection, job_id: int, worker_id: str, progress: dict | None = None,
              now: float | None = None) -> bool | None:
    """Record that `worker_id` still runs `job_id` (and its progress).

    Returns the job's cancel flag, or None when the job is no longer this worker's
    (it was requeued as stale, or cancelled while queued): the worker must drop it.
    Takes a bare connection so a worker's heartbeat thread can use its own.
    """
    now = _now(now)
    if progress is None:
        row = conn.execute("UPDATE jobs SET heartbeat = ? WHERE id = ? AND worker = ? AND state = ?"
                           " RETURNING cancel_requested", (now, job_id, worker_id, JobState.RUNNING.value)).fetchone()
    else:
        row = conn.execute("UPDATE jobs SET heartbeat = ?, progress = ? WHERE id = ? AND worker = ? AND state = ?"
                           " RETURNING cancel_requested",
                           (now, json.dumps(progress, sort_keys=True), job_id, worker_id,
                            JobState.RUNNING.value)).fetchone()
    conn.execute("UPDATE workers SET heartbeat = ? WHERE id = ?", (now, worker_id))
    return None if row is None else bool(row[0])


def finish(store: Store, job: Job, worker_id: str, state: JobState, error: str | None = None,
           now: float | None = None, note: str | None = None) -> bool:
    """Mark a claimed job finished; False when it was no longer this worker's."""
    now = _now(now)
    with store.transaction() as c:
        cur = c.execute("UPDATE jobs SET state = ?, error = ?, note = ?, finished_at = ?, heartbeat = ?"
                        " WHERE id = ? AND worker = ? AND state = ?",
                        (JobState(state).value, error, note, now, now, job.id, worker_id, JobState.RUNNING.value))
        c.execute("UPDATE workers SET job_id = NULL, heartbeat = ? WHERE id = ?", (now, worker_id))
        return cur.rowcount == 1


def requeue(store: Store, job: Job, worker_id: str, reason: str, now: float | None = None) -> bool:
    """Put a job this worker holds back on the queue (its run becomes interrupted); False if it was not ours."""
    now = _now(now)
    with store.transaction() as c:
        ours = c.execute("SELECT 1 FROM jobs WHERE id = ? AND worker = ? AND state = ?",
                         (job.id, worker_id, JobState.RUNNING.value)).fetchone() is not None
        if ours:
            _back_on_queue(c, job, reason, now)
        c.execute("UPDATE workers SET job_id = NULL, heartbeat = ? WHERE id = ?", (now, worker_id))
        return ours


def _back_on_queue(c: sqlite3.Connection, job: Job, reason: str, now: float) -> None:
    """Inside a transaction: the job is queued again, and the run it makes becomes interrupted."""
    c.execute("UPDATE jobs SET state = ?, worker = NULL, claimed_at = NULL, heartbeat = NULL,"
              " progress = '{}', error = ? WHERE id = ?", (JobState.QUEUED.value, reason, job.id))
    _set_made_run(c, job, RunState.INTERRUPTED, reason, now)


def _set_made_run(c: sqlite3.Connection, job: Job, state: RunState, error: str, now: float) -> None:
    """Set the state of the run this job makes (a train job's run, a pretrained extractor's embed job's
    run); a job that only adds to a run (embed, project, index on a trained run) leaves it alone."""
    c.execute("UPDATE runs SET state = ?, error = ?, batch = 0, updated = ? WHERE id = ? AND kind = ?",
              (state.value, error, now, job.run_id, job.kind))


def requeue_stale(store: Store, now: float | None = None, stale_after: float = STALE_AFTER,
                  dead_workers: Iterable[str] = ()) -> list[Job]:
    """Requeue running jobs whose heartbeat is older than `stale_after` seconds, or whose worker is
    known dead; their train runs become `interrupted` and resume from their checkpoint when claimed
    again. A stale job that was asked to cancel is cancelled instead. Returns the jobs handled."""
    ensure_schema(store)
    now = _now(now)
    dead = list(dead_workers)
    cutoff = now - stale_after
    handled = []
    with store.transaction() as c:
        sql = "SELECT * FROM jobs WHERE state = ? AND (heartbeat IS NULL OR heartbeat < ?"
        args: list[Any] = [JobState.RUNNING.value, cutoff]
        if dead:
            sql += f" OR worker IN ({','.join('?' * len(dead))})"
            args += dead
        for row in c.execute(sql + ") ORDER BY id", args).fetchall():
            job = job_from_row(row)
            if job.cancel_requested:
                c.execute("UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE id = ?",
                          (JobState.CANCELLED.value, now, "cancelled (its worker stopped)", job.id))
                _set_made_run(c, job, RunState.CANCELLED, "cancelled; its worker stopped before it did", now)
                job.state = JobState.CANCELLED
            else:
                _back_on_queue(c, job, f"worker {job.worker} stopped responding; requeued to resume from its "
                                       "last checkpoint", now)
                job.state = JobState.QUEUED
            handled.append(job)
        if handled:
            c.execute(f"UPDATE workers SET job_id = NULL WHERE job_id IN ({','.join('?' * len(handled))})",
                      [j.id for j in handled])
    return handled


# ---------------------------------------------------------------- reading


def queue_length(store: Store) -> int:
    ensure_schema(store)
    return store.conn.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (JobState.QUEUED.value,)).fetchone()[0]


def active_jobs(store: Store) -> list[Job]:
    """Running and queued jobs, running first, each in FIFO order."""
    ensure_schema(store)
    rows = store.conn.execute("SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY state = ?, id",
                              (JobState.QUEUED.value, JobState.RUNNING.value, JobState.QUEUED.value))
    return [job_from_row(r) for r in rows]


def jobs_for_run(store: Store, run_id: str) -> list[Job]:
    ensure_schema(store)
    rows = store.conn.execute("SELECT * FROM jobs WHERE run_id = ? ORDER BY id", (run_id,))
    return [job_from_row(r) for r in rows]


def get_job(store: Store, job_id: int) -> Job:
    ensure_schema(store)
    row = store.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobError(f"no job {job_id} in {store.root}")
    return job_from_row(row)


__all__ = [
    "STALE_AFTER", "Job", "JobError", "JobState", "PlannedRun", "active_jobs", "cancel",
    "claim", "ensure_schema", "find_finished", "finish", "get_job", "heartbeat", "jobs_for_run",
    "plan_sweep", "queue_length", "requeue", "requeue_stale", "retry", "submit", "submit_job",
    "submit_sweep", "sweep_grid",
]
