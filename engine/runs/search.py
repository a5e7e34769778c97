"""Random and TPE searches in the registry: starting, topping up and extending them, and early
stopping of their trials.

The run registry stays the source of truth. A search is one row of `searches` (its SearchSpec
as JSON) and one row of `search_trials` per trial (its number, params, what the pruner remembers
about it, and the epoch it was pruned after; engine.runs.store owns both tables' schema); each
trial is an ordinary run of the sweep. Whenever the search needs Optuna, engine.runs.study
rebuilds the study from those rows and the trials' metrics files, uses it once and drops it. So a
killed worker or dashboard loses nothing, and a search can be resumed and extended at any time.

- A search starts with engine.runs.sweeps.start_search, which checks its space as `train` checks a
  config (preflight needs torch; nothing here does) and calls `open_search`.
- `top_up` keeps `parallel` trials queued or running. It asks Optuna inside the queue's
  transaction (BEGIN IMMEDIATE), and whoever ends a trial (the worker) calls it, so two workers
  never ask for the same slot.
- Pruning is decided right after each epoch is recorded (TrialHooks.on_epoch), in a transaction
  too; a pruned trial stops after its current batch, the way a cancel does, keeps its finished
  epochs, and ends in the run state `pruned`. The decision is stored, so a trial whose worker died
  just after it is pruned again at once when it resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator

from engine.errors import SweepNotFound
from engine.model_files import pin
from engine.runs.jobs import JobKind, insert_job
from engine.runs.records import RunState
from engine.runs.search_space import (
    SearchSpec,
    check_parallel,
    check_trials,
    with_absolute_model_files,
)
from engine.runs.store import Store
from engine.runs.study import ACTIVE, Trial, ask, curve, padded, prune_decision

RULE_NAMES = {"none": "no early stopping", "median": "the median rule", "asha": "ASHA", "hyperband": "Hyperband"}
# ---------------------------------------------------------------- registry


def load_spec(store: Store, sweep_id: str) -> SearchSpec | None:
    """The search behind `sweep_id`, or None for a grid sweep (or no sweep)."""
    row = store.conn.execute("SELECT spec FROM searches WHERE sweep_id = ?", (sweep_id,)).fetchone()
    return None if row is None else SearchSpec.from_json(json.loads(row["spec"]))


def load_trials(store: Store, sweep_id: str, metrics: Callable[[str], list[dict]] | None = None) -> list[Trial]:
    """The search's trials in number order, with their runs' states and metrics rows."""
    read = metrics or store.metrics
    rows = store.conn.execute(
        "SELECT t.number, t.run_id, t.params, t.system_attrs, t.pruned_at, r.state, r.epochs FROM search_trials t"
        " LEFT JOIN runs r ON r.id = t.run_id WHERE t.sweep_id = ? ORDER BY t.number",
        (sweep_id,),
    ).fetchall()
    trials = []
    for r in rows:
        gone = r["state"] is None
        trials.append(
            Trial(
                r["number"],
                None if gone else r["run_id"],
                json.loads(r["params"]),
                "deleted" if gone else r["state"],
                r["epochs"] or 0,
                [] if gone else read(r["run_id"]),
                json.loads(r["system_attrs"]),
                r["pruned_at"],
            )
        )
    return trials


def trial_of(store: Store, run_id: str) -> tuple[str, int, int | None] | None:
    """(sweep id, trial number, pruned_at) when `run_id` is a search's trial, else None."""
    row = store.conn.execute(
        "SELECT sweep_id, number, pruned_at FROM search_trials WHERE run_id = ?", (run_id,)
    ).fetchone()
    return None if row is None else (row["sweep_id"], row["number"], row["pruned_at"])


# ---------------------------------------------------------------- starting, topping up, extending


def open_search(store: Store, spec: SearchSpec, sweep_id: str, now: float | None = None) -> list[str]:
    """Store the search as `sweep_id` and queue its first trials; returns the queued run ids. Checks nothing
    that needs data or torch: engine.runs.sweeps.start_search does that first."""
    spec = with_absolute_model_files(spec)
    now = time.time() if now is None else now
    with _filling(store) as (c, made):
        c.execute("INSERT INTO searches (sweep_id, created, spec) VALUES (?, ?, ?)", (sweep_id, now, spec.dumps()))
        _fill(store, c, sweep_id, spec, now, made)
    return list(made)


def top_up(store: Store, sweep_id: str, now: float | None = None) -> list[str]:
    """Queue trials until `parallel` are queued or running or the search has all its trials; returns the
    new run ids. Called when a trial ends, and by `sweep --resume` (it is safe to call at any time)."""
    now = time.time() if now is None else now
    with _filling(store) as (c, made):
        spec = _spec_in(c, sweep_id)
        _fill(store, c, sweep_id, spec, now, made)
    return list(made)


def extend_search(store: Store, sweep_id: str, more: int, now: float | None = None) -> list[str]:
    """Give the search `more` trials (it may be finished) and queue what it can; returns the new run ids."""
    check_trials(more, "the number of trials to add")
    now = time.time() if now is None else now
    with _filling(store) as (c, made):
        spec = _spec_in(c, sweep_id)
        check_trials(spec.trials + more, "the search's total trials")
        spec = dataclasses.replace(spec, trials=spec.trials + more)
        c.execute("UPDATE searches SET spec = ? WHERE sweep_id = ?", (spec.dumps(), sweep_id))
        _fill(store, c, sweep_id, spec, now, made)
    return list(made)


def set_parallel(store: Store, sweep_id: str, parallel: int) -> None:
    """How many of the search's trials may be queued or running at once from now on."""
    check_parallel(parallel)
    with store.transaction() as c:
        spec = dataclasses.replace(_spec_in(c, sweep_id), parallel=parallel)
        c.execute("UPDATE searches SET spec = ? WHERE sweep_id = ?", (spec.dumps(), sweep_id))


def _spec_in(c: sqlite3.Connection, sweep_id: str) -> SearchSpec:
    row = c.execute("SELECT spec FROM searches WHERE sweep_id = ?", (sweep_id,)).fetchone()
    if row is None:
        raise SweepNotFound(
            f"no search {sweep_id!r} here (a grid sweep cannot be resumed or extended; "
            "`python -m engine sweep-report SWEEP` shows any sweep)"
        )
    return SearchSpec.from_json(json.loads(row["spec"]))


@contextlib.contextmanager
def _filling(store: Store) -> Iterator[tuple[sqlite3.Connection, list[str]]]:
    """BEGIN IMMEDIATE ... COMMIT around queueing trials; yields the connection and the list of run ids
    queued in it, whose folders are removed when the transaction rolls back."""
    made: list[str] = []
    try:
        with store.transaction() as c:
            yield c, made
    except BaseException:
        for run_id in made:
            shutil.rmtree(store.run_dir(run_id), ignore_errors=True)
        raise


def _fill(store: Store, c: sqlite3.Connection, sweep_id: str, spec: SearchSpec, now: float, made: list[str]) -> None:
    """Inside the transaction: ask Optuna for as many trials as the search may queue now, and queue them."""
    trials = load_trials(store, sweep_id)
    active = sum(t.state in ACTIVE for t in trials)
    for i in range(max(0, min(spec.parallel - active, spec.trials - len(trials)))):
        history = padded(trials)
        number = len(history)
        params = ask(spec, sweep_id, history)
        config = pin(spec.config(params))  # your own model: the hash of its file as the trial is queued
        run_id = store.create_run(config, sweep_id=sweep_id, now=now + i * 1e-6, tx=c)  # ids sort in asking order
        made.append(run_id)
        _queue_trial(c, run_id, sweep_id, number, params, now)
        trials.append(Trial(number, run_id, params, RunState.QUEUED.value, config.epochs))


def _queue_trial(c: sqlite3.Connection, run_id: str, sweep_id: str, number: int, params: dict, now: float) -> None:
    """The trial's train job and its trial row, in the transaction that created its run."""
    insert_job(c, JobKind.TRAIN.value, run_id, None, now)
    c.execute(
        "INSERT INTO search_trials (run_id, sweep_id, number, params) VALUES (?, ?, ?, ?)",
        (run_id, sweep_id, number, json.dumps(params, sort_keys=True)),
    )


# ---------------------------------------------------------------- inside a trial: pruning, then the next trial


def decide_pruning(store: Store, sweep_id: str, number: int, epoch: int) -> bool:
    """After `epoch` of trial `number` is recorded: ask the search's pruner, store its answer and memory."""
    with store.transaction() as c:
        spec = _spec_in(c, sweep_id)
        prune, attrs = prune_decision(spec, sweep_id, padded(load_trials(store, sweep_id)), number)
        c.execute(
            "UPDATE search_trials SET system_attrs = ?, pruned_at = ? WHERE sweep_id = ? AND number = ?",
            (json.dumps(attrs, sort_keys=True), epoch if prune else None, sweep_id, number),
        )
    return prune


class TrialHooks:
    """run_training's callbacks for one run. For a search's trial: decide pruning after each epoch, stop a
    pruned trial after its current batch, mark it pruned, and queue the next trials when it ends. For any
    other run they only pass `should_stop` through."""

    def __init__(self, store: Store, run_id: str, should_stop: Callable[[], bool] | None = None):
        self.store, self.run_id, self._should_stop = store, run_id, should_stop
        self.stopped_by_caller = False  # cancelled, shut down or lost: not the search's decision
        self.note: str | None = None  # what went wrong queueing the next trials, if anything
        found = trial_of(store, run_id)
        self.sweep_id: str | None = found[0] if found else None  # the search and the trial's number in it
        self.number: int | None = found[1] if found else None
        self.spec = load_spec(store, found[0]) if found else None
        self.pruned_at = found[2] if found else None  # decided before a crash: the trial stops again at once

    @property
    def is_trial(self) -> bool:
        return self.spec is not None

    def should_stop(self) -> bool:
        if self._should_stop is not None and self._should_stop():
            self.stopped_by_caller = True
            return True
        return self.pruned_at is not None

    def on_epoch(self, row: dict) -> None:
        spec, sweep_id, number = self.spec, self.sweep_id, self.number
        if spec is None or sweep_id is None or number is None or self.pruned_at is not None or spec.prune == "none":
            return
        if row["epoch"] >= spec.base.epochs:
            return  # its last epoch: nothing is left to save
        try:
            if decide_pruning(self.store, sweep_id, number, row["epoch"]):
                self.pruned_at = row["epoch"]
        except Exception as exc:  # never fail a trial for it: it trains on, unpruned this epoch
            self.note = f"could not decide early stopping after epoch {row['epoch']} ({type(exc).__name__}: {exc})"

    def ended(self, state: RunState, message: str) -> tuple[RunState, str]:
        """After run_training: the state the run really ended in; the search's next trials are queued."""
        spec, sweep_id = self.spec, self.sweep_id
        if spec is None or sweep_id is None:
            return state, message
        if state == RunState.CANCELLED and self.pruned_at is not None and not self.stopped_by_caller:
            rows = self.store.metrics(self.run_id)
            value = curve(rows, spec.objective).get(self.pruned_at)
            message = (
                f"stopped early by {RULE_NAMES[spec.prune]} after epoch {self.pruned_at} of "
                f"{spec.base.epochs}"
                + (f" ({spec.objective} {value:.4f})" if value is not None else "")
                + f"; {len(rows)} finished epoch(s) kept"
            )
            self.store.set_state(self.run_id, RunState.PRUNED, message)
            state = RunState.PRUNED
        if not self.stopped_by_caller and state != RunState.INTERRUPTED:  # interrupted: it resumes later
            try:
                top_up(self.store, sweep_id)
            except Exception as exc:  # never fail the trial for it: `sweep --resume` queues them later
                self.note = f"could not queue the search's next trials ({type(exc).__name__}: {exc})"
        if self.note:
            message = f"{message}; {self.note}" if message else self.note
        return state, message
