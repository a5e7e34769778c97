"""The results root: the SQLite registry of runs, jobs and workers, and one folder per run.

The database (`lensboard.sqlite3`, WAL mode) is the single source of truth for run state;
this module owns its schema and is the only one that writes the `runs` table (the queue
calls the functions here that take a connection, inside its own transactions). Each run
has a folder `runs/<run_id>/` whose files `engine.files.RunPaths` names.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator

from engine.config import TrainConfig
from engine.errors import ConfigError, ResultsError, RunNotFound
from engine.files import RunPaths, atomic_write_json, read_metrics

DB_NAME = "lensboard.sqlite3"


class RunState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"  # the loss became NaN, infinite or huge
    INTERRUPTED = "interrupted"  # its worker (or foreground command) died; requeued to resume

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES

    @property
    def active(self) -> bool:
        """Waiting, training, or about to resume: the pages keep refreshing while a run is active."""
        return self in ACTIVE_STATES


FINISHED_STATES = frozenset({RunState.DONE, RunState.FAILED, RunState.CANCELLED, RunState.DIVERGED})
ACTIVE_STATES = frozenset({RunState.QUEUED, RunState.RUNNING, RunState.INTERRUPTED})


class RunKind(str, Enum):
    """What made a run: a training run, a pretrained feature extractor (its embed job makes it), or a script."""

    TRAIN = "train"
    EMBED = "embed"
    TRACKED = "tracked"  # recorded by a user's own training script (engine.track): a free-form config


# ---------------------------------------------------------------- the registry

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    state TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'train',
    dataset TEXT NOT NULL,
    arch TEXT NOT NULL,
    config TEXT NOT NULL,
    sweep_id TEXT,
    error TEXT,
    epochs INTEGER NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,       -- epochs finished
    batch INTEGER NOT NULL DEFAULT 0,       -- batches done in the current epoch
    batches INTEGER NOT NULL DEFAULT 0,     -- batches per epoch
    final_test_acc REAL,
    best_test_acc REAL,
    final_test_loss REAL,
    sec_per_epoch REAL
);
CREATE INDEX IF NOT EXISTS runs_state ON runs(state);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- FIFO order
    kind TEXT NOT NULL,                     -- a JobKind: train, embed, project, index
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
    progress TEXT NOT NULL DEFAULT '{}',    -- JSON of a jobs.Progress
    executor TEXT,                          -- where its work ran: 'local' (the worker's process) or 'ray'
    node TEXT,                              -- the host name (local) or the Ray node id in hex (ray)
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


@dataclass
class RunRecord:
    id: str
    created: float
    updated: float
    state: RunState
    kind: str
    dataset: str
    arch: str
    config: dict
    sweep_id: str | None
    error: str | None
    epochs: int
    epoch: int
    batch: int
    batches: int
    final_test_acc: float | None
    best_test_acc: float | None
    final_test_loss: float | None
    sec_per_epoch: float | None
    path: Path

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.path)

    @property
    def progress(self) -> float:
        """Fraction of all batches of all epochs done, in [0, 1]."""
        if self.state == RunState.DONE:
            return 1.0
        if self.epochs <= 0:
            return 0.0
        within = self.batch / self.batches if self.batches else 0.0
        return min(1.0, (self.epoch + within) / self.epochs)

    def train_config(self) -> TrainConfig:
        if self.kind == RunKind.TRACKED.value:  # its config is whatever the script passed
            raise ConfigError(f"run {self.id} was recorded by a script (engine.track): Lensboard has no training "
                              f"config or model for it, only its hyperparameters and metrics")
        return TrainConfig.from_dict(self.config)

    def to_json(self) -> dict:
        return {
            "id": self.id, "state": self.state.value, "kind": self.kind, "path": str(self.path),
            "created": self.created, "updated": self.updated, "dataset": self.dataset, "arch": self.arch,
            "epochs": self.epochs, "batch_size": self.config.get("batch_size"), "lr": self.config.get("lr"),
            "optimizer": self.config.get("optimizer"), "sweep_id": self.sweep_id, "error": self.error,
            "progress": {"epoch": self.epoch, "batch": self.batch, "batches": self.batches,
                         "fraction": round(self.progress, 4)},
            "test_acc": self.final_test_acc, "best_test_acc": self.best_test_acc,
            "test_loss": self.final_test_loss, "sec_per_epoch": self.sec_per_epoch,
        }


def new_run_id(now: float | None = None) -> str:
    """Sorts by creation time; safe as a folder name: 20261122-004724-123456-1a2b."""
    now = time.time() if now is None else now
    micro = int(round((now % 1) * 1e6)) % 1_000_000
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{micro:06d}-{secrets.token_hex(2)}"


def connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Store:
    """One results root: the database plus one folder per run."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.runs_dir = self.root / "runs"
        self.db_path = self.root / DB_NAME
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self.conn = connect(self.db_path)
            self.conn.executescript(SCHEMA)
            columns = {row[1] for row in self.conn.execute("PRAGMA table_info(jobs)")}
            if "note" not in columns:  # a database from before the column existed
                self.conn.execute("ALTER TABLE jobs ADD COLUMN note TEXT")
            for column in ("executor", "node"):  # a database from before jobs recorded where they ran
                if column not in columns:
                    self.conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")
        except (OSError, sqlite3.DatabaseError) as exc:
            raise ResultsError(
                f"cannot use {self.root} as the results root ({exc}): it must be a writable folder, "
                f"holding a Lensboard database {DB_NAME} or none yet; pass another with --results"
            ) from None

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: one writer at a time, across processes."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def paths(self, run_id: str) -> RunPaths:
        return RunPaths(self.run_dir(run_id))

    # -- writing

    def create_run(self, config: TrainConfig, state: RunState = RunState.QUEUED, *, kind: RunKind = RunKind.TRAIN,
                   sweep_id: str | None = None, now: float | None = None) -> str:
        now = time.time() if now is None else now
        run_id = new_run_id(now)
        paths = self.paths(run_id)
        paths.dir.mkdir(parents=True)
        atomic_write_json(paths.config, config.to_dict())
        with self.transaction() as c:
            c.execute(
                "INSERT INTO runs (id, created, updated, state, kind, dataset, arch, config, sweep_id, epochs)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, now, now, RunState(state).value, RunKind(kind).value, config.dataset, config.arch,
                 json.dumps(config.to_dict(), sort_keys=True), sweep_id, config.epochs),
            )
        return run_id

    def set_state(self, run_id: str, state: RunState, error: str | None = None, now: float | None = None) -> None:
        write_state(self.conn, run_id, state, error, time.time() if now is None else now)

    def set_progress(self, run_id: str, epoch: int, batch: int, batches: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.conn.execute("UPDATE runs SET epoch = ?, batch = ?, batches = ?, updated = ? WHERE id = ?",
                          (epoch, batch, batches, now, run_id))

    def record_epoch(self, run_id: str, row: dict, now: float | None = None) -> None:
        """Summary columns after an epoch, so listing runs never reads metrics files."""
        now = time.time() if now is None else now
        self.conn.execute(
            "UPDATE runs SET epoch = ?, batch = 0, final_test_acc = ?, final_test_loss = ?,"
            " best_test_acc = MAX(COALESCE(best_test_acc, 0), ?),"
            " sec_per_epoch = (COALESCE(sec_per_epoch, 0) * (? - 1) + ?) / ?, updated = ? WHERE id = ?",
            (row["epoch"], row["test_acc"], row["test_loss"], row["test_acc"],
             row["epoch"], row["seconds"], row["epoch"], now, run_id),
        )

    def reset_summary(self, run_id: str, rows: list[dict]) -> None:
        """Rebuild the summary columns from metrics rows (after a resume or a retry)."""
        self.conn.execute("UPDATE runs SET epoch = 0, batch = 0, final_test_acc = NULL, final_test_loss = NULL,"
                          " best_test_acc = NULL, sec_per_epoch = NULL WHERE id = ?", (run_id,))
        for row in rows:
            self.record_epoch(run_id, row)

    def create_tracked_run(self, config: dict, *, dataset: str, arch: str, epochs: int,
                           now: float | None = None) -> str:
        """A running run (kind 'tracked') for a user's own training script; `config` is free-form."""
        now = time.time() if now is None else now
        run_id = new_run_id(now)
        paths = self.paths(run_id)
        paths.dir.mkdir(parents=True)
        atomic_write_json(paths.config, config)
        with self.transaction() as c:
            c.execute("INSERT INTO runs (id, created, updated, state, kind, dataset, arch, config, epochs)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (run_id, now, now, RunState.RUNNING.value, RunKind.TRACKED.value, dataset, arch,
                       json.dumps(config, sort_keys=True), epochs))
        return run_id

    def set_summary(self, run_id: str, *, epoch: int, final_test_acc: float | None, best_test_acc: float | None,
                    final_test_loss: float | None, sec_per_epoch: float | None, now: float | None = None) -> None:
        """Set the summary columns as a caller computed them (a tracked script's epochs)."""
        now = time.time() if now is None else now
        self.conn.execute("UPDATE runs SET epoch = ?, batch = 0, final_test_acc = ?, best_test_acc = ?,"
                          " final_test_loss = ?, sec_per_epoch = ?, updated = ? WHERE id = ?",
                          (epoch, final_test_acc, best_test_acc, final_test_loss, sec_per_epoch, now, run_id))

    def set_state_if(self, run_id: str, expected: RunState, state: RunState, error: str | None = None,
                     now: float | None = None) -> bool:
        """Set the state only while it is still `expected`; True when it was set."""
        now = time.time() if now is None else now
        cur = self.conn.execute("UPDATE runs SET state = ?, error = ?, updated = ? WHERE id = ? AND state = ?",
                                (RunState(state).value, error, now, run_id, RunState(expected).value))
        return cur.rowcount == 1

    def delete_run(self, run_id: str) -> None:
        self.conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # -- reading

    def _record(self, row: sqlite3.Row) -> RunRecord:
        d = dict(row)
        d["state"] = RunState(d["state"])
        d["config"] = json.loads(d["config"])
        return RunRecord(**d, path=self.run_dir(d["id"]))

    def has_run(self, run_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None

    def get_run(self, run_id: str) -> RunRecord:
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.root}")
        return self._record(row)

    def resolve(self, ref: str) -> RunRecord:
        """A run by id, or by its folder path."""
        candidate = Path(ref).expanduser()
        run_id = candidate.name if (candidate.is_dir() or os.sep in ref) else ref
        try:
            return self.get_run(run_id)
        except RunNotFound:
            raise RunNotFound(f"no run {ref!r} in {self.root}; `python -m engine list` shows the runs") from None

    def list_runs(self, states: list[RunState] | None = None, kind: str | None = None) -> list[RunRecord]:
        sql, args = "SELECT * FROM runs", []
        where = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += [RunState(s).value for s in states]
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [self._record(r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def metrics(self, run_id: str) -> list[dict]:
        return read_metrics(self.paths(run_id).metrics)

    def find_done(self, arch: str, dataset: str, matches: Callable[[TrainConfig], bool]) -> str | None:
        """The newest done train run of `arch` on `dataset` whose config `matches` and whose model is on disk."""
        rows = self.conn.execute("SELECT id, config FROM runs WHERE kind = ? AND state = ? AND arch = ?"
                                 " AND dataset = ? ORDER BY id DESC",
                                 (RunKind.TRAIN.value, RunState.DONE.value, arch, dataset)).fetchall()
        for row in rows:
            if matches(TrainConfig.from_dict(json.loads(row["config"]))) and self.paths(row["id"]).model.exists():
                return row["id"]
        return None

    def running_without_jobs(self, kind: RunKind, active_job_states: tuple[str, ...]) -> list[str]:
        """Ids of `running` runs of `kind` that no queued or running job makes (e.g. a foreground `train`)."""
        marks = ",".join("?" * len(active_job_states))
        rows = self.conn.execute(
            f"SELECT id FROM runs WHERE state = ? AND kind = ? AND id NOT IN"
            f" (SELECT run_id FROM jobs WHERE state IN ({marks}))",
            (RunState.RUNNING.value, RunKind(kind).value, *active_job_states)).fetchall()
        return [row["id"] for row in rows]


# ---------------------------------------------------------------- writes inside a caller's transaction


def write_state(conn: sqlite3.Connection, run_id: str, state: RunState, error: str | None, now: float, *,
                kind: str | None = None, reset_batch: bool = False) -> None:
    """Set a run's state and error; with `kind`, only when the run is of that kind (the run a job makes:
    a train job's run, a pretrained extractor's embed job's run)."""
    sql = "UPDATE runs SET state = ?, error = ?, updated = ?" + (", batch = 0" if reset_batch else "")
    sql += " WHERE id = ?" + (" AND kind = ?" if kind is not None else "")
    args = [RunState(state).value, error, now, run_id] + ([kind] if kind is not None else [])
    conn.execute(sql, args)


def root_of_run_folder(ref: str) -> Path | None:
    """The results root a run folder path (<root>/runs/<id>) lives in; None when `ref` is not one."""
    folder = Path(ref).expanduser()
    if folder.is_dir() and (folder.parent.parent / DB_NAME).is_file():
        return folder.parent.parent.resolve()
    return None


def set_worker_job(conn: sqlite3.Connection, worker_id: str, job_id: int | None, now: float) -> None:
    """The job a worker now runs (None: idle), with a heartbeat, inside the queue's transaction."""
    conn.execute("UPDATE workers SET job_id = ?, heartbeat = ? WHERE id = ?", (job_id, now, worker_id))
