"""A run as the registry describes it: its states, its kinds, its id, and `RunRecord` (one row of `runs`).

engine.runs.store writes and reads these records; everything else names a run's state or kind from here.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from engine.config import TrainConfig
from engine.errors import ConfigError
from engine.files import RunPaths


class RunState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"  # the loss became NaN, infinite or huge
    INTERRUPTED = "interrupted"  # its worker (or foreground command) died; requeued to resume
    PRUNED = "pruned"  # a search's trial stopped early by its early-stopping rule; its finished epochs are kept

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES

    @property
    def active(self) -> bool:
        """Waiting, training, or about to resume: the pages keep refreshing while a run is active."""
        return self in ACTIVE_STATES


FINISHED_STATES = frozenset({RunState.DONE, RunState.FAILED, RunState.CANCELLED, RunState.DIVERGED, RunState.PRUNED})
ACTIVE_STATES = frozenset({RunState.QUEUED, RunState.RUNNING, RunState.INTERRUPTED})


class RunKind(str, Enum):
    """What made a run: a training run, a pretrained feature extractor (its embed job makes it), or a script."""

    TRAIN = "train"
    EMBED = "embed"
    TRACKED = "tracked"  # recorded by a user's own training script (engine.track): a free-form config


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a single folder name: no separator, never . or ..


def valid_run_id(run_id: object) -> bool:
    return isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None


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

    @property
    def folder_missing(self) -> bool:
        """True when the run's folder is gone (removed by hand): its files are lost, whatever its state."""
        return not self.path.is_dir()

    @property
    def shown_state(self) -> str:
        """What to show as the state: the registry's, or `missing` when the folder is gone."""
        return "missing" if self.folder_missing else self.state.value

    def train_config(self) -> TrainConfig:
        if self.kind == RunKind.TRACKED.value:  # its config is whatever the script passed
            raise ConfigError(
                f"run {self.id} was recorded by a script (engine.track): Lensboard has no training "
                f"config or model for it, only its hyperparameters and metrics"
            )
        return TrainConfig.from_dict(self.config)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "state": self.state.value,
            "kind": self.kind,
            "path": str(self.path),
            "created": self.created,
            "updated": self.updated,
            "dataset": self.dataset,
            "arch": self.arch,
            "epochs": self.epochs,
            "batch_size": self.config.get("batch_size"),
            "lr": self.config.get("lr"),
            "optimizer": self.config.get("optimizer"),
            "sweep_id": self.sweep_id,
            "error": self.error,
            "progress": {
                "epoch": self.epoch,
                "batch": self.batch,
                "batches": self.batches,
                "fraction": round(self.progress, 4),
            },
            "test_acc": self.final_test_acc,
            "best_test_acc": self.best_test_acc,
            "test_loss": self.final_test_loss,
            "sec_per_epoch": self.sec_per_epoch,
            "folder_missing": self.folder_missing,
        }


def new_run_id(now: float | None = None) -> str:
    """Sorts by creation time; safe as a folder name: 20261122-004724-123456-1a2b."""
    now = time.time() if now is None else now
    micro = int(round((now % 1) * 1e6)) % 1_000_000
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{micro:06d}-{secrets.token_hex(2)}"
