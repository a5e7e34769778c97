"""One trial on a Ray node: the real fit() in a scratch folder, each finished epoch streamed back.

`trial` is a generator that engine.runs.ray_executor runs as a Ray task. It never opens the results
database and needs no shared filesystem: it gets the run's config and the head's copy of the run's
last checkpoints as arguments, trains with `engine.ml.train.fit` in a temporary folder on its node
(reading the dataset from that node's own data root), and yields messages that the dispatcher
(engine.runs.ray_fit) turns into the same run-folder files the local worker writes:

    {"kind": "node", "node": hex, "host": name}        first, once the task runs on a node
    {"kind": "start", "rows": [...], "kept": [names]}   the epochs its checkpoint held (a resume), and the
                                                        checkpoint files it could read (a damaged one is gone)
    {"kind": "batch", "epoch", "batch", "batches"}      progress, at most every PROGRESS_EVERY seconds
    {"kind": "epoch", "row": {...}, "checkpoint": b}    a finished epoch: its metrics row, then checkpoint bytes
    {"kind": "end", "outcome", "message", "model": b}   the end; the final model's bytes when it is done
    {"kind": "error", "error": exc, "traceback": text}  fit raised

A stop (cancel, early stopping, the dispatcher shutting down) arrives through a small actor the
trial polls (`flags.stopped(key)`), so fit stops after its current batch as it does locally.
"""

from __future__ import annotations

import pickle
import queue
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from engine.config import TrainConfig
from engine.files import RunPaths, atomic_write_bytes
from engine.ml.train import Callbacks, Outcome, fit

NODE, START, BATCH, EPOCH, END, ERROR = "node", "start", "batch", "epoch", "end", "error"
PROGRESS_EVERY = 0.5  # seconds between progress messages
WATCH_EVERY = 0.2  # seconds between looks at the stop flag
PORTABLE_MODULES = ("builtins", "engine.")  # exceptions whose class the dispatcher can always unpickle


def trial(
    config: dict,
    checkpoints: dict[str, bytes],
    model_file: tuple[str, bytes] | None,
    *,
    download: bool,
    batch_delay: float,
    threads: int,
    flags: Any,
    key: str,
) -> Iterator[dict]:
    """Train `config` on this node, yielding the messages above.

    `checkpoints`: the run folder's checkpoint files by name (checkpoint.pt and checkpoint.prev.pt as the
    head has them; none: from scratch), so fit resumes here exactly as it would there;
    `model_file`: (file name, source) of your own model's file, written next to the scratch run folder;
    `threads`: torch's intra-op threads (the CPUs the trial asked for); `flags`, `key`: the stop actor.
    """
    import ray  # heavy and optional: only a Ray worker process runs this

    yield {"kind": NODE, "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}
    torch.set_num_threads(max(1, threads))
    config_obj = TrainConfig.from_dict(config)
    with tempfile.TemporaryDirectory(prefix="lensboard-trial-") as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        if model_file is not None:  # your own model: its file as the head has it (same sha256)
            name, source = model_file
            path = Path(tmp) / name
            path.write_bytes(source)
            config_obj = config_obj.replace(arch=f"{path}:{config_obj.arch.rpartition(':')[2]}")
        for name, data in checkpoints.items():
            atomic_write_bytes(run_dir / name, data)
        messages: queue.Queue[dict] = queue.Queue()
        stop, done = threading.Event(), threading.Event()
        trainer = threading.Thread(
            target=_fit,
            args=(config_obj, run_dir, messages, stop, download, batch_delay),
            name="trial-fit",
            daemon=True,
        )
        watcher = threading.Thread(target=_watch, args=(flags, key, stop, done), name="trial-stop", daemon=True)
        trainer.start()
        watcher.start()
        try:
            while True:
                message = messages.get()
                yield message
                if message["kind"] in (END, ERROR):
                    return
        finally:  # also when the dispatcher drops the stream: stop after the current batch
            stop.set()
            done.set()
            trainer.join()
            watcher.join()


def _fit(
    config: TrainConfig, run_dir: Path, out: queue.Queue, stop: threading.Event, download: bool, batch_delay: float
) -> None:
    paths = RunPaths(run_dir)
    last = 0.0

    def on_batch(epoch: int, batch: int, batches: int) -> None:
        nonlocal last
        if batch_delay > 0:
            time.sleep(batch_delay)
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY or batch == batches:
            out.put({"kind": BATCH, "epoch": epoch, "batch": batch, "batches": batches})
            last = now

    def on_epoch(row: dict) -> None:  # fit has written this epoch's checkpoint
        out.put({"kind": EPOCH, "row": row, "checkpoint": paths.checkpoint.read_bytes()})

    def on_start(rows: list[dict]) -> None:  # fit has read its checkpoint (and removed a damaged one)
        kept = [p.name for p in (paths.checkpoint, paths.checkpoint_prev) if p.exists()]
        out.put({"kind": START, "rows": rows, "kept": kept})

    try:
        result = fit(config, run_dir, Callbacks(on_batch, on_epoch, stop.is_set, on_start), download=download)
    except Exception as exc:  # a bad dataset on this node, a bug: the dispatcher marks the run failed
        out.put({"kind": ERROR, "error": portable(exc), "traceback": traceback.format_exc()})
        return
    model = paths.model.read_bytes() if result.outcome == Outcome.DONE else None
    out.put({"kind": END, "outcome": result.outcome.value, "message": result.message, "model": model})


def _watch(flags: Any, key: str, stop: threading.Event, done: threading.Event) -> None:
    import ray

    while not done.wait(WATCH_EVERY) and not stop.is_set():
        try:
            if ray.get(flags.stopped.remote(key), timeout=60):
                stop.set()
        except Exception:  # the dispatcher that owns the flags is gone: nobody would take our epochs
            stop.set()


def portable(exc: Exception) -> Exception:
    """`exc` itself when the dispatcher can unpickle it (a builtin or Lensboard error), else a RuntimeError
    that keeps its class name and message."""
    if type(exc).__module__.startswith(PORTABLE_MODULES):
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:
            pass
    return RuntimeError(f"{type(exc).__name__}: {exc}")
