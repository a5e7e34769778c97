"""Shared fixtures: a fresh results root, and a session-wide root with finished runs."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from engine.ml.threads import configure_threads

configure_threads(min(2, os.cpu_count() or 1))  # first, like every entry point: before torch loads

import torch  # noqa: E402

from engine.config import TrainConfig  # noqa: E402
from engine.runs.records import RunState  # noqa: E402
from engine.runs.runner import run_training  # noqa: E402
from engine.runs.store import Store  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent

# Small and quick: a few hundred mnist_sample images, enough to learn something.
QUICK = dict(dataset="mnist_sample", epochs=2, batch_size=64, train_limit=600, seed=0)


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(tmp_path / "results")
    yield s
    s.close()


@pytest.fixture(scope="session")
def finished_root(tmp_path_factory):
    """A results root holding finished runs of basic_nn and simple_cnn (2 epochs, val split),
    made by the real training code. Tests must not modify it: copy it if you need to."""
    root = tmp_path_factory.mktemp("finished") / "results"
    s = Store(root)
    for arch in ("basic_nn", "simple_cnn"):
        run_id = s.create_run(TrainConfig(arch=arch, val_split=0.1, **QUICK))
        state, message = run_training(s, run_id)
        assert state == RunState.DONE, message
    s.close()
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and far faster when other processes share the CPU
    (two OpenMP threads on two busy cores spin-wait on each other). Use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def env(monkeypatch):
    """For page tests: point the app at a results root, run from the project folder, and never spawn
    a worker. `env(root)` returns the root."""

    def use(root: Path) -> Path:
        monkeypatch.setenv("LENSBOARD_RESULTS", str(root))
        monkeypatch.setenv("LENSBOARD_NO_WORKER", "1")
        monkeypatch.chdir(PROJECT)
        return root

    return use


@pytest.fixture
def full_disk(monkeypatch):
    """`full_disk.fill()`: from now on training's second checkpoint write fails with ENOSPC, as on a full
    disk; `full_disk.free()`: the space is back."""
    from engine.ml import checkpoints

    real_write = checkpoints.atomic_write_bytes
    writes = []

    def full_at_the_second_checkpoint(path, data):
        writes.append(path.name)
        if writes.count("checkpoint.pt") == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    class FullDisk:
        def fill(self) -> None:
            monkeypatch.setattr(checkpoints, "atomic_write_bytes", full_at_the_second_checkpoint)

        def free(self) -> None:
            monkeypatch.setattr(checkpoints, "atomic_write_bytes", real_write)

    return FullDisk()
