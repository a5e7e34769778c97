"""Processes on this host: is a pid alive, is it ours, and runs trained by a foreground `train` command.

A worker on another host cannot be probed; these checks only ever trust the heartbeat there.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from engine.files import RunPaths, atomic_write_text
from engine.runs.jobs import ACTIVE_JOB_STATES
from engine.runs.records import RunKind, RunState
from engine.runs.store import Store

HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """True when process `pid` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def looks_like(pid: int, command: bytes) -> bool:
    """True when process `pid` looks like `python -m engine <command>` (so a reused pid is not taken for it)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid
    return b"engine" in cmdline and command in cmdline


def looks_like_worker(pid: int) -> bool:
    return looks_like(pid, b"worker")


# ---------------------------------------------------------------- runs trained in the foreground


def process_started(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot, from /proc), so a reused pid is not taken for
    it; None when that cannot be read."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def mark_foreground(run_dir: Path) -> None:
    """Say that this process trains the run in `run_dir` in the foreground (the `train` command, or a
    script recording a tracked run)."""
    info = {"host": HOST, "pid": os.getpid(), "started": process_started(os.getpid())}
    atomic_write_text(RunPaths(Path(run_dir)).foreground, json.dumps(info) + "\n")


def _still_running(pid: int, info: dict, command: bytes | None) -> bool:
    if not pid_alive(pid):
        return False
    started = info.get("started")
    if started is not None and process_started(pid) not in (None, started):
        return False  # the pid was reused by another process
    return command is None or looks_like(pid, command)


def orphaned_foreground_runs(store: Store, kind: RunKind = RunKind.TRAIN) -> list[tuple[str, int]]:
    """(run id, pid) of runs of `kind` still `running` whose foreground process on this host is gone
    (killed, or its terminal closed): no job and no heartbeat would ever end them otherwise."""
    orphans = []
    for run_id in store.running_without_jobs(kind, tuple(s.value for s in ACTIVE_JOB_STATES)):
        try:
            info = json.loads(store.paths(run_id).foreground.read_text())
            host, pid = info["host"], int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not (yet) marked: leave it alone
        if host == HOST and not _still_running(pid, info, b"train" if kind == RunKind.TRAIN else None):
            orphans.append((run_id, pid))
    return orphans


def interrupt_orphaned_scripts(store: Store, now: float | None = None) -> list[tuple[str, str]]:
    """Mark interrupted the tracked runs whose script process on this host is gone; returns (run id, why)."""
    done = []
    for run_id, pid in orphaned_foreground_runs(store, RunKind.TRACKED):
        epochs = len(store.metrics(run_id))
        reason = (
            f"its script (pid {pid}) stopped before the run ended (killed, or its terminal closed); "
            f"what it logged is kept ({epochs} epoch(s))"
        )
        if store.set_state_if(run_id, RunState.RUNNING, RunState.INTERRUPTED, reason, now):
            done.append((run_id, reason))
        store.paths(run_id).foreground.unlink(missing_ok=True)
    return done
