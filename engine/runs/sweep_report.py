"""What a sweep (a grid or a search) learned: its trials, the best one, which hyperparameters
mattered (Optuna's importance), the epochs it spent, and an early-stopping replay.

Computed from the registry and the metrics files only; `sweep-report` prints it and the Sweeps
page draws it. A search is judged on its objective (a validation metric). A grid judges on
val_acc when every run held out a validation split; a grid without one (the course's
assignment 4) falls back to test_acc, and says so: good enough to see what early stopping does,
never a way to choose a model.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.distributions import CategoricalDistribution

from engine.config import HYPERPARAMETERS
from engine.errors import ReplayError, SweepNotFound
from engine.runs.records import RunKind, RunRecord, RunState
from engine.runs.replay import Replay, ReplayRun, best_run, replay
from engine.runs.search import load_spec, load_trials
from engine.runs.search_space import OBJECTIVES, SearchSpec
from engine.runs.store import Store
from engine.runs.study import ACTIVE, curve

Metrics = Callable[[str], list[dict]]


@dataclass
class TrialReport:
    run: str  # run id
    number: int  # trial number (a grid's runs are numbered in creation order)
    state: str  # the run's state: done, pruned, running, ...
    params: dict  # the searched (or, in a grid, varied) hyperparameters
    value: float | None  # the objective at its last finished epoch
    epochs: int  # epochs finished
    budget: int  # epochs it was set to train
    curve: dict = field(default_factory=dict)  # epoch -> objective
    pruned_at: int | None = None  # the epoch after which early stopping stopped it

    def to_json(self) -> dict:
        return {"run": self.run, "state": self.state, "params": self.params, "value": self.value, "epochs": self.epochs}


@dataclass
class SweepReport:
    sweep: str  # the sweep id
    search: str  # grid, random or tpe
    objective: str  # val_acc, val_loss (or, for a grid without validation, test_acc)
    direction: str  # maximize or minimize
    names: list[str]  # the searched (varied) hyperparameters
    trials: list[TrialReport]
    importance: dict[str, float]  # share of each searched hyperparameter, summing to 1 (empty: too few trials)
    spec: SearchSpec | None = None  # the search's settings; None for a grid
    replay: Replay | None = None

    @property
    def best(self) -> TrialReport | None:
        """The best trial that ran to the end (as Optuna's best_trial: pruned ones are not candidates)."""
        done = [t for t in self.trials if t.state == RunState.DONE.value and t.value is not None]
        run = best_run([(t.run, t.value) for t in done if t.value is not None], self.direction)
        return next((t for t in done if t.run == run), None)

    @property
    def epochs_run(self) -> int:
        return sum(t.epochs for t in self.trials)

    @property
    def epochs_budget(self) -> int:
        return sum(t.budget for t in self.trials)

    @property
    def prune(self) -> str:
        return self.spec.prune if self.spec else "none"

    @property
    def planned(self) -> int:
        """Trials the search will make in all (a grid: its runs)."""
        return self.spec.trials if self.spec else len(self.trials)

    @property
    def active(self) -> int:
        return sum(t.state in ACTIVE for t in self.trials)

    @property
    def on_validation(self) -> bool:
        return self.objective.startswith("val_")

    def to_json(self) -> dict:
        best = self.best
        out = {
            "sweep": self.sweep,
            "search": self.search,
            "objective": self.objective,
            "trials": [t.to_json() for t in self.trials],
            "best": None if best is None else {"run": best.run, "params": best.params, "value": best.value},
            "importance": self.importance,
            "epochs_run": self.epochs_run,
            "epochs_budget": self.epochs_budget,
        }
        if self.replay is not None:
            out["replay"] = self.replay.to_json()
        return out


def sweep_report(
    store: Store, sweep_id: str, replay_rule: str | None = None, metrics: Metrics | None = None
) -> SweepReport:
    """The report of one sweep; with `replay_rule`, also what that rule would have stopped."""
    read = metrics or store.metrics
    spec = load_spec(store, sweep_id)
    if spec is not None:
        report = _search_report(store, sweep_id, spec, read)
    else:
        runs = [r for r in store.list_runs(kind=RunKind.TRAIN.value) if r.sweep_id == sweep_id]
        if not runs:
            raise SweepNotFound(
                f"no sweep {sweep_id!r} in {store.root}; the Runs page and `python -m engine "
                "list --json` show each run's sweep_id"
            )
        report = _grid_report(sweep_id, runs, read)
    report.importance = importance(report)
    if replay_rule is not None:
        report.replay = replay_report(report, replay_rule)
    return report


def _search_report(store: Store, sweep_id: str, spec: SearchSpec, read: Metrics) -> SweepReport:
    trials = []
    for t in load_trials(store, sweep_id, read):
        if t.run_id is None:
            continue  # deleted
        values = curve(t.rows, spec.objective)
        trials.append(
            TrialReport(
                t.run_id,
                t.number,
                t.state,
                t.params,
                values[max(values)] if values else None,
                len(t.rows),
                t.epochs,
                values,
                t.pruned_at if t.state == "pruned" else None,
            )
        )
    return SweepReport(sweep_id, spec.sampler, spec.objective, spec.direction, spec.names, trials, {}, spec)


def _grid_report(sweep_id: str, runs: list[RunRecord], read: Metrics) -> SweepReport:
    rows = {r.id: read(r.id) for r in runs}
    with_rows = [r for r in runs if rows[r.id]]
    objective = "val_acc" if with_rows and all("val_acc" in rows[r.id][-1] for r in with_rows) else "test_acc"
    names = [n for n in HYPERPARAMETERS if len({repr(r.config.get(n)) for r in runs}) > 1]
    trials = []
    for number, r in enumerate(runs):
        values = curve(rows[r.id], objective)
        trials.append(
            TrialReport(
                r.id,
                number,
                r.state.value,
                {n: r.config.get(n) for n in names},
                values[max(values)] if values else None,
                len(rows[r.id]),
                r.epochs,
                values,
            )
        )
    return SweepReport(sweep_id, "grid", objective, OBJECTIVES.get(objective, "maximize"), names, trials, {})


def importance(report: SweepReport) -> dict[str, float]:
    """Optuna's parameter importance over the trials that ran to the end, as shares summing to 1;
    empty when fewer than two finished or their values do not differ."""
    done = [t for t in report.trials if t.state == RunState.DONE.value and t.value is not None]
    if len(done) < 2 or not report.names or len({t.value for t in done}) < 2:
        return {}
    if report.spec is not None:
        distributions = {d.name: d.distribution() for d in report.spec.dimensions}
    else:
        distributions = {
            n: CategoricalDistribution(sorted({t.params[n] for t in report.trials}, key=repr)) for n in report.names
        }
    study = optuna.create_study(direction=optuna.study.StudyDirection[report.direction.upper()])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.add_trials(
                [optuna.trial.create_trial(value=t.value, params=t.params, distributions=distributions) for t in done]
            )
            shares = optuna.importance.get_param_importances(study, params=report.names)
    except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. too few distinct values for the evaluator
        return {}
    total = sum(float(v) for v in shares.values())
    if not math.isfinite(total) or total <= 0:
        return {}
    return {name: float(shares.get(name, 0.0)) / total for name in report.names}


def replay_report(report: SweepReport, rule: str) -> Replay:
    """The replay of `rule` on this sweep's runs (which must have run without early stopping)."""
    if report.prune != "none":
        raise ReplayError(
            f"sweep {report.sweep} already stopped trials early ({report.prune}); a replay needs "
            "full curves: use it on a grid or on a search without --prune"
        )
    runs = [ReplayRun(t.run, t.curve, t.budget, t.state == RunState.DONE.value) for t in report.trials if t.curve]
    if not runs:
        raise ReplayError(f"sweep {report.sweep} has no finished epochs yet; replay it when its runs have trained")
    return replay(runs, rule, report.objective, study_name=report.sweep)


# ---------------------------------------------------------------- every sweep


@dataclass(frozen=True)
class SweepSummary:
    sweep: str  # the sweep id
    search: str  # grid, random or tpe
    created: float  # when its first run was made
    runs: int  # runs (trials) it has made so far
    planned: int  # runs it will make (a search's trials; a grid's runs)
    states: dict  # state -> how many runs

    @property
    def active(self) -> int:
        return sum(self.states.get(s, 0) for s in ACTIVE)


def list_sweeps(store: Store) -> list[SweepSummary]:
    """Every sweep in the registry, newest first."""
    specs = {
        row["sweep_id"]: SearchSpec.from_json(json.loads(row["spec"]))
        for row in store.conn.execute("SELECT sweep_id, spec FROM searches")
    }
    rows = store.conn.execute(
        "SELECT sweep_id, MIN(created) AS created, state, COUNT(*) AS n FROM runs"
        " WHERE sweep_id IS NOT NULL AND kind = 'train' GROUP BY sweep_id, state"
    ).fetchall()
    grouped: dict[str, dict] = {}
    for row in rows:
        g = grouped.setdefault(row["sweep_id"], {"created": row["created"], "states": {}})
        g["created"] = min(g["created"], row["created"])
        g["states"][row["state"]] = row["n"]
    out = []
    for sweep, g in grouped.items():
        spec = specs.get(sweep)
        runs = sum(g["states"].values())
        out.append(
            SweepSummary(
                sweep, spec.sampler if spec else "grid", g["created"], runs, spec.trials if spec else runs, g["states"]
            )
        )
    return sorted(out, key=lambda s: (s.created, s.sweep), reverse=True)


def sweep_stamp(store: Store, sweep_id: str) -> tuple:
    """Changes whenever the sweep's report may change (a run made, an epoch recorded, a state changed,
    the search extended), and not on batch progress: a cache key for the Sweeps page."""
    runs = store.conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(epoch), 0), GROUP_CONCAT(state) FROM runs WHERE sweep_id = ?", (sweep_id,)
    ).fetchone()
    spec = store.conn.execute("SELECT spec FROM searches WHERE sweep_id = ?", (sweep_id,)).fetchone()
    return tuple(runs) + (spec["spec"] if spec else None,)
