"""Run one stored training run through fit() and record what happened in the registry.

Shared by the foreground `train` command and the background worker, so a run
started either way leaves the same state, summary and files behind.
"""

from __future__ import annotations

import shutil
import time
import traceback
from typing import Callable

from engine.runs.store import RunState, Store
from engine.files import atomic_write_text
from engine.ml.train import Callbacks, FitResult, Outcome, fit

PROGRESS_EVERY = 0.5  # seconds between progress writes to the database


def run_training(store: Store, run_id: str, *,
                 on_batch: Callable[[int, int, int], None] | None = None,
                 on_epoch: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 download: bool = False, fit_fn: Callable[..., FitResult] = fit) -> tuple[RunState, str]:
    """Train run `run_id` (resuming from its checkpoint); returns its final state and a message.

    `fit_fn` trains: engine.ml.train.fit in this process, or an executor's remote trial (same signature).

    A failure inside training never escapes: the run is marked failed, its
    traceback is saved as `traceback.txt` in the run folder, and the state is returned.
    """
    record = store.get_run(run_id)
    config = record.train_config()
    store.set_state(run_id, RunState.RUNNING)
    last_write = 0.0

    def batch_hook(epoch: int, batch: int, batches: int) -> None:
        nonlocal last_write
        now = time.monotonic()
        if now - last_write >= PROGRESS_EVERY or batch == batches:
            store.set_progress(run_id, epoch - 1, batch, batches)
            last_write = now
        if on_batch:
            on_batch(epoch, batch, batches)

    def epoch_hook(row: dict) -> None:
        store.record_epoch(run_id, row)
        if on_epoch:
            on_epoch(row)

    def start_hook(rows: list[dict]) -> None:
        store.reset_summary(run_id, rows)  # the epochs a resumed run keeps, and nothing else

    try:
        try:
            result = fit_fn(config, record.path, Callbacks(batch_hook, epoch_hook, should_stop, start_hook),
                            download=download)
        except Exception as exc:  # anything: a bad dataset, missing weights, a bug
            atomic_write_text(record.paths.traceback, traceback.format_exc())
            message = f"{type(exc).__name__}: {exc}"
            store.set_state(run_id, RunState.FAILED, message)
            return RunState.FAILED, message
        state = {Outcome.DONE: RunState.DONE, Outcome.DIVERGED: RunState.DIVERGED,
                 Outcome.CANCELLED: RunState.CANCELLED}[result.outcome]
        store.set_state(run_id, state, result.message or None)
        return state, result.message
    finally:
        # Deleted while it trained (the dashboard cancels, then deletes at once): a checkpoint written
        # before the cancel was seen would leave an orphan folder with no record behind.
        if not store.has_run(run_id):
            shutil.rmtree(record.path, ignore_errors=True)
