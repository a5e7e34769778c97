"""Whether a difference between groups of runs is real: their mean and spread, Welch's t-test between
every two groups, and the verdict in plain words.

The test is Welch's t-test (scipy.stats.ttest_ind with equal_var=False) on one value per run
(the final or the best value of a metric), so two groups may have different sizes and spreads.
A group of one run has no spread: its seed noise is unknown and no verdict is given. Numbers in,
numbers and sentences out: no torch, no Streamlit.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from scipy.stats import ttest_ind

from engine.errors import CompareError

THRESHOLD = 0.05  # a difference is called real when the test's p-value is below this
FAR = 5  # p below THRESHOLD / FAR reads "far beyond seed noise"
TEST_NAME = "Welch's t-test"
RECOMMENDED_SEEDS = 3


@dataclass(frozen=True)
class Group:
    label: str  # how tables and verdicts name it: what sets it apart from the other groups
    runs: tuple[str, ...]  # run ids, in the order given
    values: tuple[float, ...]  # one value per run, on the metrics files' scale (accuracy as a fraction)
    seeds: tuple[int | None, ...] = ()  # each run's seed (None: its config has none, e.g. a script's run)

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


class Call(str, Enum):
    REAL = "real"
    NOISE = "within noise"
    UNKNOWN = "noise unknown"


@dataclass(frozen=True)
class Verdict:
    call: Call  # what the test says about the difference
    text: str  # the plain-words sentence, better group first


# ---------------------------------------------------------------- statistics


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
            return Verdict(
                Call.UNKNOWN,
                f"{head}; every seed gave the same value, so there is no noise to measure the difference against",
            )
        single = [g.label for g in (better, worse) if g.n < 2]
        who = "each" if len(single) == 2 else f"of {single[0]}"
        return Verdict(
            Call.UNKNOWN,
            f"{head}, but with one seed {who} the seed noise is unknown, so this may "
            f"be luck: train {RECOMMENDED_SEEDS} seeds of each to tell",
        )
    counts = (
        f"{better.n} seeds each"
        if better.n == worse.n
        else f"{better.n} seeds of {better.label}, {worse.n} of {worse.label}"
    )
    if p < threshold:
        how = "far beyond" if p < threshold / FAR else "beyond"
        return Verdict(Call.REAL, f"{head}, {how} seed noise ({counts}, {format_p(p)})")
    spread = math.sqrt(((better.std or 0.0) ** 2 + (worse.std or 0.0) ** 2) / 2)  # a p-value: both have 2+
    return Verdict(
        Call.NOISE,
        f"{head}, within seed noise (seeds vary by {_amount(spread, metric)}, "
        f"{counts}, {format_p(p)}); run more seeds to tell",
    )
