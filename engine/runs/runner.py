"""Run one stored training run through fit() and record what happened in the registry.

Shared by the foreground `train` command and the background worker, so a run started either
way leaves the same state, summary and files behind. What can go wrong around the training
itself is handled here, so that it never costs the run:
- another process holds the database's write lock past the busy timeout: progress writes are
  skipped, the per-epoch summary is rebuilt from the metrics once the registry answers again,
  and the final state is written patiently;
- the disk fills up: the run becomes `interrupted` (it resumes from its last checkpoint once
  there is space; the worker puts its job back on the queue and waits);
- the run's folder is deleted while it trains: the run fails with that message instead of
  writing its epochs into a folder recreated without its config.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import time
import traceback
from collections.abc import Callable
from typing import TypeVar

from engine.errors import RunFolderGone
from engine.files import atomic_write_text
from engine.ml.train import Callbacks, FitResult, Outcome, fit
from engine.runs.database import is_busy
from engine.runs.records import RunState
from engine.runs.store import Store

PROGRESS_EVERY = 0.5  # seconds between progress writes to the database
PATIENCE = 600.0  # seconds the final state of a run keeps being retried while the database is locked
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

T = TypeVar("T")


def disk_full(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) says the disk or the quota is full."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in DISK_FULL:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def patiently(fn: Callable[[], T], patience: float = PATIENCE, pause: float = 1.0) -> T:
    """fn(), retried while the database is locked by another process, for up to `patience` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)


def run_training(
    store: Store,
    run_id: str,
    *,
    on_batch: Callable[[int, int, int], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    download: bool = False,
    patience: float = PATIENCE,
    fit_fn: Callable[..., FitResult] = fit,
) -> tuple[RunState, str]:
    """Train run `run_id` (resuming from its checkpoint); returns its final state and a message.

    `fit_fn` trains: engine.ml.train.fit in this process, or an executor's remote trial (same signature).

    A failure inside training never escapes: the run is marked failed, its traceback is saved as
    `traceback.txt` in the run folder, and the state is returned. A full disk returns `interrupted`.
    """
    record = store.get_run(run_id)
    config = record.train_config()
    paths = record.paths
    patiently(lambda: store.set_state(run_id, RunState.RUNNING), patience)
    last_write = 0.0
    rows: list[dict] = []
    summary_behind = False  # an epoch's summary could not be written (the database was locked)

    def folder_check() -> None:
        if not paths.config.exists():
            raise RunFolderGone(f"its folder {paths.dir} was deleted while it trained")

    def batch_hook(epoch: int, batch: int, batches: int) -> None:
        nonlocal last_write
        now = time.monotonic()
        if now - last_write >= PROGRESS_EVERY or batch == batches:
            folder_check()
            last_write = now
            try:
                store.set_progress(run_id, epoch - 1, batch, batches)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                last_write = now + store.busy_timeout  # locked: skip progress for a while, train on
        if on_batch:
            on_batch(epoch, batch, batches)

    def epoch_hook(row: dict) -> None:
        nonlocal summary_behind
        folder_check()
        rows.append(row)
        try:
            if summary_behind:
                store.reset_summary(run_id, rows)
            else:
                store.record_epoch(run_id, row)
            summary_behind = False
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            summary_behind = True  # the metrics file has the epoch; the registry catches up later
        if on_epoch:
            on_epoch(row)

    def start_hook(kept: list[dict]) -> None:
        rows[:] = kept
        patiently(lambda: store.reset_summary(run_id, kept), patience)  # the epochs a resumed run keeps

    def finish(state: RunState, message: str | None) -> tuple[RunState, str]:
        if summary_behind:
            patiently(lambda: store.reset_summary(run_id, rows), patience)
        patiently(lambda: store.set_state(run_id, state, message or None), patience)
        return state, message or ""

    try:
        try:
            result = fit_fn(
                config, record.path, Callbacks(batch_hook, epoch_hook, should_stop, start_hook), download=download
            )
        except RunFolderGone as exc:
            return finish(RunState.FAILED, f"{exc}; {len(rows)} finished epoch(s) were in it")
        except Exception as exc:  # anything: a bad dataset, missing weights, a full disk, a bug
            message = f"{type(exc).__name__}: {exc}"
            if disk_full(exc):
                return finish(
                    RunState.INTERRUPTED,
                    f"the disk is full; the run resumes from its last checkpoint "
                    f"({len(rows)} epoch(s)) when there is space again",
                )
            try:
                atomic_write_text(paths.traceback, traceback.format_exc())
            except OSError:
                pass  # the traceback is a courtesy; the state below is what matters
            return finish(RunState.FAILED, message)
        state = {
            Outcome.DONE: RunState.DONE,
            Outcome.DIVERGED: RunState.DIVERGED,
            Outcome.CANCELLED: RunState.CANCELLED,
        }[result.outcome]
        return finish(state, result.message)
    finally:
        # Deleted while it trained (the dashboard cancels, then deletes at once): a checkpoint written
        # before the cancel was seen would leave an orphan folder with no record behind.
        if not store.has_run(run_id):
            shutil.rmtree(record.path, ignore_errors=True)
