"""Plain-language readings of training curves, computed from the numbers.

Each detector looks at the metrics of one run (or at the summary of several) and
returns a Reading whose text quotes the epochs and values it found, or None when
the pattern is not there. The thresholds are stated below so a reading can be
checked by hand against the chart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
import pandas as pd

from dashboard.tables import SPLIT_NAMES, SummarySpec
from engine.runs.compare import Comparison
from engine.runs.verdicts import RECOMMENDED_SEEDS, Call, best_index, verdict

RISE = 0.05  # overfitting: held-out loss rises >= 5 % above its minimum (and >= 0.01 absolute)
FLAT = 0.01  # plateau: the training loss falls by < 1 % per epoch
FLAT_EPOCHS = 2  # ... for at least this many epochs in a row, up to the last one
SLOW_START = 0.05  # plateau from the start: < 5 % total drop over the whole run
UNDERFIT_ACC = 0.9  # a plateau below this training accuracy is underfitting
BLOW_UP = 1.5  # divergence: training loss ends >= 1.5x above its minimum
SAME_SPEED = 1.1  # runs within 10 % of each other per epoch are "about as fast"
TIE_POINTS = 0.1  # accuracy differences below 0.1 points are a tie


class ReadingKind(str, Enum):
    OVERFITTING = "overfitting"
    PLATEAU = "plateau"
    DIVERGENCE = "divergence"
    FASTER = "faster"
    WINNER = "winner"
    DIFFERENCE = "difference"  # two groups of seeds: real, within noise, or noise unknown


@dataclass(frozen=True)
class Reading:
    kind: ReadingKind
    text: str
    runs: tuple[str, ...]
    level: str = "info"  # "warning", "info" or "success": how the page shows it


def _series(run: pd.DataFrame, split: str, metric: str = "loss") -> pd.Series:
    """One metric of one split, indexed by epoch (numpy masks: this runs on every live refresh)."""
    mask = run["split"].to_numpy() == split
    epochs = run["epoch"].to_numpy()[mask].astype(int)
    values = run[metric].to_numpy(dtype=float)[mask]
    order = np.argsort(epochs, kind="stable")
    return pd.Series(values[order], index=epochs[order])


def _held_out(run: pd.DataFrame) -> str:
    return "val" if (run["split"] == "val").any() else "test"


def overfitting(run: pd.DataFrame, label: str) -> Reading | None:
    """Held-out loss bottoms out and climbs while the training loss keeps falling."""
    held_split = _held_out(run)
    train, held = _series(run, "train"), _series(run, held_split)
    epochs = train.index.intersection(held.index)
    if len(epochs) < 3 or not (train.notna().all() and held.notna().all()):
        return None
    train, held = train[epochs], held[epochs]
    best = int(held.idxmin())
    last = int(epochs[-1])
    rise = held[last] - held[best]
    gap_best, gap_last = held[best] - train[best], held[last] - train[last]
    threshold = max(0.01, RISE * held[best])
    if best == last or rise < threshold or gap_last - gap_best < threshold or train[last] >= train[best]:
        return None
    name = SPLIT_NAMES[held_split]
    text = (
        f"**Overfitting** in {label}: from epoch {best + 1} the {name} loss rose from "
        f"{held[best]:.3f} (epoch {best}) to {held[last]:.3f} (epoch {last}) while the training loss "
        f"kept falling ({train[best]:.3f} → {train[last]:.3f}); the gap between them widened from "
        f"{gap_best:.3f} to {gap_last:.3f}. The model is memorising the training images. Its best "
        f"{name} loss came at epoch {best}: fewer epochs, dropout, weight decay or more data would help."
    )
    return Reading(ReadingKind.OVERFITTING, text, (str(run["run"].iloc[0]),), "warning")


def plateau(run: pd.DataFrame, label: str) -> Reading | None:
    """The training loss stops falling: too small a learning rate, underfitting, or converged."""
    train = _series(run, "train")
    train_acc = _series(run, "train", "acc")
    if len(train) < FLAT_EPOCHS + 1 or not train.map(math.isfinite).all():
        return None
    values = train.to_numpy()
    epochs = train.index.to_numpy()
    drops = (values[:-1] - values[1:]) / abs(values[:-1]).clip(min=1e-12)  # drop into epoch i+1
    flat_from = len(values) - 1  # index where the flat stretch starts
    while flat_from > 0 and drops[flat_from - 1] < FLAT:
        flat_from -= 1
    flat_epochs = len(values) - 1 - flat_from
    total_drop = (values[0] - values[-1]) / abs(values[0]) if values[0] else 0.0
    start, last = int(epochs[flat_from]), int(epochs[-1])
    acc = float(train_acc.iloc[-1]) if len(train_acc) else math.nan
    if flat_from == 0 and total_drop < SLOW_START:
        text = (
            f"**Plateau from the start** in {label}: over {len(values)} epochs the training loss only "
            f"went from {values[0]:.3f} to {values[-1]:.3f} ({100 * total_drop:.1f} % lower). "
            f"The learning rate ({_lr(run)}) is probably too small to make progress; try 10x larger."
        )
        return Reading(ReadingKind.PLATEAU, text, (str(run["run"].iloc[0]),), "warning")
    if flat_epochs < FLAT_EPOCHS:
        return None
    if not math.isnan(acc) and acc < UNDERFIT_ACC:
        text = (
            f"**Plateau (underfitting)** in {label}: the training loss stopped falling at epoch {start} "
            f"(about {values[flat_from]:.3f}, less than {100 * FLAT:.0f} % lower per epoch since) with only "
            f"{100 * acc:.1f} % training accuracy. The model cannot fit even the training images: try a "
            f"larger learning rate, a bigger model, or fewer regularisers."
        )
        return Reading(ReadingKind.PLATEAU, text, (str(run["run"].iloc[0]),), "warning")
    acc_text = f" with {100 * acc:.1f} % training accuracy" if not math.isnan(acc) else ""
    text = (
        f"**Converged** {label}: the training loss levelled off at epoch {start} (about "
        f"{values[flat_from]:.3f}{acc_text}); the {last - start} epoch(s) after it changed it by less "
        f"than {100 * FLAT:.0f} % each, so more epochs at this learning rate will not help much."
    )
    return Reading(ReadingKind.PLATEAU, text, (str(run["run"].iloc[0]),), "info")


def _lr(run: pd.DataFrame) -> str:
    return f"{run.attrs['lr']:g}" if "lr" in run.attrs else "the one used"


def divergence(run: pd.DataFrame, label: str, state: str = "", error: str | None = None) -> Reading | None:
    """The run was stopped as diverged, has non-finite losses, or its training loss blew up."""
    run_id = (str(run["run"].iloc[0]),) if len(run) else ()
    if state == "diverged":
        why = f" ({error})" if error else ""
        text = (
            f"**Diverged**: {label} was stopped because its loss stopped being a number{why}. "
            f"Lower the learning rate (try 10x smaller)."
        )
        return Reading(ReadingKind.DIVERGENCE, text, run_id, "warning")
    train = _series(run, "train")
    if train.empty:
        return None
    bad = train[~train.map(math.isfinite)]
    if len(bad):
        text = (
            f"**Diverged**: {label}'s training loss became {bad.iloc[0]} at epoch {int(bad.index[0])}. "
            f"Lower the learning rate (try 10x smaller)."
        )
        return Reading(ReadingKind.DIVERGENCE, text, run_id, "warning")
    low = int(train.idxmin())
    last = int(train.index[-1])
    if low < last and train[last] >= BLOW_UP * train[low]:
        text = (
            f"**Diverging**: {label}'s training loss climbed from {train[low]:.3f} at epoch {low} to "
            f"{train[last]:.3f} at epoch {last} ({train[last] / train[low]:.1f}x). Steps are too large: "
            f"lower the learning rate."
        )
        return Reading(ReadingKind.DIVERGENCE, text, run_id, "warning")
    return None


def faster(summary: pd.DataFrame) -> Reading | None:
    """Which run trains an epoch fastest, against the slowest, from measured seconds per epoch."""
    timed = summary[summary["s / epoch"].map(lambda v: isinstance(v, (int, float)) and v > 0 and math.isfinite(v))]
    if len(timed) < 2:
        return None
    fast = timed.loc[timed["s / epoch"].idxmin()]
    slow = timed.loc[timed["s / epoch"].idxmax()]
    ratio = slow["s / epoch"] / fast["s / epoch"]
    runs = (str(fast["run"]), str(slow["run"]))
    if ratio < SAME_SPEED:
        text = (
            f"**Speed**: the runs take about the same time per epoch ({fast['s / epoch']:.2f} s to "
            f"{slow['s / epoch']:.2f} s, within {100 * (SAME_SPEED - 1):.0f} %)."
        )
        return Reading(ReadingKind.FASTER, text, runs)
    text = (
        f"**Speed**: {fast['label']} is the fastest at {fast['s / epoch']:.2f} s per epoch, "
        f"{ratio:.1f}x faster than {slow['label']} ({slow['s / epoch']:.2f} s per epoch)."
    )
    return Reading(ReadingKind.FASTER, text, runs)


def winner(summary: pd.DataFrame, spec: SummarySpec) -> Reading | None:
    """Which run has the best summary value, and by how much it beat the runner-up and the last."""
    scored = summary.dropna(subset=["value"])
    if len(scored) < 2:
        return None
    higher_is_better = spec.metric == "acc"
    ranked = scored.sort_values("value", ascending=not higher_is_better).reset_index(drop=True)
    first, second, last = ranked.iloc[0], ranked.iloc[1], ranked.iloc[-1]
    unit = " points" if higher_is_better else ""
    fmt = (lambda v: f"{v:.2f} %") if higher_is_better else (lambda v: f"{v:.4f}")
    gap = abs(first["value"] - second["value"])
    what = spec.value_name()
    tie = TIE_POINTS if higher_is_better else 1e-4
    if gap < tie:
        text = (
            f"**Tie** on {what}: {first['label']} ({fmt(first['value'])}) and {second['label']} "
            f"({fmt(second['value'])}) are within {gap:.2f}{unit} of each other."
        )
        return Reading(ReadingKind.WINNER, text, (str(first["run"]), str(second["run"])))
    text = (
        f"**Winner** on {what}: {first['label']} with {fmt(first['value'])}, "
        f"{gap:.2f}{unit} {'ahead of' if higher_is_better else 'lower than'} {second['label']} "
        f"({fmt(second['value'])})"
    )
    if len(ranked) > 2:
        text += f" and {abs(first['value'] - last['value']):.2f}{unit} better than the last, {last['label']}"
    text += (
        f". With one run each the seed noise is unknown, so this may be luck: train {RECOMMENDED_SEEDS} "
        "seeds of each (Seeds on the Train page) and group them by seeds to tell"
    )
    return Reading(ReadingKind.WINNER, text + ".", (str(first["run"]), str(second["run"])), "success")


CALLS = {
    Call.REAL: ("Real difference", "success"),
    Call.NOISE: ("Within seed noise", "info"),
    Call.UNKNOWN: ("Noise unknown", "info"),
}


def differences(comparison: Comparison, spec: SummarySpec) -> list[Reading]:
    """The best group against each other group: is the gap larger than seed noise (Welch's t-test)?
    The sentence is engine.runs.verdicts.verdict's, the same as the command line's."""
    groups = comparison.groups
    if len(groups) < 2:
        return []
    best = best_index(groups, comparison.metric)
    out = []
    for i, other in enumerate(groups):
        if i == best:
            continue
        pair = next(p for p in comparison.pairs if {p.a, p.b} == {i, best})
        said = verdict(groups[best], other, comparison.metric, comparison.threshold, pair.p)
        title, level = CALLS[said.call]
        out.append(
            Reading(
                ReadingKind.DIFFERENCE,
                f"**{title}** on {spec.value_name()}: {said.text}.",
                groups[best].runs + other.runs,
                level,
            )
        )
    return out


def read_curves(
    long: pd.DataFrame,
    runs: pd.DataFrame,
    summary: pd.DataFrame,
    spec: SummarySpec,
    comparison: Comparison | None = None,
) -> list[Reading]:
    """Every reading for the selected runs: per-run patterns first, then the comparisons (between
    groups of seeds when `comparison` is given, else between single runs)."""
    out: list[Reading] = []
    by_run = dict(tuple(long.groupby("run", sort=False)))
    for run in runs.to_dict("records"):
        mine = by_run.get(run["id"], long.iloc[:0]).copy()
        mine.attrs["lr"] = run["lr"]
        if mine.empty and run["state"] != "diverged":
            continue
        if mine.empty:
            mine = pd.DataFrame({"run": [run["id"]], "split": [""], "epoch": [0], "loss": [math.nan]})
        diverged = divergence(mine, run["label"], run["state"], run["error"])
        if diverged is not None:  # a blown-up curve says nothing about fitting or converging
            out.append(diverged)
            continue
        for found in (overfitting(mine, run["label"]), plateau(mine, run["label"])):
            if found is not None:
                out.append(found)
    if comparison is not None:
        out += differences(comparison, spec)
    for found in (winner(summary, spec) if comparison is None else None, faster(summary)):
        if found is not None:
            out.append(found)
    return out


def precision_note(config: dict, rows: list[dict]) -> str | None:
    """What numeric precision a run trained in, when it is not plain fp32: with `auto` in the config,
    the metrics rows say what was picked. None for fp32 runs and runs from before precision existed."""
    ran = next((r["precision"] for r in reversed(rows) if r.get("precision")), None)
    asked = config.get("precision", "fp32")
    if ran is None or ran == "fp32":
        return None
    if asked == "auto":
        return (
            f"Precision: **auto picked {ran}** because this machine computes {ran} natively. The forward "
            f"pass ran under {ran} autocast (faster; the weights, the optimiser and the evaluation stay "
            f"fp32, and the accuracy matches fp32 within noise). Choose fp32 on the Train page to rule it out."
        )
    return f"Precision: **{ran}** autocast, as asked (the weights, the optimiser and the evaluation stay fp32)."
