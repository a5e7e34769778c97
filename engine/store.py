"""The results root: run folders, atomic writes, append-only metrics, and the SQLite registry.

The database (`lensboard.sqlite3`, WAL mode) is the single source of truth for
run state. Each run has a folder `runs/<run_id>/` holding `config.json` (written
once), `metrics.jsonl` (one flushed line per finished epoch) and the checkpoints.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

from engine.config import ConfigError, TrainConfig

DB_NAME = "lensboard.sqlite3"
RESULTS_ENV = "LENSBOARD_RESULTS"
TRACKED_KIND = "tracked"  # runs table kind of a run recorded by a user's own script (engine.track)


class RunState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in (RunState.DONE, RunState.FAILED, RunState.CANCELLED, RunState.DIVERGED)


class RunNotFound(LookupError):
    pass


class ResultsError(RuntimeError):
    """The results root cannot be used (not a folder, not writable, not a Lensboard database)."""


def results_root(arg: str | os.PathLike | None = None) -> Path:
    """--results, else $LENSBOARD_RESULTS, else ./results."""
    return Path(arg or os.environ.get(RESULTS_ENV) or "results").expanduser().resolve()


# ---------------------------------------------------------------- atomic files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_numpy_save(path: Path, array) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- metrics


def append_metrics(path: Path, row: dict) -> None:
    """Append one complete JSON line and flush it; readers never see half a line as data."""
    line = json.dumps(row, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_metrics(path: Path) -> list[dict]:
    """Every complete line of a metrics file; a partial or corrupt last line is skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    rows = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line still being written
    return rows


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
    def progress(self) -> float:
        """Fraction of all batches of all epochs done, in [0, 1]."""
        if self.state == RunState.DONE:
            return 1.0
        if self.epochs <= 0:
            return 0.0
        within = self.batch / self.batches if self.batches else 0.0
        return min(1.0, (self.epoch + within) / self.epochs)

    def train_config(self) -> TrainConfig:
        if self.kind == TRACKED_KIND:  # its config is whatever the script passed
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

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = results_root(root)
        self.runs_dir = self.root / "runs"
        self.db_path = self.root / DB_NAME
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self.conn = connect(self.db_path)
            self.conn.executescript(SCHEMA)
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

    # -- writing

    def create_run(self, config: TrainConfig, state: RunState = RunState.QUEUED, *, kind: str = "train",
                   sweep_id: str | None = None, now: float | None = None) -> str:
        now = time.time() if now is None else now
        run_id = new_run_id(now)
        folder = self.run_dir(run_id)
        folder.mkdir(parents=True)
        atomic_write_json(folder / "config.json", config.to_dict())
        with self.transaction() as c:
            c.execute(
                "INSERT INTO runs (id, created, updated, state, kind, dataset, arch, config, sweep_id, epochs)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, now, now, RunState(state).value, kind, config.dataset, config.arch,
                 json.dumps(config.to_dict(), sort_keys=True), sweep_id, config.epochs),
            )
        return run_id

    def set_state(self, run_id: str, state: RunState, error: str | None = None, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.conn.execute("UPDATE runs SET state = ?, error = ?, updated = ? WHERE id = ?",
                          (RunState(state).value, error, now, run_id))

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
        folder = self.run_dir(run_id)
        folder.mkdir(parents=True)
        atomic_write_json(folder / "config.json", config)
        with self.transaction() as c:
            c.execute("INSERT INTO runs (id, created, updated, state, kind, dataset, arch, config, epochs)"
                      " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (run_id, now, now, RunState.RUNNING.value, TRACKED_KIND, dataset, arch,
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
        return read_metrics(self.run_dir(run_id) / "metrics.jsonl")


def store_for_run(ref: str, results: str | os.PathLike | None = None) -> Store:
    """The store a run reference belongs to: `results` when given, else the root a run folder path
    lives in (<root>/runs/<id>), else the default root."""
    if results is None:
        folder = Path(ref).expanduser()
        if folder.is_dir() and (folder.parent.parent / DB_NAME).is_file():
            results = folder.parent.parent
    return Store(results)
