"""The files of a run folder, and how they are written: atomically, or appended one line at a time.

`RunPaths` names every file a run folder can hold, so no other module spells a file name. A whole-file
write goes to a temporary file in the same folder, then `os.replace`; `metrics.jsonl` is appended one
complete, flushed line at a time, and a reader skips a partial last line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RunPaths:
    """Every file of one run folder `results/runs/<run_id>/`."""

    dir: Path

    @property
    def config(self) -> Path:  # the full TrainConfig, written once
        return self.dir / "config.json"

    @property
    def metrics(self) -> Path:  # one JSON line per finished epoch, append-only
        return self.dir / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:  # model + optimizer + epoch + the metrics rows so far, for resume
        return self.dir / "checkpoint.pt"

    @property
    def checkpoint_prev(self) -> Path:  # the checkpoint before, kept so a damaged newest one is not the end
        return self.dir / "checkpoint.prev.pt"

    @property
    def model(self) -> Path:  # the final state_dict
        return self.dir / "model.pt"

    @property
    def traceback(self) -> Path:  # why the run's training failed
        return self.dir / "traceback.txt"

    def job_traceback(self, kind: str, job_id: int) -> Path:  # why another job on the run failed
        return self.dir / f"traceback-{kind}-{job_id}.txt"

    @property
    def foreground(self) -> Path:  # {"host", "pid"} of a `train` command training it in the foreground
        return self.dir / "foreground.json"

    @property
    def embeddings(self) -> Path:  # <split>.npy, <split>_labels.npy and meta.json (written last)
        return self.dir / "embeddings"

    @property
    def embeddings_meta(self) -> Path:
        return self.embeddings / "meta.json"

    @property
    def projections(self) -> Path:  # 2-D maps cached by their parameters
        return self.dir / "projections"

    @property
    def index(self) -> Path:  # FAISS indexes over the database split
        return self.dir / "index"

    def interrupted_writes(self) -> list[Path]:  # temporary files of checkpoint/model writes a crash cut short
        return [p for f in (self.checkpoint, self.model) for p in self.dir.glob(f".{f.name}.*.tmp")]


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


def atomic_numpy_save(path: Path, array: np.ndarray) -> None:
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


def read_metrics(path: Path, damaged: list[int] | None = None) -> list[dict]:
    """Every complete line of a metrics file. A partial last line (one still being written) is
    skipped; so is any other line that is not a JSON object, and its 1-based line number is added
    to `damaged` when a list is given, so the caller can say that epoch is missing."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    rows = []
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif number < len(lines) and damaged is not None:  # a whole line (it ends with a newline) that is not data
            damaged.append(number)
    return rows
