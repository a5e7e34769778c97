"""What a run measured, in the numbers the assignments report quotes.

Every number comes from a run's metrics rows or its registry record; the model sizes come from the
engine (the models built for the dataset's shape and counted, the shape trace), the dataset facts from
dashboard.forms, where the Train page reads them too.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from functools import lru_cache

from dashboard.assignments.plan import RunStatus
from dashboard.forms import KNOWN_SHAPES, SPLIT_SIZES
from dashboard.forms import parameter_count as arch_parameters
from engine.config import TrainConfig
from engine.ml.inspection import shape_trace
from engine.ml.models import build_model
from engine.runs.compare import seed_text
from engine.runs.verdicts import Group


@dataclass
class Summary:
    losses: list[float]  # mean training loss of each finished epoch
    test_acc: float  # after the last epoch, a fraction
    train_acc: float
    best_acc: float
    best_epoch: int
    sec_per_epoch: float  # mean wall time of an epoch, including its test pass
    loss_rises: int  # epochs whose test loss was higher than the epoch before
    epochs: int

    @property
    def error_rate(self) -> float:
        return 1.0 - self.test_acc


def summarise(rows: list[dict]) -> Summary | None:
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: r["epoch"])
    test_losses = [r["test_loss"] for r in rows]
    best = max(rows, key=lambda r: r["test_acc"])
    seconds = [r["seconds"] for r in rows if r.get("seconds") is not None]
    return Summary(
        losses=[r["train_loss"] for r in rows],
        test_acc=rows[-1]["test_acc"],
        train_acc=rows[-1]["train_acc"],
        best_acc=best["test_acc"],
        best_epoch=best["epoch"],
        sec_per_epoch=sum(seconds) / len(seconds) if seconds else math.nan,
        loss_rises=sum(b > a for a, b in zip(test_losses, test_losses[1:])),
        epochs=len(rows),
    )


def mean_summary(runs: list[RunStatus]) -> Summary:
    """The first seed's summary, with the test accuracy and the seconds per epoch averaged over all seeds."""
    each = [summarise(s.metrics) for s in runs]
    first = each[0]
    if len(each) == 1:
        return first
    return dataclasses.replace(
        first,
        test_acc=statistics.fmean(r.test_acc for r in each),
        sec_per_epoch=statistics.fmean(r.sec_per_epoch for r in each),
    )


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def points(fraction_diff: float) -> str:
    """A difference of two accuracies (fractions) in percentage points."""
    return f"{100 * abs(fraction_diff):.2f} point{'' if round(100 * abs(fraction_diff), 2) == 1 else 's'}"


# ---------------------------------------------------------------- the models and the data


def parameter_count(config: TrainConfig) -> int | None:
    """Trainable parameters of the config's model on its dataset (None for a dataset of unknown shape)."""
    known = KNOWN_SHAPES.get(config.dataset)
    return None if known is None else arch_parameters(config.arch, *known)


@lru_cache(maxsize=64)
def _largest_layer(arch: str, shape: tuple[int, int, int], classes: int) -> tuple[str, int]:
    row = max(shape_trace(build_model(arch, shape, classes), shape), key=lambda r: r.params)
    return row.layer, row.params


def largest_layer(config: TrainConfig) -> tuple[str, int] | None:
    """(name, parameters) of the layer holding most of the model's parameters, from its shape trace."""
    known = KNOWN_SHAPES.get(config.dataset)
    return None if known is None else _largest_layer(config.arch, *known)


def images_in_test_set(dataset: str) -> int | None:
    """How many test images the dataset has (None when unknown)."""
    sizes = SPLIT_SIZES.get(dataset)
    return sizes[1] if sizes else None


def steps_per_epoch(s: RunStatus) -> int | None:
    """The batches of one epoch: as the run measured them, else from the dataset's training images."""
    if s.batches:
        return s.batches
    sizes = SPLIT_SIZES.get(s.planned.config.dataset)
    return math.ceil(sizes[0] / s.planned.config.batch_size) if sizes else None


# ---------------------------------------------------------------- seeds


def seed_group(runs: list[RunStatus], label: str) -> Group:
    """The final test accuracies of finished seed runs, as a group for engine.runs.verdicts."""
    done = [s for s in runs if s.done and s.metrics]
    return Group(
        label,
        tuple(s.run_id for s in done),
        tuple(summarise(s.metrics).test_acc for s in done),
        tuple(s.planned.config.seed for s in done),
    )


def spread(group: Group) -> str:
    """'97.10% ± 0.20 points over seeds 0-2 (mean ± std)'."""
    std = f" ± {100 * group.std:.2f} points" if group.std is not None else ""
    return f"{pct(group.mean)}{std} over {seed_text(group.seeds)} (mean{' ± std' if std else ''})"
