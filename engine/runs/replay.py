"""The early-stopping replay: what a rule (median, ASHA, Hyperband) would have done to runs that trained
to the end, had it been on.

Each run reports its objective after every epoch, in the order the runs ran, to a fresh Optuna study
with that rule as its pruner, and stops where the pruner says so. Pure: runs' curves in, a Replay out;
engine.runs.sweep_report feeds it a sweep's runs and the Sweeps page draws what it says.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import ReplayError
from engine.runs.search_space import OBJECTIVES, RULES
from engine.runs.study import import_optuna, make_pruner


@dataclass(frozen=True)
class Replay:
    rule: str  # median, asha or hyperband
    stopped: tuple[str, ...]  # runs the rule would have stopped, in run order
    stopped_at: dict  # run id -> the epoch after which it would have stopped
    epochs_run: int  # epochs the runs really trained
    epochs_replayed: int  # epochs they would have trained with the rule on
    winner: str | None  # the best finished run (by the objective at its last epoch)
    winner_survives: bool | None  # None when no run finished

    @property
    def epochs_saved_fraction(self) -> float:
        return (self.epochs_run - self.epochs_replayed) / self.epochs_run if self.epochs_run else 0.0

    def to_json(self) -> dict:
        return {
            "rule": self.rule,
            "stopped": list(self.stopped),
            "epochs_saved_fraction": round(self.epochs_saved_fraction, 4),
            "winner_survives": self.winner_survives,
        }


@dataclass(frozen=True)
class ReplayRun:
    run: str  # run id
    curve: dict  # epoch -> objective value, every epoch it trained
    budget: int  # the epochs it was set to train
    finished: bool  # it trained to its budget (done); a failed or cancelled run is not a candidate winner


def replay(runs: Sequence[ReplayRun], rule: str, objective: str, study_name: str = "replay") -> Replay:
    """What `rule` would have done to these runs had it been on, run in this order, one after another:
    each run reports its objective after every epoch to a fresh Optuna study (ask-and-tell) and stops
    where the pruner says so; at its last epoch there is nothing to save, so no decision is taken."""
    if rule not in RULES or rule == "none":
        raise ReplayError(f"unknown replay rule {rule!r}; valid: {', '.join(r for r in RULES if r != 'none')}")
    optuna = import_optuna()
    TrialState = optuna.trial.TrialState
    direction = OBJECTIVES.get(objective) or ("maximize" if objective.endswith("acc") else "minimize")
    study = optuna.create_study(
        study_name=study_name,
        direction=direction,
        sampler=optuna.samplers.RandomSampler(0),
        pruner=make_pruner(rule, max((r.budget for r in runs), default=1)),
    )
    stopped_at: dict[str, int] = {}
    run_epochs = replayed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in runs:
            trial = study.ask()
            epochs = sorted(r.curve)
            run_epochs += len(epochs)
            for epoch in epochs:
                trial.report(r.curve[epoch], epoch)
                if epoch < r.budget and trial.should_prune():
                    stopped_at[r.run] = epoch
                    break
            replayed += stopped_at.get(r.run, len(epochs))
            if r.run in stopped_at:
                study.tell(trial, state=TrialState.PRUNED)
            elif r.finished and epochs:
                study.tell(trial, r.curve[epochs[-1]])
            else:
                study.tell(trial, state=TrialState.FAIL)
    winner = best_run([(r.run, r.curve[max(r.curve)]) for r in runs if r.finished and r.curve], direction)
    return Replay(
        rule,
        tuple(r.run for r in runs if r.run in stopped_at),
        stopped_at,
        run_epochs,
        replayed,
        winner,
        None if winner is None else winner not in stopped_at,
    )


def best_run(values: Sequence[tuple[str, float]], direction: str) -> str | None:
    """The run with the best value (the first on ties), or None."""
    if not values:
        return None
    pick = max if direction == "maximize" else min
    return pick(values, key=lambda rv: rv[1])[0]
