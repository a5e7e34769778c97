"""What the benchmarks share: data layouts written to a temporary folder, child processes, a busy CPU."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX (ubyte): 0x0000, 0x08, ndim, big-endian int32 dims, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    path.write_bytes(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes())


def mnist_layout(root: Path, n_train: int = 60_000) -> Path:
    """mnist_sample's 4,000 training images repeated to `n_train`, and its 1,000 test images, as
    <root>/MNIST/raw/*-ubyte (torchvision's layout, so the course loop and fit read the same files)."""
    sys.path.insert(0, str(PROJECT))
    from engine.ml.readers import load_mnist_sample

    train_x, train_y, test_x, test_y, _ = load_mnist_sample()
    reps = -(-n_train // len(train_y))
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw / "train-images-idx3-ubyte", np.tile(train_x[:, 0], (reps, 1, 1))[:n_train])
    write_idx(raw / "train-labels-idx1-ubyte", np.tile(train_y, reps)[:n_train])
    write_idx(raw / "t10k-images-idx3-ubyte", test_x[:, 0])
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    return root


def cifar10_layout(root: Path, n_train: int = 50_000, n_test: int = 10_000, seed: int = 0) -> Path:
    """Random images in CIFAR-10's official python layout (<root>/cifar-10-batches-py/), 5 train batches."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_test)]
    for name, n in sizes:
        batch = {
            "batch_label": name,
            "labels": [int(v) for v in rng.integers(0, 10, n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        with open(base / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return root


def run_child(script: Path, *args: str, env: dict | None = None, timeout: float = 1800) -> dict:
    """Run `python script args` and return the JSON object it prints on its last line."""
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=PROJECT,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_env(**extra: str) -> dict:
    """The environment a child starts with: torch's defaults (no OpenMP variables), offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "GOMP_"))}
    env.update(PYTHONPATH=str(PROJECT), LENSBOARD_OFFLINE="1", **extra)
    return env


@contextlib.contextmanager
def competing_process(busy: bool | int):
    """With busy=True, one CPU-bound process (a Python busy loop) runs during the block; with a number,
    that many."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(int(busy))]
    if procs:
        time.sleep(0.5)
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def load_average() -> str:
    try:
        return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def record_learning_curve(store: Any, run_id: str, epochs: int, offset: float, seconds: float) -> None:
    """Metrics rows of a run whose loss falls as 2 / (epoch + offset), written as fit writes them
    (metrics.jsonl, then the registry's summary): finished runs for the dashboard benchmarks, no training."""
    from engine.files import append_metrics

    for epoch in range(1, epochs + 1):
        loss = 2.0 / (epoch + offset)
        row = {
            "epoch": epoch,
            "train_loss": loss,
            "train_acc": 1 - loss / 3,
            "val_loss": loss * 1.1,
            "val_acc": 1 - loss / 2.8,
            "test_loss": loss * 1.15,
            "test_acc": 1 - loss / 2.7,
            "seconds": seconds,
        }
        append_metrics(store.run_dir(run_id) / "metrics.jsonl", row)
        store.record_epoch(run_id, row)
