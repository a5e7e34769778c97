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
from engine.runs.store import RunKind, Store

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


def mark_foreground(run_dir: Path) -> None:
    """Say that this process trains the run in `run_dir` in the foreground (the `train` command)."""
    atomic_write_text(RunPaths(Path(run_dir)).foreground, json.dumps({"host": HOST, "pid": os.getpid()}) + "\n")


def orphaned_foreground_runs(store: Store) -> list[tuple[str, int]]:
    """(run id, pid) of runs still `running` whose foreground `train` process on this host is gone
    (killed, or its terminal closed): no job and no heartbeat would ever end them otherwise."""
    orphans = []
    for run_id in store.running_without_jobs(RunKind.TRAIN, tuple(s.value for s in ACTIVE_JOB_STATES)):
        try:
            info = json.loads(store.paths(run_id).foreground.read_text())
            host, pid = info["host"], int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not (yet) marked: leave it alone
        if host == HOST and not (pid_alive(pid) and looks_like(pid, b"train")):
            orphans.append((run_id, pid))
    return orphans
