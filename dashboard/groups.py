"""Groups of runs for the Compare page: runs that differ only in seed (or share a hyperparameter or a
sweep), each group's mean curve and spread, and the test between the groups. Pure: no Streamlit."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from dashboard.runs_table import COLOR_CHOICES
from dashboard.tables import SummarySpec
from engine.runs.compare import Comparison, group_by_config, group_by_field, labels, seed_text
from engine.runs.verdicts import THRESHOLD, Group, best_index, compare_groups, verdict

# How the Compare page can group runs: "none" keeps one line per run, "config" puts together the runs
# that differ only in seed, a hyperparameter puts together the runs sharing its value, "sweep" the
# runs queued together.
GROUP_CHOICES = ("none", "config", *[h for h in COLOR_CHOICES if h != "seed"], "sweep")
GROUP_NAMES = {
    "none": "no grouping (one line per run)",
    "config": "seeds (same configuration)",
    "sweep": "sweep (queued together)",
}
BANDS = {"std": "mean ± standard deviation", "range": "min to max"}


def ema(values: Sequence[float], weight: float) -> pd.Series:
    """Exponential moving average, as TensorBoard's smoothing slider: weight 0 keeps the values,
    0.9 follows them slowly. Debiased (pandas ewm with adjust=True), so early points keep their scale."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {weight}")
    series = pd.Series(values, dtype=float).reset_index(drop=True)
    return series if weight == 0 else series.ewm(alpha=1 - weight, adjust=True, ignore_na=True).mean()


def run_groups(
    configs: dict[str, dict], by: str, sweeps: dict[str, str | None] | None = None
) -> list[tuple[str, list[str]]]:
    """(label, run ids) per group of the runs whose configs are given, by configuration minus the seed,
    by one hyperparameter, or by sweep; labels say what sets each group apart."""
    if by not in GROUP_CHOICES or by == "none":
        raise ValueError(f"group by must be one of {', '.join(GROUP_CHOICES[1:])}, got {by!r}")
    if by == "sweep":  # a run outside any sweep stays on its own
        sweeps = sweeps or {}
        configs = {
            rid: {**c, "sweep": (sweeps.get(rid) or f"none ({rid[-4:]})").removeprefix("sweep-")}
            for rid, c in configs.items()
        }
    ids = group_by_config(configs) if by == "config" else group_by_field(configs, by)
    return list(zip(labels(ids, configs), ids))


def group_curve(
    long: pd.DataFrame, run_ids: Sequence[str], split: str, metric: str, smoothing: float = 0.0
) -> pd.DataFrame:
    """One group's curve: per epoch, over its runs, the mean, the standard deviation (n - 1), the
    minimum, the maximum, how many runs reached it, and the mean elapsed seconds. Each run's curve
    is smoothed first when `smoothing` > 0."""
    part = long[(long["split"] == split) & long["run"].isin(list(run_ids))].sort_values(["run", "epoch"])
    if smoothing:
        part = part.assign(
            **{metric: part.groupby("run", sort=False)[metric].transform(lambda s: ema(s, smoothing).to_numpy())}
        )
    by_epoch = part.groupby("epoch")
    out = pd.DataFrame(
        {
            "elapsed": by_epoch["elapsed"].mean(),
            "mean": by_epoch[metric].mean(),
            "std": by_epoch[metric].std(ddof=1),
            "low": by_epoch[metric].min(),
            "high": by_epoch[metric].max(),
            "n": by_epoch[metric].count(),
        }
    )
    return out.reset_index()


def compare_summary(
    summary: pd.DataFrame,
    groups: Sequence[tuple[str, Sequence[str]]],
    spec: SummarySpec,
    threshold: float | None = None,
) -> Comparison:
    """The groups' values from the per-run summary (back on the metrics files' scale), their means and
    spreads, and Welch's t-test between every two groups (engine.runs.compare.Comparison).
    Runs without a value (no epoch yet) are left out; so is a group left with none."""
    scale = 100.0 if spec.metric == "acc" else 1.0
    values = dict(zip(summary["run"], summary["value"] / scale))
    seeds = dict(zip(summary["run"], summary["seed"]))
    made = []
    for label, ids in groups:
        kept = [r for r in ids if r in values and not math.isnan(values[r])]
        if kept:
            made.append(
                Group(
                    label,
                    tuple(kept),
                    tuple(float(values[r]) for r in kept),
                    tuple(int(seeds[r]) for r in kept if pd.notna(seeds[r])),
                )
            )
    threshold = THRESHOLD if threshold is None else threshold
    return Comparison(
        f"{spec.split}_{spec.metric}", spec.rule.value, threshold, tuple(made), compare_groups(made, threshold)
    )


def group_table(comparison: Comparison, spec: SummarySpec) -> pd.DataFrame:
    """One row per group: n, mean, std, min, max (accuracy in percent), its seeds, and against the
    best group the difference, Welch's p-value and the call."""
    scale = 100.0 if spec.metric == "acc" else 1.0
    groups = comparison.groups
    best = best_index(groups, comparison.metric) if groups else None
    rows = []
    for i, g in enumerate(groups):
        row = {
            "group": g.label,
            "n": g.n,
            "mean": scale * g.mean,
            "std": scale * g.std if g.std is not None else math.nan,
            "min": scale * min(g.values),
            "max": scale * max(g.values),
            "seeds": seed_text(g.seeds),
            "vs best": scale * (g.mean - groups[best].mean),
            "p vs best": math.nan,
            "call": "best",
        }
        if i != best:
            p = next(pair.p for pair in comparison.pairs if {pair.a, pair.b} == {i, best})
            call = verdict(groups[best], g, comparison.metric, comparison.threshold, p).call
            row.update({"p vs best": math.nan if p is None else p, "call": call.value})
        rows.append(row)
    table = pd.DataFrame(
        rows, columns=["group", "n", "mean", "std", "min", "max", "seeds", "vs best", "p vs best", "call"]
    )
    table.attrs["value_name"] = spec.value_name() + (" (%)" if spec.metric == "acc" else "")
    table.attrs["diff_unit"] = "percentage points" if spec.metric == "acc" else "loss"
    return table
