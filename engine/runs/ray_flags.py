"""The stop flags of remote trials: a tiny Ray actor on the dispatcher's node (it imports nothing heavy).

The dispatcher sets a trial's flag when its job should stop (cancel, early stopping, shutdown); the
trial polls it between batches (engine.runs.ray_trial). The actor lives as long as its dispatcher,
so a trial whose dispatcher died sees its flags gone and stops too.
"""

from __future__ import annotations


class StopFlags:
    """Which trials were asked to stop, by key (job id and attempt)."""

    def __init__(self) -> None:
        self._stop: set[str] = set()

    def stop(self, key: str) -> None:
        self._stop.add(key)

    def stopped(self, key: str) -> bool:
        return key in self._stop

    def forget(self, key: str) -> None:
        self._stop.discard(key)
