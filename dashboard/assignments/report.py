"""The course's assignments report, filled in with the measured numbers: the fill-in template of
assignments 1, 2 and 5 (every epoch's loss and the test accuracy), CIFAR-10 against MNIST, and the
whole report in order (the answers of assignments 3 and 4 are in comparisons).

Every number comes from a run's metrics; only the "why" explanations are fixed text.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from dashboard.assignments.comparisons import compare_section, hyper_section
from dashboard.assignments.export import Section
from dashboard.assignments.measures import parameter_count, pct, points, seed_group, spread, summarise
from dashboard.assignments.plan import MISSING, Assignment, RunStatus, seed_runs, status_line
from dashboard.forms import SPLIT_SIZES
from engine.ml.readers import files_dir

CIFAR_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
    "batches.meta",
)


def epoch_table(s: RunStatus) -> pd.DataFrame:
    rows = sorted(s.metrics, key=lambda r: r["epoch"])
    return pd.DataFrame(
        {
            "epoch": [r["epoch"] for r in rows],
            "train loss": [round(r["train_loss"], 4) for r in rows],
            "train acc %": [round(100 * r["train_acc"], 2) for r in rows],
            "test loss": [round(r["test_loss"], 4) for r in rows],
            "test acc %": [round(100 * r["test_acc"], 2) for r in rows],
            "seconds": [round(r["seconds"], 2) for r in rows],
        },
        columns=["epoch", "train loss", "train acc %", "test loss", "test acc %", "seconds"],
    )


def template(s: RunStatus) -> str:
    """The course's fill-in lines: Epoch N loss: ..., Test accuracy: ..."""
    epochs = s.planned.config.epochs
    losses = [r["train_loss"] for r in sorted(s.metrics, key=lambda r: r["epoch"])]
    lines = []
    for e in range(1, epochs + 1):
        value = f"{losses[e - 1]:.4f}" if e <= len(losses) else "…"
        lines.append(f"- Epoch {e} loss: **{value}**")
    summary = summarise(s.metrics)
    acc = pct(summary.test_acc) if s.done and summary else "…"
    lines.append(f"- Test accuracy: **{acc}**")
    return "\n".join(lines)


def record_section(a: Assignment, s: RunStatus, seeds: list[RunStatus] | None = None) -> Section:
    """Assignments 1 and 2: the run's template filled in, its seconds per epoch and parameters, its seeds."""
    seeds = seeds or [s]
    params = parameter_count(s.planned.config)
    md = [
        f"**Task.** {a.task}",
        "",
        status_line(s),
        "",
        template(s),
        "",
        "*Loss = mean training loss of the epoch; test accuracy after the last epoch.*",
    ]
    summary = summarise(s.metrics)
    if summary and s.done:
        md += ["", f"Seconds per epoch: {summary.sec_per_epoch:.2f}" + (f" · parameters: {params:,}" if params else "")]
    if len(seeds) > 1:
        md += ["", "**Seeds.** " + " ".join(status_line(r) for r in seeds[1:])]
        if all(r.done for r in seeds):
            md += ["", f"Test accuracy over the {len(seeds)} seeds: {spread(seed_group(seeds, s.planned.label))}."]
    tables = {f"assignment{a.number}_{s.planned.key}.csv": epoch_table(s)} if s.metrics else {}
    return Section(a.number, a.title, "\n".join(md), tables, all(r.done for r in seeds))


def cifar_instructions(cifar_root: str) -> str:
    folder = files_dir("cifar10", Path(cifar_root))
    return (
        f"CIFAR-10 is not on disk. Put the official CIFAR-10 python files ({', '.join(CIFAR_FILES)}, "
        f"from `cifar-10-python.tar.gz` at https://www.cs.toronto.edu/~kriz/cifar.html) in "
        f"`{folder}/`, or point the data root at a folder that holds `{folder.name}/`."
    )


def cifar_section(a: Assignment, s: RunStatus, mnist: RunStatus, cifar_available: bool) -> Section:
    """Assignment 5: the CIFAR-10 run's template, then CIFAR-10 against assignment 2's SimpleCNN on MNIST."""
    md = [f"**Task.** {a.task}", ""]
    if not cifar_available and s.state == MISSING:
        md.append(cifar_instructions(s.planned.config.data_root))
        return Section(a.number, a.title, "\n".join(md), {}, False)
    md += [status_line(s), "", template(s)]
    tables = {"assignment5_cifar10.csv": epoch_table(s)} if s.metrics else {}
    if not (s.done and mnist.done):
        md += ["", "The comparison with MNIST is filled in when this run and assignment 2's SimpleCNN have finished."]
        return Section(a.number, a.title, "\n".join(md), tables, False)
    r, m = summarise(s.metrics), summarise(mnist.metrics)
    pr, pm = parameter_count(s.planned.config), parameter_count(mnist.planned.config)
    dataset = mnist.planned.config.dataset
    d = m.test_acc - r.test_acc
    ratio = r.error_rate / m.error_rate if m.error_rate > 0 else math.inf
    md += [
        "",
        f"**Compared with MNIST.** CIFAR10CNN reached {pct(r.test_acc)} on CIFAR-10 against "
        f"{pct(m.test_acc)} for SimpleCNN on {dataset}: {points(d)} {'lower' if d > 0 else 'higher'}, "
        f"and {ratio:.1f}x the error rate ({pct(r.error_rate)} against {pct(m.error_rate)}). "
        f"An epoch took {r.sec_per_epoch:.2f} s against {m.sec_per_epoch:.2f} s "
        f"({r.sec_per_epoch / m.sec_per_epoch:.2f}x); the model has {pr:,} parameters against {pm:,}.",
        "",
        "**Why CIFAR-10 is harder.** Each image is colour (3 channels, 3,072 numbers instead of 784); the "
        "objects are complex and seen from many angles, sizes and lighting; they sit on busy backgrounds; "
        "and two images of one class (a cat lying, a cat's face) can look less alike than images of "
        "different classes (a cat and a dog). A handwritten digit is one centred stroke on a blank page.",
    ]
    return Section(a.number, a.title, "\n".join(md), tables, True)


def build_report(
    plan: list[Assignment], statuses: dict[str, RunStatus], *, cifar_available: bool = True
) -> list[Section]:
    """The five sections in order, from the located runs (plan.locate)."""
    a1, a2, a3, a4, a5 = plan
    mlps, cnns = seed_runs(statuses, "basic_nn"), seed_runs(statuses, "simple_cnn")
    return [
        record_section(a1, statuses["basic_nn"], mlps),
        record_section(a2, statuses["simple_cnn"], cnns),
        compare_section(a3, statuses["basic_nn"], statuses["simple_cnn"], mlps, cnns),
        hyper_section(a4, statuses),
        cifar_section(a5, statuses["cifar10"], statuses["simple_cnn"], cifar_available),
    ]


def dataset_note(dataset: str, data_root: str) -> str:
    """Which MNIST the assignments use, and what that means for the numbers."""
    if dataset == "mnist":
        return (
            f"These assignments use the full MNIST dataset ({SPLIT_SIZES['mnist'][0]:,} training images) "
            f"from `{data_root}`."
        )
    train, test = SPLIT_SIZES["mnist_sample"]
    return (
        f"Full MNIST is not on disk (expected `{files_dir('mnist', Path(data_root))}/train-images-idx3-ubyte` "
        f"and the other three IDX files), so these assignments use **mnist_sample**: {train + test:,} real "
        f"MNIST digits, {train:,} for training and {test:,} for testing. Expect lower accuracies and much "
        f"shorter epochs than the course's numbers."
    )
