"""The results root: the SQLite registry of runs, jobs, workers and searches, and one folder per run.

The database (`lensboard.sqlite3`, WAL mode; schema and connections in engine.runs.database) is
the single source of truth for run state; this module is the only one that writes the `runs` table
(the queue calls the functions here that take a connection, inside its own transactions). Each run
has a folder `runs/<run_id>/` whose files `engine.files.RunPaths` names.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.config import TrainConfig
from engine.errors import InvalidRunId, RegistryBusy, ResultsError, RunNotFound
from engine.files import RunPaths, atomic_write_json, read_metrics
from engine.runs.database import BUSY_TIMEOUT, DB_NAME, connect, connect_read_only, create_tables, is_busy
from engine.runs.records import RunKind, RunRecord, RunState, new_run_id, valid_run_id


class Store:
    """One results root: the database plus one folder per run."""

    def __init__(self, root: str | os.PathLike, busy_timeout: float | None = None, *, read_only: bool = False):
        self.root = Path(root).expanduser().resolve()
        self.runs_dir = self.root / "runs"
        self.db_path = self.root / DB_NAME
        self.busy_timeout = BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        self.read_only = read_only  # every write is refused: by SQLite, and before any file is touched
        if read_only:
            self.conn = connect_read_only(self.db_path, self.busy_timeout)
            return
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            for path in (self.root, self.runs_dir, self.db_path):  # SQLite would silently open it read-only
                if path.exists() and not os.access(path, os.W_OK):
                    raise PermissionError(errno.EACCES, "not writable", str(path))
            self.conn = connect(self.db_path, self.busy_timeout)
            create_tables(self.conn)
        except (OSError, sqlite3.DatabaseError) as exc:
            if is_busy(exc):
                raise RegistryBusy(
                    f"the results database {self.db_path} is locked by another process (held for "
                    f"over {self.busy_timeout:g} s); try again in a moment"
                ) from None
            raise ResultsError(
                f"cannot use {self.root} as the results root ({exc}): it must be a writable folder, "
                f"holding a Lensboard database {DB_NAME} or none yet; pass another with --results"
            ) from None

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: one writer at a time, across processes."""
        self._refuse_if_read_only("write to the registry")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def run_dir(self, run_id: str) -> Path:
        if not valid_run_id(run_id):
            raise InvalidRunId(
                f"{run_id!r} is not a valid run id (letters, digits, '.', '_' and '-'); it is never used as a path"
            )
        return self.runs_dir / run_id

    def paths(self, run_id: str) -> RunPaths:
        return RunPaths(self.run_dir(run_id))

    def _refuse_if_read_only(self, what: str) -> None:
        if self.read_only:
            raise ResultsError(f"cannot {what}: {self.root} is open read-only")

    # -- writing

    def create_run(
        self,
        config: TrainConfig,
        state: RunState = RunState.QUEUED,
        *,
        kind: RunKind = RunKind.TRAIN,
        sweep_id: str | None = None,
        now: float | None = None,
        tx: sqlite3.Connection | None = None,
    ) -> str:
        self._refuse_if_read_only("create a run")
        now = time.time() if now is None else now
        run_id = new_run_id(now)
        paths = self.paths(run_id)
        paths.dir.mkdir(parents=True)
        try:
            atomic_write_json(paths.config, config.to_dict())
            with contextlib.nullcontext(tx) if tx else self.transaction() as c:  # tx: the caller's transaction
                c.execute(
                    "INSERT INTO runs (id, created, updated, state, kind, dataset, arch, config, sweep_id, epochs)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        now,
                        now,
                        RunState(state).value,
                        RunKind(kind).value,
                        config.dataset,
                        config.arch,
                        json.dumps(config.to_dict(), sort_keys=True),
                        sweep_id,
                        config.epochs,
                    ),
                )
        except BaseException as exc:
            shutil.rmtree(paths.dir, ignore_errors=True)  # no folder without its registry row
            if is_busy(exc):
                raise RegistryBusy(
                    f"the results database {self.db_path} is locked by another process (held "
                    f"for over {self.busy_timeout:g} s); nothing was created, try again"
                ) from None
            raise
        return run_id

    def set_state(self, run_id: str, state: RunState, error: str | None = None, now: float | None = None) -> None:
        write_state(self.conn, run_id, state, error, time.time() if now is None else now)

    def set_progress(self, run_id: str, epoch: int, batch: int, batches: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.conn.execute(
            "UPDATE runs SET epoch = ?, batch = ?, batches = ?, updated = ? WHERE id = ?",
            (epoch, batch, batches, now, run_id),
        )

    def record_epoch(self, run_id: str, row: dict, now: float | None = None) -> None:
        """Summary columns after an epoch, so listing runs never reads metrics files."""
        now = time.time() if now is None else now
        self.conn.execute(
            "UPDATE runs SET epoch = ?, batch = 0, final_test_acc = ?, final_test_loss = ?,"
            " best_test_acc = MAX(COALESCE(best_test_acc, 0), ?),"
            " sec_per_epoch = (COALESCE(sec_per_epoch, 0) * (? - 1) + ?) / ?, updated = ? WHERE id = ?",
            (
                row["epoch"],
                row["test_acc"],
                row["test_loss"],
                row["test_acc"],
                row["epoch"],
                row["seconds"],
                row["epoch"],
                now,
                run_id,
            ),
        )

    def reset_summary(self, run_id: str, rows: list[dict]) -> None:
        """Rebuild the summary columns from metrics rows (after a resume or a retry)."""
        self.conn.execute(
            "UPDATE runs SET epoch = 0, batch = 0, final_test_acc = NULL, final_test_loss = NULL,"
            " best_test_acc = NULL, sec_per_epoch = NULL WHERE id = ?",
            (run_id,),
        )
        for row in rows:
            self.record_epoch(run_id, row)

    def create_tracked_run(
        self, config: dict, *, dataset: str, arch: str, epochs: int, now: float | None = None
    ) -> str:
        """A running run (kind 'tracked') for a user's own training script; `config` is free-form."""
        self._refuse_if_read_only("create a run")
        now = time.time() if now is None else now
        run_id = new_run_id(now)
        paths = self.paths(run_id)
        paths.dir.mkdir(parents=True)
        atomic_write_json(paths.config, config)
        with self.transaction() as c:
            c.execute(
                "INSERT INTO runs (id, created, updated, state, kind, dataset, arch, config, epochs)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    now,
                    now,
                    RunState.RUNNING.value,
                    RunKind.TRACKED.value,
                    dataset,
                    arch,
                    json.dumps(config, sort_keys=True),
                    epochs,
                ),
            )
        return run_id

    def set_summary(
        self,
        run_id: str,
        *,
        epoch: int,
        final_test_acc: float | None,
        best_test_acc: float | None,
        final_test_loss: float | None,
        sec_per_epoch: float | None,
        now: float | None = None,
    ) -> None:
        """Set the summary columns as a caller computed them (a tracked script's epochs)."""
        now = time.time() if now is None else now
        self.conn.execute(
            "UPDATE runs SET epoch = ?, batch = 0, final_test_acc = ?, best_test_acc = ?,"
            " final_test_loss = ?, sec_per_epoch = ?, updated = ? WHERE id = ?",
            (epoch, final_test_acc, best_test_acc, final_test_loss, sec_per_epoch, now, run_id),
        )

    def set_state_if(
        self, run_id: str, expected: RunState, state: RunState, error: str | None = None, now: float | None = None
    ) -> bool:
        """Set the state only while it is still `expected`; True when it was set."""
        now = time.time() if now is None else now
        cur = self.conn.execute(
            "UPDATE runs SET state = ?, error = ?, updated = ? WHERE id = ? AND state = ?",
            (RunState(state).value, error, now, run_id, RunState(expected).value),
        )
        return cur.rowcount == 1

    def delete_run(self, run_id: str) -> None:
        """Remove a run's record and its folder. A record whose id is not a valid run id only loses
        the record (no path is ever built from it); a run folder that is a symbolic link loses the
        link, never what it points to: a delete never leaves the results root."""
        self._refuse_if_read_only("delete a run")
        self.conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        if not valid_run_id(run_id):
            return
        folder = self.run_dir(run_id)
        if folder.is_symlink():
            folder.unlink()
        elif folder.resolve().parent == self.runs_dir.resolve():
            shutil.rmtree(folder, ignore_errors=True)

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
        """A run by id, by a unique prefix of its id (as git names commits), or by its folder path.
        An ambiguous prefix raises RunNotFound listing the candidates."""
        candidate = Path(ref).expanduser()
        run_id = candidate.name if (candidate.is_dir() or os.sep in ref) else ref
        if not valid_run_id(run_id):
            raise InvalidRunId(f"{ref!r} is not a run id or a run folder; `python -m engine list` shows the runs")
        if self.has_run(run_id):
            return self.get_run(run_id)
        matches = [
            r["id"]
            for r in self.conn.execute(
                "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 11", (len(run_id), run_id)
            )
            if valid_run_id(r["id"])
        ]
        if len(matches) == 1:
            return self.get_run(matches[0])
        if matches:
            shown = ", ".join(matches[:10]) + (", ..." if len(matches) > 10 else "")
            raise RunNotFound(
                f"{ref!r} is ambiguous: {'more than 10' if len(matches) > 10 else len(matches)} "
                f"runs start with it ({shown}); give more of the id"
            )
        raise RunNotFound(f"no run {ref!r} in {self.root}; `python -m engine list` shows the runs")

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
        # a row whose id is not a valid run id is never turned into a record (its path would be unsafe)
        return [self._record(r) for r in self.conn.execute(sql + " ORDER BY id", args) if valid_run_id(r["id"])]

    def invalid_rows(self) -> list[tuple[str, str]]:
        """(id, state) of registry rows whose id is not a valid run id: shown as damaged, never used."""
        rows = self.conn.execute("SELECT id, state FROM runs ORDER BY id").fetchall()
        return [(r["id"], r["state"]) for r in rows if not valid_run_id(r["id"])]

    def metrics(self, run_id: str) -> list[dict]:
        return read_metrics(self.paths(run_id).metrics)

    def find_done(self, arch: str, dataset: str, matches: Callable[[TrainConfig], bool]) -> str | None:
        """The newest done train run of `arch` on `dataset` whose config `matches` and whose model is on disk."""
        rows = self.conn.execute(
            "SELECT id, config FROM runs WHERE kind = ? AND state = ? AND arch = ? AND dataset = ? ORDER BY id DESC",
            (RunKind.TRAIN.value, RunState.DONE.value, arch, dataset),
        ).fetchall()
        for row in rows:
            if (
                valid_run_id(row["id"])
                and matches(TrainConfig.from_dict(json.loads(row["config"])))
                and self.paths(row["id"]).model.exists()
            ):
                return row["id"]
        return None

    def running_without_jobs(self, kind: RunKind, active_job_states: tuple[str, ...]) -> list[str]:
        """Ids of `running` runs of `kind` that no queued or running job makes (e.g. a foreground `train`)."""
        marks = ",".join("?" * len(active_job_states))
        rows = self.conn.execute(
            f"SELECT id FROM runs WHERE state = ? AND kind = ? AND id NOT IN"
            f" (SELECT run_id FROM jobs WHERE state IN ({marks}))",
            (RunState.RUNNING.value, RunKind(kind).value, *active_job_states),
        ).fetchall()
        return [row["id"] for row in rows if valid_run_id(row["id"])]


# ---------------------------------------------------------------- writes inside a caller's transaction


def write_state(
    conn: sqlite3.Connection,
    run_id: str,
    state: RunState,
    error: str | None,
    now: float,
    *,
    kind: str | None = None,
    reset_batch: bool = False,
) -> None:
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
