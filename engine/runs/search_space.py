"""A search: the space it may vary, parsed from what a person types, and how it searches it.

`--lr 1e-4:1e-1:log` is a range sampled on a log scale, `--lr 0:0.1` a range on a linear scale,
`--lr 0.001,0.01` a list of values, `--lr 0.001` one fixed value. Ranges exist only for the
continuous fields (RANGE_FIELDS); the other searchable fields take lists. The same parser
serves the command line and the Train page, so every bad input gets the same one-line
SearchSpaceError saying what was wrong and what is allowed. Nothing here imports torch, and Optuna
only when a dimension is turned into its distribution.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.config import MAX_SEED, TrainConfig, is_user_arch
from engine.errors import SearchSpaceError
from engine.model_files import locate

if TYPE_CHECKING:  # Optuna is imported only by a search
    from optuna.distributions import BaseDistribution

RANGE_FIELDS = ("lr", "weight_decay", "momentum")  # continuous: a range, a list or one value
LIST_FIELDS = ("arch", "batch_size", "optimizer", "seed")  # categorical: a list or one value
SEARCHABLE = RANGE_FIELDS + LIST_FIELDS
SAMPLERS = ("random", "tpe")
RULES = ("none", "median", "asha", "hyperband")
OBJECTIVES = {"val_acc": "maximize", "val_loss": "minimize"}  # objective -> direction
SEARCHES = ("grid", *SAMPLERS)  # `sweep --search`: grid is every combination of the lists
DEFAULT_VAL_SPLIT = 0.1  # a search always holds out this much of train unless told otherwise
DEFAULT_PARALLEL = 2  # trials queued or running at once: as workers come free they take the next
MAX_TRIALS = 1000
MAX_PARALLEL = 64
MAX_STARTUP = 10  # TPE samples at most this many trials at random before it models the results
EXAMPLES = {"lr": "1e-4:1e-1:log", "weight_decay": "1e-6:1e-3:log", "momentum": "0.8:0.99"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _kind(name: str) -> type:
    return type(getattr(TrainConfig(), name))


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: a range (low, high, log) or a list of choices."""

    name: str  # a TrainConfig field, one of SEARCHABLE
    low: float | None = None  # a range's low end; None for a list
    high: float | None = None  # a range's high end, above low
    log: bool = False  # a range sampled uniformly in log space (both ends > 0)
    choices: tuple = ()  # a list's distinct values (at least two); empty for a range

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution this dimension is sampled from."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        if self.low is not None and self.high is not None:  # a range
            return FloatDistribution(self.low, self.high, log=self.log)
        return CategoricalDistribution(list(self.choices))

    def describe(self) -> str:
        if self.is_range:
            return f"{self.low:g} to {self.high:g}" + (" (log scale)" if self.log else "")
        return ", ".join(f"{c:g}" if isinstance(c, float) else str(c) for c in self.choices)

    def to_json(self) -> dict:
        if self.is_range:
            return {"name": self.name, "low": self.low, "high": self.high, "log": self.log}
        return {"name": self.name, "choices": list(self.choices)}

    @classmethod
    def from_json(cls, d: dict) -> Dimension:
        if "choices" in d:
            return cls(d["name"], choices=tuple(d["choices"]))
        return cls(d["name"], float(d["low"]), float(d["high"]), bool(d["log"]))


# ---------------------------------------------------------------- parsing one field


def _number(label: str, text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number such as 0.001 or 1e-3"
        raise SearchSpaceError(f"{label}: {text!r} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise SearchSpaceError(f"{label}: {text!r} is not a finite number")
    return value


def _check_bounds(name: str, label: str, low: float, high: float, log: bool) -> None:
    """A range's ends against what the field allows (TrainConfig's limits)."""
    if name == "lr" and low <= 0:
        raise SearchSpaceError(
            f"{label}: the learning rate must be > 0, so a range must start above 0 "
            f"(got {low:g}); e.g. {EXAMPLES['lr']}"
        )
    if name == "weight_decay" and low < 0:
        raise SearchSpaceError(f"{label}: weight decay must be >= 0, got a range from {low:g}")
    if name == "momentum" and not (0 <= low and high < 1):
        raise SearchSpaceError(
            f"{label}: momentum must be in [0, 1), so a range must lie inside it "
            f"(got {low:g} to {high:g}); e.g. {EXAMPLES['momentum']}"
        )


def parse_range(name: str, text: str, label: str | None = None) -> Dimension:
    """'LOW:HIGH' or 'LOW:HIGH:log' -> a range Dimension of field `name`."""
    label = label or flag(name)
    if name not in RANGE_FIELDS:
        takes = (
            "one value"
            if name not in LIST_FIELDS
            else "a list of values (e.g. "
            + ("basic_nn,simple_cnn" if name == "arch" else "adam,sgd" if name == "optimizer" else "32,64,128")
            + ")"
        )
        raise SearchSpaceError(
            f"{label} {text}: {label} takes {takes}, not a range; ranges work only for "
            f"{', '.join(flag(f) for f in RANGE_FIELDS)}"
        )
    parts = [p.strip() for p in text.split(":")]
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].lower() != "log"):
        raise SearchSpaceError(
            f"{label}: {text!r} is not a range; write LOW:HIGH, or LOW:HIGH:log for a log "
            f"scale, e.g. {flag(name)} {EXAMPLES[name]}"
        )
    low, high = (_number(label, p, float) for p in parts[:2])
    log = len(parts) == 3
    if low > high:
        raise SearchSpaceError(
            f"{label} {text}: the low end {low:g} is above the high end {high:g}; "
            f"write LOW:HIGH with LOW < HIGH, e.g. {flag(name)} {parts[1]}:{parts[0]}" + (":log" if log else "")
        )
    if low == high:
        raise SearchSpaceError(
            f"{label} {text}: both ends are {low:g}; give one value ({flag(name)} {low:g}) or a range with LOW < HIGH"
        )
    if log and low <= 0:
        raise SearchSpaceError(
            f"{label} {text}: a log range needs both ends > 0, and {low:g} is not; "
            f"start it above 0 (e.g. {EXAMPLES[name]}) or drop :log for a linear range"
        )
    _check_bounds(name, label, low, high, log)
    return Dimension(name, low, high, log)


def parse_values(name: str, text: str, label: str | None = None) -> list:
    """'a,b,c' -> the distinct values in order, typed like the TrainConfig field."""
    label = label or flag(name)
    kind = _kind(name)
    values = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        value = _number(label, part, kind) if kind in (int, float) else part
        if value not in values:
            values.append(value)
    if not values:
        raise SearchSpaceError(f"{label}: give at least one value (several separated by commas)")
    return values


def parse_field(name: str, text: str, label: str | None = None) -> Dimension | list:
    """What was typed for one field: a range Dimension when it has a ':', else its list of values."""
    text = str(text).strip()
    if ":" in text:
        return parse_range(name, text, label)
    return parse_values(name, text, label)


# ---------------------------------------------------------------- the whole search


@dataclass(frozen=True)
class SearchSpec:
    """Everything a search needs to make its trials; stored as JSON beside the run registry."""

    base: TrainConfig  # the fixed fields; a trial replaces the searched ones with its params
    dimensions: tuple[Dimension, ...]  # what the search varies (ranges, or lists of 2+ values)
    sampler: str = "tpe"  # "random" or "tpe" (Optuna's samplers)
    trials: int = 20  # how many trials the search makes in all; extending the search raises it
    prune: str = "none"  # early-stopping rule: none, median, asha (successive halving), hyperband
    objective: str = "val_acc"  # what the search optimises, measured on the validation split
    seed: int = 0  # seeds the sampler (--search-seed); the training seed is base.seed or a dimension
    parallel: int = DEFAULT_PARALLEL  # trials queued or running at once
    startup: int = MAX_STARTUP  # trials TPE samples at random before it models the results
    enqueued: tuple[dict, ...] = ()  # params of the first trials, tried before any sampling (e.g. a baseline)

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def config(self, params: dict[str, Any]) -> TrainConfig:
        """The config of a trial with these params."""
        return self.base.replace(**params)

    def to_json(self) -> dict:
        return {
            "base": self.base.to_dict(),
            "dimensions": [d.to_json() for d in self.dimensions],
            "sampler": self.sampler,
            "trials": self.trials,
            "prune": self.prune,
            "objective": self.objective,
            "seed": self.seed,
            "parallel": self.parallel,
            "startup": self.startup,
            "enqueued": [dict(p) for p in self.enqueued],
        }

    @classmethod
    def from_json(cls, d: dict) -> SearchSpec:
        return cls(
            base=TrainConfig.from_dict(d["base"]),
            dimensions=tuple(Dimension.from_json(x) for x in d["dimensions"]),
            sampler=d["sampler"],
            trials=int(d["trials"]),
            prune=d["prune"],
            objective=d["objective"],
            seed=int(d["seed"]),
            parallel=int(d["parallel"]),
            startup=int(d["startup"]),
            enqueued=tuple(d.get("enqueued", ())),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def default_startup(trials: int) -> int:
    """A third of the trials, 2 to MAX_STARTUP: small searches get to use TPE's model too."""
    return max(2, min(MAX_STARTUP, trials // 3))


def check_trials(trials: Any, what: str = "--trials") -> int:
    if isinstance(trials, bool) or not isinstance(trials, int):
        raise SearchSpaceError(f"{what} must be a whole number, got {trials!r}")
    if not 1 <= trials <= MAX_TRIALS:
        raise SearchSpaceError(f"{what} must be from 1 to {MAX_TRIALS}, got {trials}")
    return trials


def check_parallel(parallel: Any) -> int:
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
        raise SearchSpaceError(f"--parallel must be a whole number from 1 to {MAX_PARALLEL}, got {parallel!r}")
    return parallel


def build_spec(
    base: TrainConfig,
    fields: dict[str, Dimension | list],
    *,
    sampler: str = "tpe",
    trials: int = 20,
    prune: str = "none",
    objective: str = "val_acc",
    seed: int = 0,
    parallel: int = DEFAULT_PARALLEL,
    enqueued: tuple[dict, ...] = (),
) -> SearchSpec:
    """A checked SearchSpec from parsed fields (parse_field's results, by field name).

    A list of one value is fixed in `base`; a list of several values or a range is a dimension.
    Checks everything that needs no data: the space, the sampler, the rule, the objective, the
    trials, the seeds and the validation split. Raises SearchSpaceError.
    """
    if sampler not in SAMPLERS:
        raise SearchSpaceError(f"unknown search {sampler!r}; valid: {', '.join(SEARCHES)} (grid takes lists only)")
    if prune not in RULES:
        raise SearchSpaceError(f"unknown early-stopping rule {prune!r}; valid: {', '.join(RULES)}")
    if objective not in OBJECTIVES:
        raise SearchSpaceError(
            f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)} (a search never chooses on the test set)"
        )
    check_trials(trials)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise SearchSpaceError(f"--search-seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    check_parallel(parallel)
    if not base.val_split > 0:
        raise SearchSpaceError(
            f"a search chooses on the validation split, so it needs one: --val-split must be "
            f"> 0 (default {DEFAULT_VAL_SPLIT}), got {base.val_split}"
        )
    dims, fixed = [], {}
    for name, value in fields.items():
        if name not in SEARCHABLE:
            raise SearchSpaceError(
                f"a search cannot vary {name!r}; searchable: {', '.join(flag(f) for f in SEARCHABLE)}"
            )
        if isinstance(value, Dimension):
            dims.append(value)
        elif len(value) == 1:
            fixed[name] = value[0]
        else:
            dims.append(Dimension(name, choices=tuple(value)))
    if not dims:
        raise SearchSpaceError(
            "this search has nothing to search: give a range (e.g. --lr 1e-4:1e-1:log) or a "
            "list of two or more values (e.g. --arch basic_nn,simple_cnn)"
        )
    base = base.replace(**fixed)
    names = {d.name for d in dims}
    for params in enqueued:
        if set(params) != names:
            raise SearchSpaceError(f"an enqueued trial must set exactly {', '.join(sorted(names))}, got {params}")
    return SearchSpec(
        base=base,
        dimensions=tuple(dims),
        sampler=sampler,
        trials=trials,
        prune=prune,
        objective=objective,
        seed=seed,
        parallel=parallel,
        startup=default_startup(trials),
        enqueued=tuple(dict(p) for p in enqueued),
    )


def corner_configs(spec: SearchSpec) -> list[TrainConfig]:
    """Configs that together touch every list value and both ends of every range: checking these
    checks every config the search can make, without training any."""
    configs = []
    for dim in spec.dimensions:
        values = (dim.low, dim.high) if dim.is_range else dim.choices
        configs += [spec.base.replace(**{dim.name: v}) for v in values]
    return configs


def with_absolute_model_files(spec: SearchSpec) -> SearchSpec:
    """`spec` with every model file of your own (an arch FILE.py:Class, fixed or one of the choices) made
    absolute, so a worker started in another folder finds it; ConfigError naming a file that is missing.
    Each trial records its file's hash when it is queued (engine.model_files.pin)."""

    def absolute(arch: str) -> str:
        return locate(arch).arch if is_user_arch(arch) else arch

    dims = tuple(
        dataclasses.replace(d, choices=tuple(absolute(c) for c in d.choices)) if d.name == "arch" else d
        for d in spec.dimensions
    )
    enqueued = tuple({**p, "arch": absolute(p["arch"])} if "arch" in p else p for p in spec.enqueued)
    return dataclasses.replace(
        spec, base=spec.base.replace(arch=absolute(spec.base.arch)), dimensions=dims, enqueued=enqueued
    )
