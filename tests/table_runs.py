"""Runs and metrics rows written into a store the way the engine writes them, for the tests of the
table builders (dashboard/runs_table.py, tables.py, groups.py)."""

from __future__ import annotations

from engine.config import TrainConfig
from engine.files import append_metrics
from engine.runs.records import RunState


def epoch_row(epoch, train_loss, test_loss, test_acc, *, val_loss=None, seconds=1.0):
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_acc": 1 - train_loss / 3,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "seconds": seconds,
    }
    if val_loss is not None:
        row["val_loss"], row["val_acc"] = val_loss, 1 - val_loss / 3
    return row


def make_runs(store, specs, now=1_700_000_000.0):
    """specs: (arch, lr, state, [metrics rows]); returns the run ids in order."""
    ids = []
    for i, (arch, lr, state, rows) in enumerate(specs):
        run_id = store.create_run(TrainConfig(arch=arch, lr=lr, epochs=max(len(rows), 1)), now=now + i)
        for row in rows:
            store.record_epoch(run_id, row)
        store.set_state(run_id, RunState(state))
        ids.append(run_id)
    return ids


def seeded(store, specs, now=1_700_000_000.0):
    """specs: (arch, seed, final test accuracy); done runs with two epochs each; returns the run ids."""
    ids = []
    for i, (arch, seed, acc) in enumerate(specs):
        run_id = store.create_run(TrainConfig(arch=arch, seed=seed, epochs=2), now=now + i)
        for row in (epoch_row(1, 1.0, 0.9, acc - 0.1), epoch_row(2, 0.5, 0.6, acc)):
            store.record_epoch(run_id, row)
            append_metrics(store.paths(run_id).metrics, row)
        store.set_state(run_id, RunState.DONE)
        ids.append(run_id)
    return ids
