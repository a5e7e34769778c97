"""Pure metric tables: metrics rows in, pandas frames out; the per-run summary by a stated rule.

Nothing here imports Streamlit, so every function is tested on plain frames.
Accuracies stay fractions in [0, 1]; formatting to percent happens at render time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import pandas as pd

from dashboard.runs_table import COLOR_CHOICES
from engine.config import HYPERPARAMETERS
from engine.track import KNOWN_METRICS

SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
METRIC_NAMES = {"loss": "loss", "acc": "accuracy"}
LONG_COLUMNS = ("run", "epoch", "elapsed", "split", "loss", "acc", "seconds")


def metrics_long(metrics: dict[str, list[dict]]) -> pd.DataFrame:
    """Metrics rows of several runs as one long frame: run, epoch, elapsed, split, loss, acc.

    `elapsed` is the cumulative wall time in seconds at the end of each epoch, for
    plotting against time instead of epochs. A split appears only where the run has it.
    Built with plain lists and one DataFrame at the end: this runs on every live refresh.
    """
    columns: dict[str, list] = {k: [] for k in LONG_COLUMNS}
    for run_id, rows in metrics.items():
        rows = sorted(rows, key=lambda r: r["epoch"])
        elapsed, total = [], 0.0
        for r in rows:
            seconds = r.get("seconds")
            total = total + seconds if seconds is not None and total == total else math.nan
            elapsed.append(total)
        for split in SPLITS:
            loss_key, acc_key = f"{split}_loss", f"{split}_acc"
            for r, at in zip(rows, elapsed):
                if loss_key not in r and acc_key not in r:  # a tracked script may log only one of them
                    continue
                columns["run"].append(run_id)
                columns["epoch"].append(int(r["epoch"]))
                columns["elapsed"].append(at)
                columns["split"].append(split)
                columns["loss"].append(_float(r.get(loss_key)))
                columns["acc"].append(_float(r.get(acc_key)))
                columns["seconds"].append(_float(r.get("seconds")))
    return pd.DataFrame(columns).astype({"epoch": int, "elapsed": float, "loss": float, "acc": float, "seconds": float})


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


def extra_metric_names(metrics: dict[str, list[dict]]) -> list[str]:
    """Names of the numeric values logged besides the metrics Lensboard knows (a tracked script's own)."""
    known = {"epoch", *KNOWN_METRICS}
    return sorted(
        {
            k
            for rows in metrics.values()
            for r in rows
            for k, v in r.items()
            if k not in known and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    )


def extra_metric_frame(metrics: dict[str, list[dict]], name: str) -> pd.DataFrame:
    """One logged value of several runs by epoch: run, epoch, value (runs that did not log it are left out)."""
    rows = [
        (run_id, int(r["epoch"]), _float(r[name]))
        for run_id, run_rows in metrics.items()
        for r in run_rows
        if isinstance(r.get(name), (int, float)) and not isinstance(r.get(name), bool)
    ]
    frame = pd.DataFrame(rows, columns=["run", "epoch", "value"])
    return frame.astype({"epoch": int, "value": float}).sort_values(["run", "epoch"], ignore_index=True)


def metrics_wide(long: pd.DataFrame) -> pd.DataFrame:
    """The long frame back in the on-disk shape (one row per run and epoch), for the CSV download."""
    if long.empty:
        return pd.DataFrame(columns=["run", "epoch"])
    wide = long.pivot_table(index=["run", "epoch"], columns="split", values=["loss", "acc"])
    wide.columns = [f"{split}_{metric}" for metric, split in wide.columns]
    seconds = long.groupby(["run", "epoch"])["seconds"].first()
    wide["seconds"] = seconds
    return wide.reset_index()


class ValueRule(str, Enum):
    FINAL = "final"
    BEST = "best"
    AT_EPOCH = "at epoch"


@dataclass(frozen=True)
class SummarySpec:
    metric: str = "acc"  # "acc" or "loss"
    split: str = "test"  # "train", "val" or "test"
    rule: ValueRule = ValueRule.FINAL
    epoch: int | None = None  # for ValueRule.AT_EPOCH
    baseline: str | None = None  # run id the differences are taken against

    def value_name(self) -> str:
        what = f"{SPLIT_NAMES[self.split]} {METRIC_NAMES[self.metric]}"
        if self.rule == ValueRule.AT_EPOCH:
            return f"{what} at epoch {self.epoch}"
        return f"{self.rule.value} {what}"


def _pick(values: pd.DataFrame, spec: SummarySpec) -> tuple[float, int | None]:
    """(value, epoch it came from) for one run's rows of one split, by the spec's rule."""
    column = values[spec.metric]
    if values.empty or column.isna().all():
        return math.nan, None
    if spec.rule == ValueRule.FINAL:
        row = values.iloc[-1]
    elif spec.rule == ValueRule.BEST:
        idx = column.idxmax() if spec.metric == "acc" else column.idxmin()
        row = values.loc[idx]
    else:
        at = values[values["epoch"] == spec.epoch]
        if at.empty:
            return math.nan, None
        row = at.iloc[0]
    return float(row[spec.metric]), int(row["epoch"])


def summary_table(long: pd.DataFrame, runs: pd.DataFrame, spec: SummarySpec) -> pd.DataFrame:
    """One row per selected run: its hyperparameters, the value by the stated rule, and the
    difference to the baseline run (accuracy in percentage points, loss in loss units)."""
    mine = long[long["split"] == spec.split]
    by_run = {run_id: part.sort_values("epoch") for run_id, part in mine.groupby("run", sort=False)}
    seconds = long.drop_duplicates(["run", "epoch"]).groupby("run")["seconds"].mean()
    empty = mine.iloc[:0]
    rows = []
    for run in runs.to_dict("records"):
        values = by_run.get(run["id"], empty)
        value, epoch = _pick(values, spec)
        row = {"run": run["id"], "label": run["label"], "state": run["state"]}
        row.update({k: run[k] for k in HYPERPARAMETERS})
        row["settings"] = run.get("settings", "")
        row.update(
            {
                "value": value,
                "from epoch": epoch,
                "epochs done": int(values["epoch"].max()) if len(values) else 0,
                "s / epoch": float(seconds.get(run["id"], math.nan)),
            }
        )
        rows.append(row)
    table = pd.DataFrame(
        rows,
        columns=[
            "run",
            "label",
            "state",
            *HYPERPARAMETERS,
            "value",
            "from epoch",
            "epochs done",
            "s / epoch",
            "settings",
        ],
    )
    if spec.metric == "acc":
        table["value"] = table["value"] * 100
    base = table.loc[table["run"] == spec.baseline, "value"]
    table["vs baseline"] = table["value"] - float(base.iloc[0]) if len(base) else math.nan
    table.attrs["value_name"] = spec.value_name() + (" (%)" if spec.metric == "acc" else "")
    table.attrs["diff_unit"] = "percentage points" if spec.metric == "acc" else "loss"
    return table


def varying_hyperparams(runs: pd.DataFrame) -> list[str]:
    """Hyperparameters that take more than one value among `runs` (what a sweep swept)."""
    out = []
    for name in COLOR_CHOICES:
        if name in runs and runs[name].astype(str).nunique() > 1:
            out.append(name)
    return out
