"""The course's five practice assignments: which runs answer them, and the filled-in report.

No Streamlit here. `assignments()` says what each assignment trains, `locate()`
finds the runs in the results root that answer it (identical configs only),
`queue_missing()` queues the ones still missing, and `build_report()` fills in the
course's template with the measured numbers and answers the comparison questions
from them. Every number in the report comes from a run's metrics; only the "why"
explanations are fixed text.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, field
from functools import lru_cache

import pandas as pd
import plotly.graph_objects as go

from engine.config import TrainConfig
from engine.runs.compare import Call, Group, seed_text, verdict, welch_p
from engine.runs.seeds import expand_seeds
from engine.runs.store import RunState, Store

BASELINE = dict(epochs=5, batch_size=64, lr=1e-3, optimizer="adam")  # the course's baseline
TRAIN_SIZES = {"mnist_sample": 4000, "mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000}
SHAPES = {"mnist_sample": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
MODEL_NAMES = {"basic_nn": "BasicNN", "simple_cnn": "SimpleCNN", "cifar10_cnn": "CIFAR10CNN"}
ACTIVE = (RunState.QUEUED.value, RunState.RUNNING.value, RunState.INTERRUPTED.value)
WORTH_IT_POINTS = 0.5  # an accuracy gain below this many points is called marginal
CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
               "test_batch", "batches.meta")

# Assignment 4: one change at a time from the baseline, with the short "why" for each.
CHANGES = (
    ("baseline", {}, "the reference every change is measured against"),
    ("batch 32", {"batch_size": 32},
     "smaller batches take twice as many, noisier steps per epoch: more updates, and usually more time"),
    ("batch 128", {"batch_size": 128},
     "larger batches take half as many, smoother steps per epoch: fewer updates, and usually quicker epochs"),
    ("lr 0.01", {"lr": 0.01},
     "a higher learning rate takes larger steps: fast at first, but it can overshoot and bounce around"),
    ("lr 0.0001", {"lr": 1e-4},
     "a lower learning rate takes small, careful steps: stable but slow, 5 epochs may not be enough"),
    ("10 epochs", {"epochs": 10},
     "more epochs give more time to learn, until the test accuracy stops improving or the model overfits"),
)


# ---------------------------------------------------------------- what each assignment trains


@dataclass(frozen=True)
class Planned:
    key: str  # unique in the report: "basic_nn", "simple_cnn", "lr 0.01", "cifar10", "basic_nn · seed 1"
    label: str  # how the report names it
    config: TrainConfig
    seed_of: str | None = None  # the key of the first seed's run when this one repeats it with another seed


@dataclass(frozen=True)
class Assignment:
    number: int
    title: str
    task: str  # the course guide's wording
    runs: tuple[Planned, ...]


def baseline(arch: str, dataset: str, data_root: str, **changes) -> TrainConfig:
    return TrainConfig(dataset=dataset, data_root=data_root, arch=arch, **{**BASELINE, **changes})


def with_seeds(p: Planned, seeds: int) -> tuple[Planned, ...]:
    """`p` and its repeats with the next seeds (seeds S..S+K-1), each a planned run of its own."""
    return (p,) + tuple(Planned(f"{p.key} · seed {c.seed}", f"{p.label} (seed {c.seed})", c, p.key)
                        for c in expand_seeds(p.config, seeds)[1:])


def assignments(dataset: str, data_root: str, cifar_root: str | None = None,
                a4_arch: str = "simple_cnn", seeds: int = 1) -> list[Assignment]:
    """The five assignments on `dataset` (mnist or mnist_sample); CIFAR-10 is read from `cifar_root`.

    With seeds=K, every run of assignments 1 to 4 is trained with K seeds, so their comparisons can
    tell a real difference from seed noise; assignment 5 compares datasets, far apart, and trains once.
    """
    mlp = with_seeds(Planned("basic_nn", "BasicNN", baseline("basic_nn", dataset, data_root)), seeds)
    cnn = with_seeds(Planned("simple_cnn", "SimpleCNN", baseline("simple_cnn", dataset, data_root)), seeds)
    a4 = tuple(p for name, change, _ in CHANGES
               for p in with_seeds(Planned(name, name, baseline(a4_arch, dataset, data_root, **change)), seeds))
    cifar = Planned("cifar10", "CIFAR10CNN", baseline("cifar10_cnn", "cifar10", cifar_root or data_root))
    return [
        Assignment(1, "BasicNN on MNIST", "Train BasicNN (`basic_nn`) on MNIST: record the loss of "
                   "epochs 1 to 5 and the test accuracy.", mlp),
        Assignment(2, "SimpleCNN on MNIST", "Train SimpleCNN (`simple_cnn`) on MNIST: the same record.", cnn),
        Assignment(3, "Compare the models", "Which performed better, and why? Did the CNN train slower or "
                   "faster? Was the improvement worth it?", mlp + cnn),
        Assignment(4, "Change one hyperparameter at a time", "From the baseline (batch 64, lr 0.001, "
                   f"5 epochs, Adam), train {MODEL_NAMES.get(a4_arch, a4_arch)} with batch size 32 and 128, "
                   "learning rate 0.01 and 0.0001, and 10 epochs; observe what changes.", a4),
        Assignment(5, "CIFAR-10", "Train `cifar10_cnn` on CIFAR-10 and compare with the MNIST results.", (cifar,)),
    ]


# ---------------------------------------------------------------- which runs answer them


@dataclass
class RunStatus:
    planned: Planned
    state: str  # "missing", or the run's RunState value
    run_id: str | None = None
    metrics: list[dict] = field(default_factory=list)
    epoch: int = 0  # epochs finished
    batch: int = 0
    batches: int = 0
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state == RunState.DONE.value

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def needs_run(self) -> bool:
        return not (self.done or self.active)


def seed_runs(statuses: dict[str, RunStatus], key: str) -> list[RunStatus]:
    """The planned run `key` and its repeats with other seeds, first seed first."""
    return [s for s in statuses.values() if key in (s.planned.key, s.planned.seed_of)]


def seed_group(runs: list[RunStatus], label: str) -> Group:
    """The final test accuracies of finished seed runs, as a group for engine.runs.compare."""
    done = [s for s in runs if s.done and s.metrics]
    return Group(label, tuple(s.run_id for s in done), tuple(summarise(s.metrics).test_acc for s in done),
                 tuple(s.planned.config.seed for s in done))


def _spread(group: Group) -> str:
    """'97.10% ± 0.20 points over seeds 0-2 (mean ± std)'."""
    std = f" ± {100 * group.std:.2f} points" if group.std is not None else ""
    return f"{pct(group.mean)}{std} over {seed_text(group.seeds)} (mean{' ± std' if std else ''})"


def locate(store: Store, planned: list[Planned] | tuple[Planned, ...], metrics=None) -> dict[str, RunStatus]:
    """For each planned run, the run that answers it: a done run with an identical config
    (engine.runs.sweeps.find_finished), else the newest queued or running one, else the newest
    failed one (to show why), else "missing". `metrics(record)` reads a run's rows."""
    from engine.runs.sweeps import find_finished

    read = metrics or (lambda record: store.metrics(record.id))
    result = {}
    for p in planned:
        key = json.dumps(p.config.to_dict(), sort_keys=True)
        run_id = find_finished(store, p.config)
        if run_id is None:
            rows = store.conn.execute("SELECT id, state FROM runs WHERE kind = 'train' AND config = ? "
                                      "ORDER BY id DESC", (key,)).fetchall()
            active = [r["id"] for r in rows if r["state"] in ACTIVE]
            others = [r["id"] for r in rows if r["state"] != RunState.DONE.value]
            run_id = (active or others or [None])[0]
        if run_id is None:
            result[p.key] = RunStatus(p, "missing")
            continue
        record = store.get_run(run_id)
        result[p.key] = RunStatus(p, record.state.value, run_id, read(record), record.epoch, record.batch,
                                  record.batches, record.error)
    return result


def to_queue(statuses: dict[str, RunStatus], assignment: Assignment) -> list[TrainConfig]:
    """The configs of `assignment` with no done or active run, each once."""
    seen, configs = set(), []
    for p in assignment.runs:
        key = json.dumps(p.config.to_dict(), sort_keys=True)
        if statuses[p.key].needs_run and key not in seen:
            seen.add(key)
            configs.append(p.config)
    return configs


def queue_missing(store: Store, assignment: Assignment, statuses: dict[str, RunStatus],
                  download: bool = False) -> list[str]:
    """Queue exactly the runs of `assignment` still missing, as one sweep; returns their run ids.

    Identical finished configs are reused, never retrained. Raises ConfigError or
    DatasetError (with a message for the learner) when a run cannot be trained.
    """
    from engine.runs.sweeps import submit_sweep

    configs = to_queue(statuses, assignment)
    if not configs:
        return []
    _, run_ids = submit_sweep(store, configs, reuse=True, download=download)
    return run_ids


# ---------------------------------------------------------------- measurements


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
        losses=[r["train_loss"] for r in rows], test_acc=rows[-1]["test_acc"], train_acc=rows[-1]["train_acc"],
        best_acc=best["test_acc"], best_epoch=best["epoch"],
        sec_per_epoch=sum(seconds) / len(seconds) if seconds else math.nan,
        loss_rises=sum(b > a for a, b in zip(test_losses, test_losses[1:])), epochs=len(rows))


def pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def points(fraction_diff: float) -> str:
    """A difference of two accuracies (fractions) in percentage points."""
    return f"{100 * abs(fraction_diff):.2f} point{'' if round(100 * abs(fraction_diff), 2) == 1 else 's'}"


@lru_cache(maxsize=64)
def parameter_count(config: TrainConfig) -> int | None:
    """Trainable parameters of the config's model on its dataset (None for an unknown shape)."""
    from engine.ml.models import build_model, count_parameters

    shape = SHAPES.get(config.dataset)
    return None if shape is None else count_parameters(build_model(config.arch, shape, 10))


@lru_cache(maxsize=64)
def largest_layer(config: TrainConfig) -> tuple[str, int] | None:
    """(name, parameters) of the layer holding most of the model's parameters."""
    from engine.ml.analysis import shape_trace
    from engine.ml.models import build_model

    shape = SHAPES.get(config.dataset)
    if shape is None:
        return None
    row = max(shape_trace(build_model(config.arch, shape, 10), shape), key=lambda r: r.params)
    return row.layer, row.params


# ---------------------------------------------------------------- the report


@dataclass
class Section:
    number: int
    title: str
    markdown: str  # the filled-in template and the measured answers
    tables: dict[str, pd.DataFrame]  # CSV name -> table
    complete: bool  # every run it needs is done


def _status_line(s: RunStatus) -> str:
    c = s.planned.config
    what = (f"`{c.arch}` on `{c.dataset}`, batch {c.batch_size}, lr {c.lr:g}, {c.epochs} epochs, "
            f"{c.optimizer.capitalize() if c.optimizer != 'sgd' else 'SGD'}")
    if s.state == "missing":
        return f"{s.planned.label} ({what}): not run yet."
    where = f"run `{s.run_id}`"
    if s.done:
        return f"{s.planned.label} ({what}): done, {where}."
    if s.state == RunState.RUNNING.value:
        batch = f", batch {s.batch}/{s.batches}" if s.batches else ""
        return f"{s.planned.label} ({what}): training, epoch {min(s.epoch + 1, c.epochs)} of {c.epochs}{batch}, {where}."
    if s.active:
        return f"{s.planned.label} ({what}): {s.state}, waiting for the worker, {where}."
    reason = f": {s.error}" if s.error else ""
    return f"{s.planned.label} ({what}): {s.state}{reason} ({where}); run the assignment again to retrain it."


def _epoch_table(s: RunStatus) -> pd.DataFrame:
    rows = sorted(s.metrics, key=lambda r: r["epoch"])
    return pd.DataFrame({
        "epoch": [r["epoch"] for r in rows],
        "train loss": [round(r["train_loss"], 4) for r in rows],
        "train acc %": [round(100 * r["train_acc"], 2) for r in rows],
        "test loss": [round(r["test_loss"], 4) for r in rows],
        "test acc %": [round(100 * r["test_acc"], 2) for r in rows],
        "seconds": [round(r["seconds"], 2) for r in rows],
    }, columns=["epoch", "train loss", "train acc %", "test loss", "test acc %", "seconds"])


def _template(s: RunStatus) -> str:
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


def _record_section(a: Assignment, s: RunStatus, seeds: list[RunStatus] | None = None) -> Section:
    seeds = seeds or [s]
    params = parameter_count(s.planned.config)
    md = [f"**Task.** {a.task}", "", _status_line(s), "", _template(s), "",
          "*Loss = mean training loss of the epoch; test accuracy after the last epoch.*"]
    summary = summarise(s.metrics)
    if summary and s.done:
        md += ["", f"Seconds per epoch: {summary.sec_per_epoch:.2f}" + (f" · parameters: {params:,}" if params else "")]
    if len(seeds) > 1:
        md += ["", "**Seeds.** " + " ".join(_status_line(r) for r in seeds[1:])]
        if all(r.done for r in seeds):
            md += ["", f"Test accuracy over the {len(seeds)} seeds: {_spread(seed_group(seeds, s.planned.label))}."]
    tables = {f"assignment{a.number}_{s.planned.key}.csv": _epoch_table(s)} if s.metrics else {}
    return Section(a.number, a.title, "\n".join(md), tables, all(r.done for r in seeds))


def _mean_summary(runs: list[RunStatus]) -> Summary:
    """The first seed's summary, with the test accuracy and the seconds per epoch averaged over all seeds."""
    each = [summarise(s.metrics) for s in runs]
    first = each[0]
    if len(each) == 1:
        return first
    return dataclasses.replace(first, test_acc=statistics.fmean(r.test_acc for r in each),
                               sec_per_epoch=statistics.fmean(r.sec_per_epoch for r in each))


def _compare_section(a: Assignment, mlp: RunStatus, cnn: RunStatus, mlps: list[RunStatus] | None = None,
                     cnns: list[RunStatus] | None = None) -> Section:
    mlps, cnns = mlps or [mlp], cnns or [cnn]
    md = [f"**Task.** {a.task}", ""] + ["- " + _status_line(s) for s in mlps + cnns] + [""]
    if not all(s.done for s in mlps + cnns):
        every = "both runs have" if len(mlps + cnns) == 2 else f"all {len(mlps + cnns)} runs (every seed) have"
        md.append(f"The answers are filled in when {every} finished.")
        return Section(a.number, a.title, "\n".join(md), {}, False)
    m, c = _mean_summary(mlps), _mean_summary(cnns)
    seeded = len(mlps) > 1 and len(cnns) > 1
    mg, cg = seed_group(mlps, "BasicNN"), seed_group(cnns, "SimpleCNN")
    said = verdict(cg, mg, "test_acc") if seeded else None
    pm, pc = parameter_count(mlp.planned.config), parameter_count(cnn.planned.config)
    measures = ["test accuracy %", "final training loss", "seconds per epoch", "parameters"]
    table = pd.DataFrame({
        "measure": [("mean " if seeded else "") + measures[0], *measures[1:]],
        "BasicNN": [round(100 * m.test_acc, 2), round(m.losses[-1], 4), round(m.sec_per_epoch, 2), pm],
        "SimpleCNN": [round(100 * c.test_acc, 2), round(c.losses[-1], 4), round(c.sec_per_epoch, 2), pc],
    })
    if seeded:
        table.loc[len(table)] = ["test accuracy std (points)", round(100 * mg.std, 2), round(100 * cg.std, 2)]
        table.loc[len(table)] = ["seeds", mg.n, cg.n]
    diff = c.test_acc - m.test_acc
    test_size = _test_size(cnn.planned.config.dataset)
    if diff > 0:
        better = (f"**SimpleCNN**: {pct(c.test_acc)} test accuracy against {pct(m.test_acc)} for BasicNN, "
                  f"{points(diff)} higher")
    elif diff < 0:
        better = (f"**BasicNN**, this time: {pct(m.test_acc)} test accuracy against {pct(c.test_acc)} for "
                  f"SimpleCNN, {points(diff)} higher")
    else:
        better = f"Neither: both reached {pct(c.test_acc)} test accuracy"
    if test_size and diff and not seeded:
        better += f" ({round(abs(diff) * test_size):,} {'fewer' if diff > 0 else 'more'} of the {test_size:,} test images wrong for the CNN)"
    if said is not None:
        better = (f"{said.text}. Mean test accuracy: {pct(c.test_acc)} for SimpleCNN, {pct(m.test_acc)} for "
                  f"BasicNN ({TEST_WORDS})")
    layer = largest_layer(cnn.planned.config)
    why = ("A CNN keeps the image's 2-D structure: its small 3x3 filters look at neighbouring pixels and are "
           "shared across all positions, so a stroke is recognised wherever it is, and pooling makes it "
           "tolerant to small shifts. The MLP flattens the image into 784 unrelated numbers and must learn "
           "every position separately.")
    why += (f" Parameters: BasicNN has {pm:,}, SimpleCNN {pc:,} ({pc / pm:.1f}x)" if pm and pc else "")
    if layer:
        why += f", {layer[1] / pc:.0%} of the CNN's in one layer, {layer[0]}; its convolutions need only a few thousand."
    ratio = c.sec_per_epoch / m.sec_per_epoch if m.sec_per_epoch > 0 else math.nan
    speed = (f"**{'Slower' if ratio > 1 else 'Faster'}**: {c.sec_per_epoch:.2f} s per epoch for SimpleCNN against "
             f"{m.sec_per_epoch:.2f} s for BasicNN, {ratio:.2f}x the time"
             f" ({c.sec_per_epoch * c.epochs - m.sec_per_epoch * m.epochs:+.1f} s over {c.epochs} epochs). "
             + ("Every convolution slides its filters over every position of the image, which costs far more "
                "arithmetic than the MLP's matrix products." if ratio > 1 else
                "The convolutions were cheap enough here to beat the MLP's larger first layer."))
    if m.error_rate > 0 and diff > 0:
        removed = diff / m.error_rate
        gain = f"it removed {removed:.0%} of BasicNN's mistakes (error rate {pct(m.error_rate)} → {pct(c.error_rate)})"
    else:
        gain = f"error rate {pct(m.error_rate)} for BasicNN, {pct(c.error_rate)} for SimpleCNN"
    if said is not None and said.call != Call.REAL:
        worth = (f"**Not shown**: the {'CNN' if diff > 0 else 'MLP'}'s lead of {points(diff)} is within seed noise, "
                 f"while the CNN took {ratio:.2f}x the time per epoch. Run more seeds before calling it worth it.")
    elif diff * 100 >= WORTH_IT_POINTS:
        worth = (f"**Yes**: {gain} for {ratio:.2f}x the time per epoch. A few seconds more per epoch for a model "
                 "that makes clearly fewer mistakes is a good trade.")
    elif diff > 0:
        worth = (f"**Marginal**: {gain}, a gain under {WORTH_IT_POINTS} points, for {ratio:.2f}x the time per "
                 "epoch. On harder images the gap grows.")
    else:
        worth = (f"**No, not in this run**: {gain}, while the CNN took {ratio:.2f}x the time per epoch. "
                 "Train both longer or on the full dataset before drawing conclusions.")
    md += [_md_table(table), "",
           f"**Which model performed better?** {better}.", "",
           f"**Why?** {why}", "",
           f"**Did the CNN train slower or faster?** {speed}", "",
           f"**Was the improvement worth it?** {worth}"]
    return Section(a.number, a.title, "\n".join(md), {"assignment3_comparison.csv": table}, True)


TEST_WORDS = "Welch's t-test on the final test accuracy of each seed"


def _test_size(dataset: str) -> int | None:
    return {"mnist_sample": 1000, "mnist": 10000, "fashion_mnist": 10000, "cifar10": 10000}.get(dataset)


def _steps(config: TrainConfig) -> int | None:
    size = TRAIN_SIZES.get(config.dataset)
    return math.ceil(size / config.batch_size) if size else None


def observation(name: str, s: RunStatus, base: RunStatus, seeds: list[RunStatus] | None = None,
                base_seeds: list[RunStatus] | None = None) -> str:
    """One sentence or two about what the change did, from the measurements; with several seeds of
    the change and of the baseline, the mean accuracies and whether the gap is beyond seed noise."""
    why = dict((n, w) for n, _, w in CHANGES)[name]
    seeds, base_seeds = seeds or [s], base_seeds or [base]
    if len(seeds) > 1 and len(base_seeds) > 1 and s.done and base.done:
        unfinished = [r for r in seeds + base_seeds if not r.done]
        if any(r.active for r in unfinished):
            return f"**{name}**: waiting for {len(unfinished)} more seed run(s) of it and of the baseline."
        if unfinished:
            states = ", ".join(sorted({r.state for r in unfinished}))
            return (f"**{name}**: {len(unfinished)} seed run(s) of it or of the baseline ended {states}; "
                    "run this assignment again to train them.")
        group, base_group = seed_group(seeds, name), seed_group(base_seeds, "the baseline")
        if name == "baseline":
            return f"**baseline** ended at {_spread(group)}; it is {why}."
        said = verdict(group, base_group, "test_acc")
        alone = observation(name, s, base).split(". Why: ")[0].split("** ", 1)[1]
        return (f"**{name}** ended at {_spread(group)}; {said.text}. Seed {s.planned.config.seed} alone {alone}. "
                f"Why: {why}.")
    if s.state in (RunState.DIVERGED.value, RunState.FAILED.value):
        return f"**{name}** {s.state}: {s.error or 'no message'}. Why: {why}."
    if not s.done:
        return f"**{name}**: {_status_line(s).split(': ', 1)[-1]}"
    r = summarise(s.metrics)
    if name == "baseline":
        return (f"**baseline** ended at {pct(r.test_acc)} with {r.sec_per_epoch:.2f} s per epoch; "
                f"it is {why}.")
    b = summarise(base.metrics) if base.done else None
    if b is None:
        return f"**{name}** ended at {pct(r.test_acc)}; the comparison needs the finished baseline."
    d = r.test_acc - b.test_acc
    where = ("the same as the baseline" if round(100 * d, 2) == 0
             else f"{points(d)} {'above' if d > 0 else 'below'} the baseline ({pct(b.test_acc)})")
    parts = [f"**{name}** ended at {pct(r.test_acc)}, {where}"]
    if name.startswith("batch"):
        steps, steps0 = _steps(s.planned.config), _steps(base.planned.config)
        ratio = r.sec_per_epoch / b.sec_per_epoch if b.sec_per_epoch > 0 else math.nan
        parts.append(f"an epoch took {r.sec_per_epoch:.2f} s ({ratio:.2f}x the baseline)"
                     + (f" for {steps:,} steps instead of {steps0:,}" if steps and steps0 else ""))
    if name.startswith("lr"):
        start = r.losses[0] / b.losses[0] if b.losses[0] > 0 else math.nan
        parts.append(f"its first-epoch loss was {r.losses[0]:.4f} against {b.losses[0]:.4f} "
                     f"({'a faster' if start < 1 else 'a slower'} start)")
    if name == "10 epochs":
        at5 = summarise([row for row in s.metrics if row["epoch"] <= base.planned.config.epochs])
        parts.append(f"the epochs after {base.planned.config.epochs} added {100 * (r.test_acc - at5.test_acc):+.2f} "
                     f"points (best {pct(r.best_acc)} at epoch {r.best_epoch})")
        gap, gap0 = r.train_acc - r.test_acc, b.train_acc - b.test_acc
        if gap > gap0:
            parts.append(f"the train-test gap grew from {100 * gap0:.2f} to {100 * gap:.2f} points, "
                         "a sign of overfitting")
    steps_up = max(1, r.epochs - 1)
    if name == "10 epochs":  # the first epochs repeat the baseline; what matters is what came after
        later = [row["test_loss"] for row in sorted(s.metrics, key=lambda row: row["epoch"])][b.epochs - 1:]
        rises = sum(y > x for x, y in zip(later, later[1:]))
        parts.append(f"its test loss rose in {rises} of the {len(later) - 1} extra epochs")
    elif r.loss_rises > b.loss_rises:
        parts.append(f"its test loss was noisier: it rose in {r.loss_rises} of {steps_up} epochs "
                     f"(baseline: {b.loss_rises})")
    elif r.loss_rises < b.loss_rises:
        parts.append(f"its test loss was steadier: it rose in {r.loss_rises} of {steps_up} epochs "
                     f"(baseline: {b.loss_rises})")
    return "; ".join(parts) + f". Why: {why}."


def _hyper_section(a: Assignment, statuses: dict[str, RunStatus]) -> Section:
    every = [statuses[p.key] for p in a.runs]
    runs = [s for s in every if s.planned.seed_of is None]
    seeds = {s.planned.key: seed_runs({r.planned.key: r for r in every}, s.planned.key) for s in runs}
    seeded = any(len(v) > 1 for v in seeds.values())
    base = statuses["baseline"]
    base_group = seed_group(seeds["baseline"], "the baseline")
    rows = []
    b = summarise(base.metrics) if base.done else None
    for s in runs:
        r = summarise(s.metrics) if s.done else None
        c = s.planned.config
        rows.append({
            "change": s.planned.key, "batch size": c.batch_size, "lr": c.lr, "epochs": c.epochs, "state": s.state,
            "test acc %": round(100 * r.test_acc, 2) if r else None,
            "vs baseline (points)": round(100 * (r.test_acc - b.test_acc), 2) if r and b else None,
            "epoch 1 loss": round(r.losses[0], 4) if r else None,
            "final loss": round(r.losses[-1], 4) if r else None,
            "s / epoch": round(r.sec_per_epoch, 2) if r else None,
            "time vs baseline": round(r.sec_per_epoch / b.sec_per_epoch, 2) if r and b and b.sec_per_epoch else None,
            "test-loss rises": r.loss_rises if r else None,
        })
        if seeded:
            group = seed_group(seeds[s.planned.key], s.planned.key)
            complete = all(x.done for x in seeds[s.planned.key] + seeds["baseline"])
            said = verdict(group, base_group, "test_acc") if complete and s.planned.key != "baseline" else None
            p = welch_p(group.values, base_group.values) if said else None
            rows[-1].update({
                "seeds": group.n, "mean test acc %": round(100 * group.mean, 2) if group.n else None,
                "std (points)": round(100 * group.std, 2) if group.std is not None else None,
                "p vs baseline": round(p, 4) if p is not None else None,
                "vs baseline": said.call.value if said else None})
    table = pd.DataFrame(rows)
    md = [f"**Task.** {a.task}", "", _md_table(table), "",
          "*Seconds are wall-clock time on this machine: other programs running at the same time make them noisier.*",
          "", "**What changed:**", ""]
    md += [f"- {observation(s.planned.key, s, base, seeds[s.planned.key], seeds['baseline'])}" for s in runs]
    if seeded:
        md += ["", f"*Beyond noise: {TEST_WORDS}, each change against the baseline, real when p < 0.05.*"]
    return Section(a.number, a.title, "\n".join(md), {"assignment4_hyperparameters.csv": table},
                   all(s.done for s in every))


def cifar_instructions(cifar_root: str) -> str:
    return (f"CIFAR-10 is not on disk. Put the official CIFAR-10 python files ({', '.join(CIFAR_FILES)}, "
            f"from `cifar-10-python.tar.gz` at https://www.cs.toronto.edu/~kriz/cifar.html) in "
            f"`{cifar_root}/cifar-10-batches-py/`, or point the data root at a folder that holds "
            f"`cifar-10-batches-py/`.")


def _cifar_section(a: Assignment, s: RunStatus, mnist: RunStatus, cifar_available: bool) -> Section:
    md = [f"**Task.** {a.task}", ""]
    if not cifar_available and s.state == "missing":
        md.append(cifar_instructions(s.planned.config.data_root))
        return Section(a.number, a.title, "\n".join(md), {}, False)
    md += [_status_line(s), "", _template(s)]
    tables = {"assignment5_cifar10.csv": _epoch_table(s)} if s.metrics else {}
    if not (s.done and mnist.done):
        md += ["", "The comparison with MNIST is filled in when this run and assignment 2's SimpleCNN have finished."]
        return Section(a.number, a.title, "\n".join(md), tables, False)
    r, m = summarise(s.metrics), summarise(mnist.metrics)
    pr, pm = parameter_count(s.planned.config), parameter_count(mnist.planned.config)
    dataset = mnist.planned.config.dataset
    d = m.test_acc - r.test_acc
    ratio = r.error_rate / m.error_rate if m.error_rate > 0 else math.inf
    md += ["", f"**Compared with MNIST.** CIFAR10CNN reached {pct(r.test_acc)} on CIFAR-10 against "
               f"{pct(m.test_acc)} for SimpleCNN on {dataset}: {points(d)} {'lower' if d > 0 else 'higher'}, "
               f"and {ratio:.1f}x the error rate ({pct(r.error_rate)} against {pct(m.error_rate)}). "
               f"An epoch took {r.sec_per_epoch:.2f} s against {m.sec_per_epoch:.2f} s "
               f"({r.sec_per_epoch / m.sec_per_epoch:.2f}x); the model has {pr:,} parameters against {pm:,}.",
           "",
           "**Why CIFAR-10 is harder.** Each image is colour (3 channels, 3,072 numbers instead of 784); the "
           "objects are complex and seen from many angles, sizes and lighting; they sit on busy backgrounds; "
           "and two images of one class (a cat lying, a cat's face) can look less alike than images of "
           "different classes (a cat and a dog). A handwritten digit is one centred stroke on a blank page."]
    return Section(a.number, a.title, "\n".join(md), tables, True)


def build_report(plan: list[Assignment], statuses: dict[str, RunStatus], *,
                 cifar_available: bool = True) -> list[Section]:
    a1, a2, a3, a4, a5 = plan
    mlps, cnns = seed_runs(statuses, "basic_nn"), seed_runs(statuses, "simple_cnn")
    return [
        _record_section(a1, statuses["basic_nn"], mlps),
        _record_section(a2, statuses["simple_cnn"], cnns),
        _compare_section(a3, statuses["basic_nn"], statuses["simple_cnn"], mlps, cnns),
        _hyper_section(a4, statuses),
        _cifar_section(a5, statuses["cifar10"], statuses["simple_cnn"], cifar_available),
    ]


def dataset_note(dataset: str, data_root: str) -> str:
    if dataset == "mnist":
        return f"These assignments use the full MNIST dataset (60,000 training images) from `{data_root}`."
    return (f"Full MNIST is not on disk (expected `{data_root}/MNIST/raw/train-images-idx3-ubyte` and the "
            f"other three IDX files), so these assignments use **mnist_sample**: 5,000 real MNIST digits, "
            f"4,000 for training and 1,000 for testing. Expect lower accuracies and much shorter epochs "
            f"than the course's numbers.")


# ---------------------------------------------------------------- export


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 10000:
        value = int(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    return str(value).replace("|", "\\|")


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |"
            for row in df.astype(object).where(df.notna(), None).itertuples(index=False)]
    return "\n".join([head, rule, *body])


def report_markdown(sections: list[Section], *, note: str, generated: str) -> str:
    """The whole report as one Markdown document, with every epoch table."""
    out = ["# Course assignments: report", "", f"*Generated by Lensboard on {generated}.* {note}", ""]
    for s in sections:
        out += [f"## Assignment {s.number}: {s.title}", "", s.markdown, ""]
        for name, table in s.tables.items():
            if s.number in (1, 2, 5):
                out += [f"Per-epoch measurements (`{name}`):", "", _md_table(table), ""]
    return "\n".join(out).rstrip() + "\n"


def report_csvs(sections: list[Section]) -> dict[str, str]:
    """Every table of the report as CSV text, by file name."""
    return {name: table.to_csv(index=False) for s in sections for name, table in s.tables.items()}


# ---------------------------------------------------------------- figure


def overlay_figure(runs: list[RunStatus], metric: str = "test_acc") -> go.Figure:
    """One line per run of assignment 4 over epochs; the baseline drawn thicker and dark."""
    names = {"test_acc": "test accuracy (%)", "train_loss": "training loss", "test_loss": "test loss"}
    if metric not in names:
        raise ValueError(f"metric must be one of {', '.join(names)}, got {metric!r}")
    scale = 100.0 if metric.endswith("acc") else 1.0
    fig = go.Figure()
    palette = ["#222222", "#1f77b4", "#17becf", "#d62728", "#ff7f0e", "#2ca02c"]
    # the baseline is drawn last so that a run sharing its first epochs (10 epochs) does not hide it
    order = sorted(range(len(runs)), key=lambda i: runs[i].planned.key == "baseline")
    for i in order:
        s = runs[i]
        rows = sorted(s.metrics, key=lambda r: r["epoch"])
        if not rows:
            continue
        base = s.planned.key == "baseline"
        fig.add_trace(go.Scatter(legendrank=1 if base else 10 + i,
            x=[r["epoch"] for r in rows], y=[scale * r[metric] for r in rows], mode="lines+markers",
            name=s.planned.label, line=dict(width=3.5 if base else 2, color=palette[i % len(palette)],
                                            dash="solid" if base else None),
            hovertemplate=f"<b>{s.planned.label}</b><br>epoch %{{x}}<br>{names[metric]}: %{{y:.4g}}<extra></extra>"))
    fig.update_layout(title=dict(text=f"{names[metric].capitalize()} by epoch, one line per change", x=0),
                      xaxis_title="epoch", yaxis_title=names[metric], template="plotly_white", height=380,
                      margin=dict(l=10, r=10, t=50, b=10), xaxis=dict(dtick=1))
    return fig
