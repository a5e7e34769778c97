"""Groups of runs that differ only in seed, their mean and spread, and whether a difference is real.

Plain data in (run ids, config dicts, metrics rows), numbers and sentences out: no torch, no
Streamlit. `load_runs` is the thin part that reads them from a Store.

The test is Welch's t-test (scipy.stats.ttest_ind with equal_var=False) on one value per run
(the final or the best value of a metric), so two groups may have different sizes and spreads.
A group of one run has no spread: its seed noise is unknown and no verdict is given.
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from scipy.stats import ttest_ind

from engine.config import TrainConfig, arch_label, reuse_key
from engine.errors import CompareError, ConfigError, RunNotFound
from engine.runs.store import Store

METRICS = ("test_acc", "test_loss", "val_acc", "val_loss")
RULES = ("final", "best")
THRESHOLD = 0.05  # a difference is called real when the test's p-value is below this
FAR = 5  # p below THRESHOLD / FAR reads "far beyond seed noise"
TEST_NAME = "Welch's t-test"
RECOMMENDED_SEEDS = 3
# Config fields that can name a group, in the order a label lists them (seed never does: it is the noise).
LABEL_FIELDS = ("arch", "dataset", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay",
                "val_split", "train_limit", "pretrained", "device", "sweep")
SHORT = {"batch_size": "bs", "weight_decay": "wd", "val_split": "val", "train_limit": "limit"}


@dataclass(frozen=True)
class RunData:
    id: str  # the run id
    config: dict  # its config.json
    rows: tuple[dict, ...]  # its metrics rows, one per finished epoch


@dataclass(frozen=True)
class Group:
    label: str  # how tables and verdicts name it: what sets it apart from the other groups
    runs: tuple[str, ...]  # run ids, in the order given
    values: tuple[float, ...]  # one value per run, on the metrics files' scale (accuracy as a fraction)
    seeds: tuple[int, ...] = ()  # each run's seed, when known

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        """The sample standard deviation (n - 1), as Welch's test uses it; None for a single run."""
        return statistics.stdev(self.values) if self.n >= 2 else None

    def to_json(self) -> dict:
        return {"label": self.label, "runs": list(self.runs), "n": self.n, "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class Pair:
    a: int  # index of a group
    b: int  # index of another group
    diff: float  # mean(a) - mean(b)
    p: float | None  # Welch's t-test p-value; None when a group has a single run or no spread at all
    real: bool | None  # p < threshold; None without a p-value

    def to_json(self) -> dict:
        return {"a": self.a, "b": self.b, "diff": self.diff, "p": self.p, "real": self.real}


@dataclass(frozen=True)
class Comparison:
    metric: str  # one of METRICS
    rule: str  # one of RULES
    threshold: float  # the p-value below which a difference is real
    groups: tuple[Group, ...]
    pairs: tuple[Pair, ...]  # every two groups, a < b

    def to_json(self) -> dict:
        return {"metric": self.metric, "groups": [g.to_json() for g in self.groups],
                "pairs": [p.to_json() for p in self.pairs]}


class Call(str, Enum):
    REAL = "real"
    NOISE = "within noise"
    UNKNOWN = "noise unknown"


@dataclass(frozen=True)
class Verdict:
    call: Call  # what the test says about the difference
    text: str  # the plain-words sentence, better group first


# ---------------------------------------------------------------- groups


def _seedless(config: Mapping) -> str:
    """What makes two runs the same experiment apart from the seed (the data root counts only for
    the datasets read from it, as for reusing finished runs)."""
    try:
        values = reuse_key(TrainConfig.from_dict(dict(config)))
    except (ConfigError, TypeError):
        values = dict(config)
    values.pop("seed", None)
    return json.dumps(values, sort_keys=True, default=str)


def _collect(configs: Mapping[str, Mapping], key) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for run_id, config in configs.items():
        groups.setdefault(key(config), []).append(run_id)
    return list(groups.values())


def group_by_config(configs: Mapping[str, Mapping]) -> list[list[str]]:
    """Run ids grouped by configuration minus the seed, in the order the runs come."""
    return _collect(configs, _seedless)


def group_by_field(configs: Mapping[str, Mapping], field: str) -> list[list[str]]:
    """Run ids grouped by one config field (any hyperparameter), in the order the runs come."""
    return _collect(configs, lambda config: json.dumps(config.get(field), default=str))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def labels(groups: Sequence[Sequence[str]], configs: Mapping[str, Mapping]) -> list[str]:
    """A name per group: the fields that are the same within each group and differ between them
    ("simple_cnn", "lr 0.01 · bs 32"); "group 2 · seeds 3-5" when nothing tells them apart."""
    shown = []
    for name in LABEL_FIELDS:
        per_group = [{json.dumps(configs[r].get(name), default=str) for r in ids} for ids in groups]
        if all(len(values) == 1 for values in per_group) and len({next(iter(v)) for v in per_group}) > 1:
            shown.append(name)
    out = []
    for i, ids in enumerate(groups, start=1):
        first = configs[ids[0]]
        parts = [arch_label(str(first.get(n))) if n == "arch" else _fmt(first.get(n)) if n == "dataset"
                 else f"{SHORT.get(n, n)} {_fmt(first.get(n))}" for n in shown]
        seeds = [configs[r].get("seed") for r in ids]
        out.append(" · ".join(parts) if parts else f"group {i} · {seed_text(seeds)}")
    for i, label in enumerate(out):
        if out.count(label) > 1:
            out[i] = f"{label} (group {i + 1})"
    return out


def seed_text(seeds: Sequence) -> str:
    """[0, 1, 2] -> 'seeds 0-2'; [4] -> 'seed 4'; [0, 2, 5] -> 'seeds 0, 2, 5'."""
    known = sorted(s for s in seeds if isinstance(s, int))
    if not known:
        return "seeds unknown"
    if len(known) == 1:
        return f"seed {known[0]}"
    if known == list(range(known[0], known[0] + len(known))) and len(known) > 2:
        return f"seeds {known[0]}-{known[-1]}"
    return "seeds " + ", ".join(str(s) for s in known)


def check_membership(loose: Sequence[str], explicit: Sequence[Sequence[str]]) -> None:
    """Every run at most once: not twice in the runs given, not twice in a group, not in two groups."""
    where: dict[str, int] = {}
    for number, ids in enumerate(explicit, start=1):
        for run_id in ids:
            if run_id in where:
                if where[run_id] == number:
                    raise CompareError(f"run {run_id} is given twice in group {number}; give each run once")
                raise CompareError(f"run {run_id} is in two groups ({where[run_id]} and {number}); "
                                   "a run can be in one group only")
            where[run_id] = number
    seen = set()
    for run_id in loose:
        if run_id in where:
            raise CompareError(f"run {run_id} is given on its own and in group {where[run_id]}; "
                               "a run can be in one group only")
        if run_id in seen:
            raise CompareError(f"run {run_id} is given twice; give each run once")
        seen.add(run_id)


# ---------------------------------------------------------------- values and statistics


def run_value(run: RunData, metric: str, rule: str) -> float:
    """The run's final or best value of `metric` (best: highest accuracy, lowest loss)."""
    if metric not in METRICS:
        raise CompareError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if rule not in RULES:
        raise CompareError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    if not run.rows:
        raise CompareError(f"run {run.id} has no finished epoch yet, so it has no {metric}; "
                           "wait for its first epoch or leave it out")
    rows = sorted(run.rows, key=lambda r: r.get("epoch", 0))
    values = [float(r[metric]) for r in rows if r.get(metric) is not None]
    if not values:
        if metric.startswith("val_"):
            raise CompareError(f"run {run.id} has no {metric}: it was trained without a validation split; "
                               "compare test_acc or test_loss instead")
        raise CompareError(f"run {run.id} has no {metric}; valid metrics it has: "
                           f"{', '.join(m for m in METRICS if m in rows[-1]) or 'none'}")
    if rule == "final":
        return values[-1]
    return max(values) if metric.endswith("_acc") else min(values)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Welch's t-test p-value (two-sided) for two samples; None when either has fewer than two
    values, or when neither has any spread and their means are equal (nothing to test)."""
    if len(a) < 2 or len(b) < 2:
        return None
    with warnings.catch_warnings():  # nearly identical values: scipy warns, the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(list(a), list(b), equal_var=False).pvalue)
    return None if math.isnan(p) else p


def compare_groups(groups: Sequence[Group], threshold: float = THRESHOLD) -> tuple[Pair, ...]:
    """Every two groups (a < b): the difference of their means, the p-value and whether it is real."""
    pairs = []
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            p = welch_p(groups[i].values, groups[j].values)
            pairs.append(Pair(i, j, groups[i].mean - groups[j].mean, p, None if p is None else p < threshold))
    return tuple(pairs)


def check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise CompareError(f"the threshold must be a p-value between 0 and 1 (exclusive), got {threshold}")
    return float(threshold)


def build(loose: Sequence[RunData], groups: Sequence[Sequence[RunData]] = (), *, metric: str = "test_acc",
          rule: str = "final", threshold: float = THRESHOLD) -> Comparison:
    """Compare runs: each of `groups` is one group as given; the `loose` runs are grouped by
    configuration minus the seed. Raises CompareError for anything that cannot be compared."""
    check_threshold(threshold)
    check_membership([r.id for r in loose], [[r.id for r in g] for g in groups])
    by_id = {r.id: r for r in [*loose, *(r for g in groups for r in g)]}
    configs = {run_id: r.config for run_id, r in by_id.items()}
    ids = [[r.id for r in g] for g in groups] + group_by_config({r.id: r.config for r in loose})
    if len(ids) < 2:
        raise CompareError(f"a comparison needs at least two groups, and these {len(by_id)} run(s) make one "
                           "(they differ only in seed); add runs of another configuration, or split them "
                           "into groups with --group RUN,RUN,... --group RUN,RUN,...")
    names = labels(ids, configs)
    made = tuple(Group(name, tuple(g), tuple(run_value(by_id[r], metric, rule) for r in g),
                       tuple(configs[r].get("seed") for r in g)) for name, g in zip(names, ids))
    return Comparison(metric, rule, threshold, made, compare_groups(made, threshold))


def load_runs(store: Store, refs: Sequence[str]) -> list[RunData]:
    """The runs named by id or folder, with their configs and metrics rows; every unknown one named."""
    found, unknown = [], []
    for ref in refs:
        try:
            record = store.resolve(ref)
        except RunNotFound:
            unknown.append(ref)
            continue
        found.append(RunData(record.id, record.config, tuple(store.metrics(record.id))))
    if unknown:
        raise CompareError(f"unknown run(s) {', '.join(unknown)} in {store.root}; "
                           "`python -m engine list` shows the runs")
    return found


# ---------------------------------------------------------------- the wording


def higher_is_better(metric: str) -> bool:
    return metric.endswith("acc")


def best_index(groups: Sequence[Group], metric: str) -> int:
    """The group with the best mean (highest accuracy, lowest loss)."""
    means = [g.mean for g in groups]
    return means.index(max(means) if higher_is_better(metric) else min(means))


def _amount(value: float, metric: str) -> str:
    if higher_is_better(metric):
        return f"{100 * value:.2f} points"
    return f"{value:.4f}"


def _value(value: float, metric: str) -> str:
    return f"{100 * value:.2f}%" if higher_is_better(metric) else f"{value:.4f}"


def _metric_name(metric: str) -> str:
    split, kind = metric.rsplit("_", 1)
    split = {"val": "validation"}.get(split, split)
    return f"{split} {'accuracy' if kind == 'acc' else 'loss'}"


def format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def verdict(a: Group, b: Group, metric: str, threshold: float = THRESHOLD, p: float | None = None) -> Verdict:
    """Whether the difference between two groups is larger than seed noise, in plain words.

    "simple_cnn is 5.10 points ahead of basic_nn, far beyond seed noise (3 seeds each, p = 0.004)";
    "… within seed noise (seeds vary by 0.40 points, p = 0.31); run more seeds to tell"; with one
    seed in a group, the noise is unknown and no verdict is given. `p` is computed when not given.
    """
    if p is None:
        p = welch_p(a.values, b.values)
    better, worse = (a, b) if (a.mean >= b.mean) == higher_is_better(metric) else (b, a)
    gap = abs(a.mean - b.mean)
    if gap == 0:
        head = f"{better.label} and {worse.label} are level at {_value(better.mean, metric)}"
    elif higher_is_better(metric):
        head = f"{better.label} is {_amount(gap, metric)} ahead of {worse.label}"
    else:
        head = f"{better.label}'s {_metric_name(metric)} is {_amount(gap, metric)} lower than {worse.label}'s"
    if p is None:
        if better.n >= 2 and worse.n >= 2:
            return Verdict(Call.UNKNOWN, f"{head}; every seed gave the same value, so there is no noise "
                                         "to measure the difference against")
        single = [g.label for g in (better, worse) if g.n < 2]
        who = "each" if len(single) == 2 else f"of {single[0]}"
        return Verdict(Call.UNKNOWN, f"{head}, but with one seed {who} the seed noise is unknown, so this may "
                                     f"be luck: train {RECOMMENDED_SEEDS} seeds of each to tell")
    counts = (f"{better.n} seeds each" if better.n == worse.n
              else f"{better.n} seeds of {better.label}, {worse.n} of {worse.label}")
    if p < threshold:
        how = "far beyond" if p < threshold / FAR else "beyond"
        return Verdict(Call.REAL, f"{head}, {how} seed noise ({counts}, {format_p(p)})")
    spread = math.sqrt((better.std ** 2 + worse.std ** 2) / 2)
    return Verdict(Call.NOISE, f"{head}, within seed noise (seeds vary by {_amount(spread, metric)}, "
                               f"{counts}, {format_p(p)}); run more seeds to tell")
