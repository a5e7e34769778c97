"""Starting a worker for the dashboard: one detached `python -m engine worker` per results root.

A lock file in the root serialises callers (Streamlit reruns, several tabs, several processes) and
the pid of the last worker started is remembered in `worker.pid`, so two are never started; the
worker's output goes to `worker.log` in the root.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.files import atomic_write_text
from engine.runs.procs import looks_like_worker, pid_alive
from engine.runs.store import Store
from engine.runs.workers import worker_status
from engine.settings import Settings, child_environment

PROJECT = Path(__file__).resolve().parents[2]  # the folder holding the engine package

_spawned: list[subprocess.Popen] = []  # kept so finished children are reaped, not left as zombies


def starting_worker_pid(root: Path) -> int | None:
    """The pid of the worker last started for ROOT while it is alive (it may not have registered yet)."""
    try:
        pid = int((Path(root) / "worker.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) and looks_like_worker(pid) else None


def ensure_worker(root: Path, extra_args: Sequence[str] = ()) -> int | None:
    """Start one detached `python -m engine worker --results ROOT --slots auto` unless a live worker serves
    ROOT (`--slots auto`: one worker per two CPUs, engine.runs.slots; `extra_args` come after it and win).

    Returns the new worker's pid, or None when one is alive (or still starting).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for proc in _spawned[:]:
        if proc.poll() is not None:
            _spawned.remove(proc)
    with open(root / "worker.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        store = Store(root)
        try:
            if worker_status(store).alive:
                return None
        finally:
            store.close()
        if starting_worker_pid(root):
            return None  # started, still importing torch
        with open(root / "worker.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "worker", "--results", str(root), "--slots", "auto", *extra_args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_environment(PROJECT),
                start_new_session=True,
                close_fds=True,
            )
        _spawned.append(proc)
        atomic_write_text(root / "worker.pid", f"{proc.pid}\n")
        return proc.pid


def ensure_worker_for(settings: Settings) -> int | None:
    """ensure_worker for these settings: a worker that runs the queue on their Ray cluster when they name one."""
    # on a cluster the dispatcher is one process (its slots are the cluster's), so --slots goes back to 1
    return ensure_worker(settings.results, ["--slots", "1", "--ray", settings.ray] if settings.ray else [])
