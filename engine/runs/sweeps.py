"""Sweeps: many runs made together. A grid: every combination of the listed values; or a search:
random or TPE trials over ranges and lists (engine.runs.search).

`submit`, `submit_sweep` and `start_search` check each config exactly as `train` does
(engine.ml.train.preflight) before anything is queued, so a bad point never leaves half a sweep
behind; with `reuse`, a config identical to a finished run is not trained again.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.config import TrainConfig, reuse_key  # reuse_key: torch-free, engine.runs.compare uses it too
from engine.errors import ConfigError, DatasetError, ModelError
from engine.ml.train import preflight
from engine.model_files import pin
from engine.runs import search
from engine.runs.jobs import queue_train
from engine.runs.search_space import SearchSpec, corner_configs, with_absolute_model_files
from engine.runs.store import Store


def submit(
    store: Store, config: TrainConfig, *, sweep_id: str | None = None, now: float | None = None, download: bool = False
) -> str:
    """Validate `config` exactly like `train` does, create its queued run and a train job; returns the run id."""
    config = pin(config)  # your own model: its file's absolute path and the hash of its content
    preflight(config, download)
    return queue_train(store, config, sweep_id, now)


SWEEPABLE = ("arch", "dataset", "batch_size", "lr", "epochs", "optimizer", "seed")
MAX_SWEEP_RUNS = 100  # runs in one grid unless the caller raises it (sweep --max-runs); more is likely a typo


def sweep_grid(
    base: TrainConfig, max_runs: int = MAX_SWEEP_RUNS, repeats: int = 1, **lists: Sequence[Any]
) -> list[TrainConfig]:
    """Every combination of the listed values over `base`, in a stable order, duplicates dropped.

    sweep_grid(base, lr=[0.1, 0.01], batch_size=[32, 64]) -> 4 configs. A grid whose combinations,
    each run `repeats` times (seeds.with_seeds), make more than `max_runs` runs is refused before
    any of it is built.
    """
    for name, values in lists.items():
        if name not in SWEEPABLE:
            raise ConfigError(f"cannot sweep over {name!r}; sweepable fields: {', '.join(SWEEPABLE)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ConfigError(f"sweep values for {name} must be a list, got {values!r}")
        if len(list(values)) == 0:
            raise ConfigError(f"sweep values for {name} are empty; give at least one value")
    names = list(lists)
    count = math.prod(len(list(lists[n])) for n in names) * repeats
    if count > max_runs:
        each = f" ({count // repeats:,} configs x {repeats} seeds)" if repeats > 1 else ""
        raise ConfigError(
            f"that grid has {count:,} runs{each}, over the limit of {max_runs:,} runs per sweep; "
            f"give fewer values (the command line's --max-runs raises the limit)"
        )
    seen, grid = set(), []
    for combo in itertools.product(*(list(lists[n]) for n in names)):
        config = base.replace(**dict(zip(names, combo)))
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in seen:
            seen.add(key)
            grid.append(config)
    return grid


def new_sweep_id(now: float | None = None) -> str:
    return (
        "sweep-"
        + time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
        + "-"
        + secrets.token_hex(2)
    )


@dataclass
class PlannedRun:
    config: TrainConfig
    reuse: str | None = None  # a finished run with the identical config, when reusing


def plan_sweep(
    store: Store, configs: Sequence[TrainConfig], reuse: bool = False, download: bool = False
) -> list[PlannedRun]:
    """Validate every config (preflight) and find reusable finished runs; queues nothing.

    A bad config raises ConfigError/DatasetError/ModelError naming its position and values.
    """
    if not configs:
        raise ConfigError("a sweep needs at least one configuration")
    plan = []
    for i, config in enumerate(configs, start=1):
        try:
            config = pin(config)
            preflight(config, download)
        except (ConfigError, DatasetError, ModelError) as exc:
            what = ", ".join(f"{k}={getattr(config, k)}" for k in SWEEPABLE)
            raise type(exc)(f"sweep config {i} of {len(configs)} ({what}): {exc}") from None
        plan.append(PlannedRun(config, find_finished(store, config) if reuse else None))
    return plan


def submit_sweep(
    store: Store, configs: Sequence[TrainConfig], reuse: bool = False, now: float | None = None, download: bool = False
) -> tuple[str, list[str]]:
    """Queue `configs` as one sweep; returns (sweep_id, run_ids in config order).

    With reuse=True a config identical to a finished (done) run is not retrained:
    that run's id is returned in its place (it keeps its own sweep id).
    """
    plan = plan_sweep(store, configs, reuse, download)
    sweep_id = new_sweep_id(now)
    run_ids = [p.reuse or queue_train(store, p.config, sweep_id, now) for p in plan]
    return sweep_id, run_ids


def find_finished(store: Store, config: TrainConfig) -> str | None:
    """The newest done train run whose config trains the same run as `config`, with its model on disk."""
    key = reuse_key(config)
    return store.find_done(config.arch, config.dataset, lambda other: reuse_key(other) == key)


def check_space(spec: SearchSpec, download: bool = False) -> None:
    """Every check a trial could fail before training, on configs that touch every value of the space
    (ConfigError, DatasetError or ModelError naming the value)."""
    spec = with_absolute_model_files(spec)
    for config in corner_configs(spec):
        try:
            preflight(pin(config), download)
        except (ConfigError, DatasetError, ModelError) as exc:
            what = ", ".join(f"{d.name}={getattr(config, d.name)}" for d in spec.dimensions)
            raise type(exc)(f"the search space ({what}): {exc}") from None


def start_search(
    store: Store, spec: SearchSpec, *, now: float | None = None, download: bool = False, check: bool = True
) -> tuple[str, list[str]]:
    """Check the search's space (unless `check` is False), store it and queue its first trials;
    returns (sweep id, the queued run ids). The worker queues the next trials as trials end."""
    if check:
        check_space(spec, download)
    sweep_id = new_sweep_id(now)
    return sweep_id, search.open_search(store, spec, sweep_id, now)
