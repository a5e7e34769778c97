"""Pure table builders: run records and metrics rows in, pandas frames out.

Nothing here imports Streamlit, so every function is tested on plain frames.
Accuracies stay fractions in [0, 1]; formatting to percent happens at render time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

import pandas as pd

from engine.config import TrainConfig, arch_label
from engine.runs.compare import Comparison, group_by_config, group_by_field, labels, seed_text
from engine.runs.store import RunRecord
from engine.runs.verdicts import THRESHOLD, Group, best_index, compare_groups, verdict
from engine.track import KNOWN_METRICS

# Hyperparameters a learner changes, in the order they are shown.
HYPERPARAMS = ("arch", "dataset", "epochs", "batch_size", "lr", "optimizer", "momentum",
               "weight_decay", "val_split", "seed", "train_limit")
# Hyperparameters that can colour curves or sit on a scatter's x axis.
COLOR_CHOICES = ("arch", "lr", "batch_size", "optimizer", "epochs", "weight_decay", "seed", "dataset",
                 "train_limit", "val_split")
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
METRIC_NAMES = {"loss": "loss", "acc": "accuracy"}
LONG_COLUMNS = ("run", "epoch", "elapsed", "split", "loss", "acc", "seconds")
ACTIVE_STATES = ("queued", "running", "interrupted")

RUN_COLUMNS = ["id", "state", "progress", "dataset", "arch", "epochs", "epoch", "batch_size", "lr",
               "optimizer", "momentum", "weight_decay", "val_split", "seed", "train_limit",
               "final_test_acc", "best_test_acc", "final_test_loss", "sec_per_epoch", "created",
               "sweep_id", "error", "label", "settings"]
# What a tracked script's config holds besides TrainConfig's fields is shown as "other settings".
TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) | {"name"}


def run_label(arch: str, config: dict, run_id: str) -> str:
    """A short name a person can tell apart in a legend: arch, lr, batch size, and the id's tail."""
    lr, bs = config.get("lr"), config.get("batch_size")
    parts = [config.get("name") or arch_label(arch), f"lr {lr:g}" if isinstance(lr, (int, float)) else None,
             f"bs {bs}" if bs is not None else None, run_id[-4:]]
    return " · ".join(p for p in parts if p)


def other_settings(config: dict) -> str:
    """A tracked script's own config keys (those TrainConfig does not have), as "key=value, ..."."""
    return ", ".join(f"{k}={v}" for k, v in sorted(config.items()) if k not in TRAIN_FIELDS)


def runs_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run, newest first, from the registry's summary columns only (no metrics files)."""
    rows = []
    for r in records:
        c = r.config
        missing = r.folder_missing  # deleted by hand: shown as missing, whatever the registry says
        rows.append({
            "id": r.id, "state": "missing" if missing else r.state.value, "progress": r.progress,
            "dataset": r.dataset, "arch": arch_label(r.arch), "epochs": r.epochs, "epoch": r.epoch,
            "batch_size": c.get("batch_size"),
            "lr": c.get("lr"), "optimizer": c.get("optimizer"), "momentum": c.get("momentum"),
            "weight_decay": c.get("weight_decay"), "val_split": c.get("val_split"), "seed": c.get("seed"),
            "train_limit": c.get("train_limit"), "final_test_acc": r.final_test_acc,
            "best_test_acc": r.best_test_acc, "final_test_loss": r.final_test_loss,
            "sec_per_epoch": r.sec_per_epoch, "created": pd.Timestamp(r.created, unit="s"),
            "sweep_id": r.sweep_id, "error": f"its folder {r.path} is gone" if missing else r.error,
            "label": run_label(r.arch, c, r.id), "settings": other_settings(c),
        })
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return df.sort_values("id", ascending=False, ignore_index=True)


def filter_runs(df: pd.DataFrame, *, states: Sequence[str] = (), sweeps: Sequence[str] = (),
                datasets: Sequence[str] = (), archs: Sequence[str] = ()) -> pd.DataFrame:
    """Rows matching every non-empty filter; an empty filter keeps everything."""
    keep = pd.Series(True, index=df.index)
    for column, wanted in (("state", states), ("sweep_id", sweeps), ("dataset", datasets), ("arch", archs)):
        if wanted:
            keep &= df[column].isin(list(wanted))
    return df[keep].reset_index(drop=True)


def any_active(df: pd.DataFrame) -> bool:
    """True while some run is queued, running or waiting to resume: the page keeps refreshing."""
    return bool(len(df)) and bool(df["state"].isin(ACTIVE_STATES).any())


def change_signature(records: Iterable[RunRecord], metrics_files: dict[str, tuple[int, int] | None] | None = None,
                     *, progress: bool = False) -> tuple:
    """What a live view shows of these runs, as one comparable value: it moves exactly when the view must be
    redrawn. Per run: id, state, finished epochs, error, and (with `progress`, for views that show the batch
    progress) batch and last update; plus the (size, mtime_ns) of each run's metrics file when given (None:
    no file yet). A view checks this first, every refresh, and re-reads and re-renders only when it moved."""
    files = metrics_files or {}
    return tuple(sorted(
        (r.id, str(r.state), r.epoch, r.error or "", *((r.batch, r.batches, r.updated) if progress else ()),
         files.get(r.id)) for r in records))


def _three_digits(value):
    """A searched learning rate such as 0.012635598137381661 reads as 0.0126 (a number, so it still sorts)."""
    return float(f"{value:.3g}") if isinstance(value, (int, float)) and math.isfinite(value) else value


def runs_display(df: pd.DataFrame, where: dict[str, str] | None = None) -> pd.DataFrame:
    """The Runs table as shown: accuracies in percent, progress in percent, readable names; with `where`
    (run id -> host or Ray node, engine.runs.jobs.trained_where), where each run trained."""
    out = pd.DataFrame({
        "state": df["state"], "progress": (df["progress"] * 100).round(1),
        "dataset": df["dataset"], "arch": df["arch"],
        "epochs": [f"{e}/{n}" if n else f"{e}" for e, n in zip(df["epoch"], df["epochs"])],
        "batch size": df["batch_size"], "lr": df["lr"].map(_three_digits), "optimizer": df["optimizer"],
        "final test acc %": df["final_test_acc"] * 100, "best test acc %": df["best_test_acc"] * 100,
        "s / epoch": df["sec_per_epoch"], "created": df["created"],
        "sweep": df["sweep_id"].fillna(""), "id": df["id"], "message": df["error"].fillna(""),
        "other settings": df["settings"],
    })
    if where is not None:
        out.insert(out.columns.get_loc("s / epoch") + 1, "trained on", df["id"].map(where).fillna(""))
    return out


def default_selection(df: pd.DataFrame, dataset: str | None = None) -> list[str]:
    """The latest finished (done) run of each architecture on `dataset` (default: the newest run's dataset),
    with its finished seed siblings: the runs whose settings differ from it only in the seed."""
    done = df[df["state"] == "done"]
    if done.empty:
        return []
    if dataset is None:
        dataset = done.sort_values("id").iloc[-1]["dataset"]
    done = done[done["dataset"] == dataset]
    latest = done.sort_values("id").groupby("arch", sort=True).tail(1)
    same = [h for h in HYPERPARAMS if h != "seed"]
    keys = {tuple(map(str, row)) for row in latest[same].itertuples(index=False)}
    mask = pd.Series([tuple(map(str, row)) in keys for row in done[same].itertuples(index=False)],
                     index=done.index, dtype=bool)
    siblings = done[mask]
    return siblings.sort_values(["arch", "id"])["id"].tolist()


# ---------------------------------------------------------------- metrics


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
    return pd.DataFrame(columns).astype({"epoch": int, "elapsed": float, "loss": float, "acc": float,
                                         "seconds": float})


def _float(value) -> float:
    return math.nan if value is None else float(value)


def extra_metric_names(metrics: dict[str, list[dict]]) -> list[str]:
    """Names of the numeric values logged besides the metrics Lensboard knows (a tracked script's own)."""
    known = {"epoch", *KNOWN_METRICS}
    return sorted({k for rows in metrics.values() for r in rows for k, v in r.items()
                   if k not in known and isinstance(v, (int, float)) and not isinstance(v, bool)})


def extra_metric_frame(metrics: dict[str, list[dict]], name: str) -> pd.DataFrame:
    """One logged value of several runs by epoch: run, epoch, value (runs that did not log it are left out)."""
    rows = [(run_id, int(r["epoch"]), _float(r[name])) for run_id, run_rows in metrics.items()
            for r in run_rows if isinstance(r.get(name), (int, float)) and not isinstance(r.get(name), bool)]
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
        row.update({k: run[k] for k in HYPERPARAMS})
        row["settings"] = run.get("settings", "")
        row.update({"value": value, "from epoch": epoch,
                    "epochs done": int(values["epoch"].max()) if len(values) else 0,
                    "s / epoch": float(seconds.get(run["id"], math.nan))})
        rows.append(row)
    table = pd.DataFrame(rows, columns=["run", "label", "state", *HYPERPARAMS, "value", "from epoch",
                                        "epochs done", "s / epoch", "settings"])
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


def configs_frame(configs: Sequence) -> pd.DataFrame:
    """A grid of TrainConfigs as a preview table: one row per run to be queued."""
    rows = [{k: getattr(c, k) for k in ("arch", "dataset", "epochs", "batch_size", "lr", "optimizer",
                                         "weight_decay", "val_split", "seed", "train_limit")} for c in configs]
    df = pd.DataFrame(rows)
    if len(df):
        df["arch"] = df["arch"].map(arch_label)
    df.index = pd.RangeIndex(1, len(df) + 1, name="#")
    return df


# ---------------------------------------------------------------- groups of runs (seeds)

# How the Compare page can group runs: "none" keeps one line per run, "config" puts together the runs
# that differ only in seed, a hyperparameter puts together the runs sharing its value, "sweep" the
# runs queued together.
GROUP_CHOICES = ("none", "config", *[h for h in COLOR_CHOICES if h != "seed"], "sweep")
GROUP_NAMES = {"none": "no grouping (one line per run)", "config": "seeds (same configuration)",
               "sweep": "sweep (queued together)"}
BANDS = {"std": "mean ± standard deviation", "range": "min to max"}


def ema(values: Sequence[float], weight: float) -> pd.Series:
    """Exponential moving average, as TensorBoard's smoothing slider: weight 0 keeps the values,
    0.9 follows them slowly. Debiased (pandas ewm with adjust=True), so early points keep their scale."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {weight}")
    series = pd.Series(values, dtype=float).reset_index(drop=True)
    return series if weight == 0 else series.ewm(alpha=1 - weight, adjust=True, ignore_na=True).mean()


def run_groups(configs: dict[str, dict], by: str, sweeps: dict[str, str | None] | None = None
               ) -> list[tuple[str, list[str]]]:
    """(label, run ids) per group of the runs whose configs are given, by configuration minus the seed,
    by one hyperparameter, or by sweep; labels say what sets each group apart."""
    if by not in GROUP_CHOICES or by == "none":
        raise ValueError(f"group by must be one of {', '.join(GROUP_CHOICES[1:])}, got {by!r}")
    if by == "sweep":  # a run outside any sweep stays on its own
        sweeps = sweeps or {}
        configs = {rid: {**c, "sweep": (sweeps.get(rid) or f"none ({rid[-4:]})").removeprefix("sweep-")}
                   for rid, c in configs.items()}
    ids = group_by_config(configs) if by == "config" else group_by_field(configs, by)
    return list(zip(labels(ids, configs), ids))


def group_curve(long: pd.DataFrame, run_ids: Sequence[str], split: str, metric: str,
                smoothing: float = 0.0) -> pd.DataFrame:
    """One group's curve: per epoch, over its runs, the mean, the standard deviation (n - 1), the
    minimum, the maximum, how many runs reached it, and the mean elapsed seconds. Each run's curve
    is smoothed first when `smoothing` > 0."""
    part = long[(long["split"] == split) & long["run"].isin(list(run_ids))].sort_values(["run", "epoch"])
    if smoothing:
        part = part.assign(**{metric: part.groupby("run", sort=False)[metric].transform(
            lambda s: ema(s, smoothing).to_numpy())})
    by_epoch = part.groupby("epoch")
    out = pd.DataFrame({"elapsed": by_epoch["elapsed"].mean(), "mean": by_epoch[metric].mean(),
                        "std": by_epoch[metric].std(ddof=1), "low": by_epoch[metric].min(),
                        "high": by_epoch[metric].max(), "n": by_epoch[metric].count()})
    return out.reset_index()


def compare_summary(summary: pd.DataFrame, groups: Sequence[tuple[str, Sequence[str]]], spec: SummarySpec,
                    threshold: float | None = None) -> Comparison:
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
            made.append(Group(label, tuple(kept), tuple(float(values[r]) for r in kept),
                              tuple(int(seeds[r]) for r in kept if pd.notna(seeds[r]))))
    threshold = THRESHOLD if threshold is None else threshold
    return Comparison(f"{spec.split}_{spec.metric}", spec.rule.value, threshold, tuple(made),
                      compare_groups(made, threshold))


def group_table(comparison: Comparison, spec: SummarySpec) -> pd.DataFrame:
    """One row per group: n, mean, std, min, max (accuracy in percent), its seeds, and against the
    best group the difference, Welch's p-value and the call."""
    scale = 100.0 if spec.metric == "acc" else 1.0
    groups = comparison.groups
    best = best_index(groups, comparison.metric) if groups else None
    rows = []
    for i, g in enumerate(groups):
        row = {"group": g.label, "n": g.n, "mean": scale * g.mean,
               "std": scale * g.std if g.std is not None else math.nan,
               "min": scale * min(g.values), "max": scale * max(g.values), "seeds": seed_text(g.seeds),
               "vs best": scale * (g.mean - groups[best].mean), "p vs best": math.nan, "call": "best"}
        if i != best:
            p = next(pair.p for pair in comparison.pairs if {pair.a, pair.b} == {i, best})
            call = verdict(groups[best], g, comparison.metric, comparison.threshold, p).call
            row.update({"p vs best": math.nan if p is None else p, "call": call.value})
        rows.append(row)
    table = pd.DataFrame(rows, columns=["group", "n", "mean", "std", "min", "max", "seeds", "vs best",
                                        "p vs best", "call"])
    table.attrs["value_name"] = spec.value_name() + (" (%)" if spec.metric == "acc" else "")
    table.attrs["diff_unit"] = "percentage points" if spec.metric == "acc" else "loss"
    return table
