"""The Optuna study of a search, rebuilt from its trials in the registry: samplers, pruners, the next
trial's params and the prune decision.

Nothing lives in memory between steps: whenever a search needs Optuna, the study is rebuilt from
the registry's trial rows and the trials' metrics files (past trials added with
optuna.trial.create_trial, then ask-and-tell), used once and dropped. The sampler is seeded per
trial from (search seed, trial number): a search with a fixed --search-seed asks for the same
trials whenever it has seen the same results.

Optuna is imported only when a study is needed: the worker imports engine.runs.search (and so this
module) for every train job, and most runs are not trials.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING

from engine.errors import SearchSpaceError
from engine.runs.records import ACTIVE_STATES, RunState
from engine.runs.search_space import RULES, SearchSpec

if TYPE_CHECKING:
    import optuna

ACTIVE = tuple(sorted(s.value for s in ACTIVE_STATES))  # a trial queued, running or about to resume
SEED_STRIDE = 1_000_003  # per-trial sampler seed: search seed * stride + trial number
MEDIAN_STARTUP = 5  # the median rule prunes nothing until this many trials have finished (Optuna's default)
REDUCTION = 3  # ASHA and Hyperband keep the best third at each rung (rungs at epochs 1, 3, 9, ...)


def import_optuna() -> ModuleType:
    """Optuna, imported on first use (see the module's docstring), quiet but for warnings."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass
class Trial:
    """One trial as the registry holds it."""

    number: int  # Optuna's trial number
    run_id: str | None  # None: a gap (the run was deleted)
    params: dict  # the searched values
    state: str  # the run's state, or "deleted"
    epochs: int  # its budget: the epochs it trains unless stopped
    rows: list[dict] = field(default_factory=list)  # its metrics rows, one per finished epoch
    system_attrs: dict = field(default_factory=dict)  # the pruner's memory of it
    pruned_at: int | None = None  # the epoch after which it was pruned


def make_sampler(spec: SearchSpec, number: int) -> optuna.samplers.BaseSampler:
    optuna = import_optuna()
    seed = (spec.seed * SEED_STRIDE + number) % 2**32
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials still running count as bad guesses, so parallel trials spread out
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.startup, constant_liar=True)


def make_pruner(rule: str, max_epochs: int) -> optuna.pruners.BasePruner:
    optuna = import_optuna()
    if rule not in RULES:
        raise SearchSpaceError(f"unknown early-stopping rule {rule!r}; valid: {', '.join(RULES)}")
    if rule == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=0)
    if rule == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION)
    if rule == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(1, max_epochs), reduction_factor=REDUCTION
        )
    return optuna.pruners.NopPruner()


def curve(rows: list[dict], objective: str) -> dict[int, float]:
    """The objective after each finished epoch (non-finite values left out)."""
    out = {}
    for row in rows:
        value = row.get(objective)
        if isinstance(value, (int, float)) and math.isfinite(value) and isinstance(row.get("epoch"), int):
            out[int(row["epoch"])] = float(value)
    return out


def _frozen(trial: Trial | None, distributions: dict, objective: str) -> optuna.trial.FrozenTrial:
    """A registry trial as Optuna sees it: done -> COMPLETE (value at its last epoch), pruned -> PRUNED,
    queued or running -> RUNNING, anything else (failed, diverged, cancelled, deleted) -> FAIL."""
    optuna = import_optuna()
    TrialState = optuna.trial.TrialState
    if trial is None or trial.run_id is None:
        return optuna.trial.create_trial(state=TrialState.FAIL)
    values = curve(trial.rows, objective)
    state = {RunState.DONE.value: TrialState.COMPLETE, RunState.PRUNED.value: TrialState.PRUNED}.get(
        trial.state, TrialState.RUNNING if trial.state in ACTIVE else TrialState.FAIL
    )
    if state == TrialState.COMPLETE and not values:
        state = TrialState.FAIL
    try:
        return optuna.trial.create_trial(
            state=state,
            value=values[max(values)] if state == TrialState.COMPLETE else None,
            params=trial.params,
            distributions=distributions,
            intermediate_values=values,
            system_attrs=trial.system_attrs,
        )
    except ValueError:  # params outside the space (edited by hand): the trial tells Optuna nothing
        return optuna.trial.create_trial(state=TrialState.FAIL)


def padded(trials: Sequence[Trial]) -> list[Trial | None]:
    """Trials at their numbers' positions, None in gaps, so rebuilt studies keep Optuna's numbering."""
    out: list[Trial | None] = [None] * (max((t.number for t in trials), default=-1) + 1)
    for t in trials:
        out[t.number] = t
    return out


def build_study(spec: SearchSpec, sweep_id: str, history: Sequence[Trial | None]) -> optuna.Study:
    """An in-memory study holding `history` (padded), with the sampler of the next trial's number."""
    optuna = import_optuna()
    distributions = {d.name: d.distribution() for d in spec.dimensions}
    study = optuna.create_study(
        study_name=sweep_id,
        direction=spec.direction,
        sampler=make_sampler(spec, len(history)),
        pruner=make_pruner(spec.prune, spec.base.epochs),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental-feature notices
        study.add_trials([_frozen(t, distributions, spec.objective) for t in history])
    return study


def ask(spec: SearchSpec, sweep_id: str, history: Sequence[Trial | None]) -> dict:
    """The params of the next trial (number len(history)), given every trial so far."""
    study = build_study(spec, sweep_id, history)
    number = len(history)
    if number < len(spec.enqueued):
        study.enqueue_trial(dict(spec.enqueued[number]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = study.ask({d.name: d.distribution() for d in spec.dimensions})
    assert trial.number == number, (trial.number, number)
    return dict(trial.params)


def prune_decision(spec: SearchSpec, sweep_id: str, history: Sequence[Trial | None], number: int) -> tuple[bool, dict]:
    """Should trial `number` (running, its finished epochs in its rows) stop now? Also returns what the
    pruner now remembers about it (its system attrs), to be stored."""
    study = build_study(spec, sweep_id, history)
    frozen = study.get_trials(deepcopy=False)[number]
    if frozen.last_step is None:
        return False, dict(frozen.system_attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prune = bool(study.pruner.prune(study, frozen))
    return prune, dict(study.get_trials(deepcopy=False)[number].system_attrs)
