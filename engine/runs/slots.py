"""Parallel trials on one machine: `python -m engine worker --slots N` starts N ordinary workers.

Each slot is a plain `python -m engine worker` process (the same job loop, the same claim in one
transaction, so no job runs twice) told how many torch threads it may use, so N trials of a sweep
train at once with the cores split between them. On small models that is nearly N times the
throughput (one thread per trial wastes nothing on hand-offs between threads); see the README.

This process only supervises: it forwards SIGTERM/SIGINT (each slot finishes its batch and requeues
its run), restarts a slot that crashed, and exits when every slot has exited.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from engine.ml.threads import available_cpus
from engine.settings import child_environment, wait_variables

PROJECT = Path(__file__).resolve().parents[2]

MAX_SLOTS = 64
MAX_AUTO_SLOTS = 4  # each slot holds its own copy of torch and the dataset (~0.4 GB and up)
RESTART_DELAY = 2.0  # seconds before a crashed slot is started again
POLL = 0.5  # seconds between looks at the slots


@dataclass(frozen=True)
class SlotPlan:
    slots: int  # worker processes training at once
    threads: int  # torch threads each may use


def auto_slots(cpus: int) -> int:
    """One slot per two CPUs (each trial keeps two threads for its convolutions), at least one, at most
    MAX_AUTO_SLOTS. On a 2-CPU machine that is one slot: measured there while other work shared the
    CPU, two slots were no faster for a basic_nn sweep (there was no idle core to use) and a lone CNN
    run would lose its second thread."""
    return max(1, min(MAX_AUTO_SLOTS, cpus // 2))


def plan_slots(slots: str | int, threads: int | None = None, once: bool = False, cpus: int | None = None) -> SlotPlan:
    """Check the --slots and --threads values and decide both; ValueError names what is allowed.

    `slots` is 'auto' or a whole number from 1 to MAX_SLOTS; `threads` defaults to the CPUs split
    evenly between the slots (at least one each). `once` (run one job and exit) means one slot.
    """
    cpus = cpus or available_cpus()
    text = str(slots).strip().lower()
    if text == "auto":
        n = 1 if once else auto_slots(cpus)
    else:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_SLOTS:
            raise ValueError(f"--slots must be 'auto' or a whole number from 1 to {MAX_SLOTS}, got {slots!r}")
        if once and n > 1:
            raise ValueError("--once runs one job in this process; it cannot be combined with --slots above 1")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"--threads must be a whole number >= 1, got {threads!r}")
    return SlotPlan(n, threads or max(1, cpus // n))


def slot_environment(env: dict[str, str], threads: int) -> dict[str, str]:
    """The environment of a slot: its thread count for OpenMP and MKL as well as torch, and how idle
    threads wait (a short spin, then sleep, unless the user chose otherwise), set before the slot imports torch."""
    env = dict(env, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.update(wait_variables(env))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH")) if p)
    return env


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the supervisor dies (Linux), so no slot is orphaned."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_slots(plan: SlotPlan, worker_args: Sequence[str], log: Callable[[str], None] | None = None) -> int:
    """Run `plan.slots` workers (`python -m engine worker --slots 1 --threads T WORKER_ARGS`) until
    they exit or this process is asked to stop; returns 0, or 1 when a slot kept failing to start."""
    log = log or (lambda m: print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} slots (pid {os.getpid()}): {m}", flush=True))
    command = [sys.executable, "-m", "engine", "worker", "--slots", "1", "--threads", str(plan.threads), *worker_args]
    env = slot_environment(child_environment(PROJECT), plan.threads)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True  # only a flag; the loop below forwards it

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    procs: list[subprocess.Popen | None] = []
    failures = 0
    try:
        started = [start() for _ in range(plan.slots)]
        procs = list(started)
        log(
            f"started {plan.slots} worker slot(s) with {plan.threads} thread(s) each: "
            + ", ".join(str(p.pid) for p in started)
        )
        forwarded = False
        while any(p is not None for p in procs):
            if stopping and not forwarded:
                for p in procs:
                    if p is not None and p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                forwarded = True
            for i, p in enumerate(procs):
                if p is None or p.poll() is None:
                    continue
                code = p.returncode
                procs[i] = None
                if stopping or code == 0:  # asked to stop, or --idle-exit: this slot is done
                    continue
                failures += 1
                log(f"slot {i + 1} (pid {p.pid}) exited with code {code}; starting it again")
                if failures > 5 * plan.slots:
                    log("slots keep failing: giving up")
                    stopping = True
                    continue
                time.sleep(RESTART_DELAY)
                procs[i] = start()
            time.sleep(POLL)
    finally:
        for p in procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            if p is not None:
                p.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
    log("all slots stopped")
    return 1 if failures > 5 * plan.slots else 0
