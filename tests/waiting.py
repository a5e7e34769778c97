"""Waiting in tests for something another thread or process does: a bounded poll, never a speed check."""

from __future__ import annotations

import time

from engine.runs import jobs
from engine.runs.store import Store

WAIT = 180  # generous upper bound for a subprocess to get somewhere on a busy machine; never a speed check


def wait_until(condition, timeout: float = WAIT, every: float = 0.05, what: str = "condition"):
    """The first true value of condition(), polled every `every` seconds; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def settled(store: Store, run_id: str) -> bool:
    """The run has ended and so have its jobs (the worker closes a job just after its run)."""
    return store.get_run(run_id).state.finished and not any(j.state.active for j in jobs.jobs_for_run(store, run_id))
