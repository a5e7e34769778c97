"""The Runs table: one row per run from the registry's summary columns, its filters, how it is shown,
the live views' change signature, the runs Compare selects first, and the grid preview of runs to queue.

Nothing here imports Streamlit, so every function is tested on plain frames.
Accuracies stay fractions in [0, 1]; formatting to percent happens at render time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

import pandas as pd

from engine.config import HYPERPARAMETERS, TrainConfig, arch_label
from engine.runs import records
from engine.runs.records import RunRecord

# Hyperparameters that can colour curves or sit on a scatter's x axis.
COLOR_CHOICES = (
    "arch",
    "lr",
    "batch_size",
    "optimizer",
    "epochs",
    "weight_decay",
    "seed",
    "dataset",
    "train_limit",
    "val_split",
)
ACTIVE_STATES = tuple(sorted(s.value for s in records.ACTIVE_STATES))  # the registry's, as the table shows them

RUN_COLUMNS = [
    "id",
    "state",
    "progress",
    "dataset",
    "arch",
    "epochs",
    "epoch",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "val_split",
    "seed",
    "train_limit",
    "final_test_acc",
    "best_test_acc",
    "final_test_loss",
    "sec_per_epoch",
    "created",
    "sweep_id",
    "error",
    "label",
    "settings",
]
# What a tracked script's config holds besides TrainConfig's fields is shown as "other settings".
TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) | {"name"}


def run_label(arch: str, config: dict, run_id: str) -> str:
    """A short name a person can tell apart in a legend: arch, lr, batch size, and the id's tail."""
    lr, bs = config.get("lr"), config.get("batch_size")
    parts = [
        config.get("name") or arch_label(arch),
        f"lr {lr:g}" if isinstance(lr, (int, float)) else None,
        f"bs {bs}" if bs is not None else None,
        run_id[-4:],
    ]
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
        rows.append(
            {
                "id": r.id,
                "state": "missing" if missing else r.state.value,
                "progress": r.progress,
                "dataset": r.dataset,
                "arch": arch_label(r.arch),
                "epochs": r.epochs,
                "epoch": r.epoch,
                "batch_size": c.get("batch_size"),
                "lr": c.get("lr"),
                "optimizer": c.get("optimizer"),
                "momentum": c.get("momentum"),
                "weight_decay": c.get("weight_decay"),
                "val_split": c.get("val_split"),
                "seed": c.get("seed"),
                "train_limit": c.get("train_limit"),
                "final_test_acc": r.final_test_acc,
                "best_test_acc": r.best_test_acc,
                "final_test_loss": r.final_test_loss,
                "sec_per_epoch": r.sec_per_epoch,
                "created": pd.Timestamp(r.created, unit="s"),
                "sweep_id": r.sweep_id,
                "error": f"its folder {r.path} is gone" if missing else r.error,
                "label": run_label(r.arch, c, r.id),
                "settings": other_settings(c),
            }
        )
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return df.sort_values("id", ascending=False, ignore_index=True)


def filter_runs(
    df: pd.DataFrame,
    *,
    states: Sequence[str] = (),
    sweeps: Sequence[str] = (),
    datasets: Sequence[str] = (),
    archs: Sequence[str] = (),
) -> pd.DataFrame:
    """Rows matching every non-empty filter; an empty filter keeps everything."""
    keep = pd.Series(True, index=df.index)
    for column, wanted in (("state", states), ("sweep_id", sweeps), ("dataset", datasets), ("arch", archs)):
        if wanted:
            keep &= df[column].isin(list(wanted))
    return df[keep].reset_index(drop=True)


def any_active(df: pd.DataFrame) -> bool:
    """True while some run is queued, running or waiting to resume: the page keeps refreshing."""
    return bool(len(df)) and bool(df["state"].isin(ACTIVE_STATES).any())


def change_signature(
    records: Iterable[RunRecord],
    metrics_files: dict[str, tuple[int, int] | None] | None = None,
    *,
    progress: bool = False,
) -> tuple:
    """What a live view shows of these runs, as one comparable value: it moves exactly when the view must be
    redrawn. Per run: id, state, finished epochs, error, and (with `progress`, for views that show the batch
    progress) batch and last update; plus the (size, mtime_ns) of each run's metrics file when given (None:
    no file yet). A view checks this first, every refresh, and re-reads and re-renders only when it moved."""
    files = metrics_files or {}
    return tuple(
        sorted(
            (
                r.id,
                str(r.state),
                r.epoch,
                r.error or "",
                *((r.batch, r.batches, r.updated) if progress else ()),
                files.get(r.id),
            )
            for r in records
        )
    )


def _three_digits(value: object) -> object:
    """A searched learning rate such as 0.012635598137381661 reads as 0.0126 (a number, so it still sorts)."""
    return float(f"{value:.3g}") if isinstance(value, (int, float)) and math.isfinite(value) else value


def runs_display(df: pd.DataFrame, where: dict[str, str] | None = None) -> pd.DataFrame:
    """The Runs table as shown: accuracies in percent, progress in percent, readable names; with `where`
    (run id -> host or Ray node, engine.runs.jobs.trained_where), where each run trained."""
    out = pd.DataFrame(
        {
            "state": df["state"],
            "progress": (df["progress"] * 100).round(1),
            "dataset": df["dataset"],
            "arch": df["arch"],
            "epochs": [f"{e}/{n}" if n else f"{e}" for e, n in zip(df["epoch"], df["epochs"])],
            "batch size": df["batch_size"],
            "lr": df["lr"].map(_three_digits),
            "optimizer": df["optimizer"],
            "final test acc %": df["final_test_acc"] * 100,
            "best test acc %": df["best_test_acc"] * 100,
            "s / epoch": df["sec_per_epoch"],
            "created": df["created"],
            "sweep": df["sweep_id"].fillna(""),
            "id": df["id"],
            "message": df["error"].fillna(""),
            "other settings": df["settings"],
        }
    )
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
    same = [h for h in HYPERPARAMETERS if h != "seed"]
    keys = {tuple(map(str, row)) for row in latest[same].itertuples(index=False)}
    mask = pd.Series(
        [tuple(map(str, row)) in keys for row in done[same].itertuples(index=False)], index=done.index, dtype=bool
    )
    siblings = done[mask]
    return siblings.sort_values(["arch", "id"])["id"].tolist()


def configs_frame(configs: Sequence) -> pd.DataFrame:
    """A grid of TrainConfigs as a preview table: one row per run to be queued."""
    rows = [
        {
            k: getattr(c, k)
            for k in (
                "arch",
                "dataset",
                "epochs",
                "batch_size",
                "lr",
                "optimizer",
                "weight_decay",
                "val_split",
                "seed",
                "train_limit",
            )
        }
        for c in configs
    ]
    df = pd.DataFrame(rows)
    if len(df):
        df["arch"] = df["arch"].map(arch_label)
    df.index = pd.RangeIndex(1, len(df) + 1, name="#")
    return df
