"""What the course's five assignments train, which runs of the results root answer them, and queueing
the ones still missing.

`assignments()` is the course catalogue; `locate()` finds, for every planned run, the run with an
identical config (a done one first); `to_queue()` and `queue_missing()` queue exactly what is missing,
reusing finished identical runs, never retraining them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.config import TrainConfig
from engine.runs.records import RunKind, RunRecord, RunState
from engine.runs.seeds import expand_seeds
from engine.runs.store import Store
from engine.runs.sweeps import find_finished, submit_sweep

BASELINE = dict(epochs=5, batch_size=64, lr=1e-3, optimizer="adam")  # the course's baseline
MODEL_NAMES = {"basic_nn": "BasicNN", "simple_cnn": "SimpleCNN", "cifar10_cnn": "CIFAR10CNN"}  # the course's names
MISSING = "missing"  # the state of a planned run that no run answers yet

# Assignment 4: one change at a time from the baseline, with the short "why" for each.
CHANGES = (
    ("baseline", {}, "the reference every change is measured against"),
    (
        "batch 32",
        {"batch_size": 32},
        "smaller batches take twice as many, noisier steps per epoch: more updates, and usually more time",
    ),
    (
        "batch 128",
        {"batch_size": 128},
        "larger batches take half as many, smoother steps per epoch: fewer updates, and usually quicker epochs",
    ),
    (
        "lr 0.01",
        {"lr": 0.01},
        "a higher learning rate takes larger steps: fast at first, but it can overshoot and bounce around",
    ),
    (
        "lr 0.0001",
        {"lr": 1e-4},
        "a lower learning rate takes small, careful steps: stable but slow, 5 epochs may not be enough",
    ),
    (
        "10 epochs",
        {"epochs": 10},
        "more epochs give more time to learn, until the test accuracy stops improving or the model overfits",
    ),
)


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


def baseline(arch: str, dataset: str, data_root: str, **changes: object) -> TrainConfig:
    return TrainConfig(dataset=dataset, data_root=data_root, arch=arch, **{**BASELINE, **changes})


def with_seeds(p: Planned, seeds: int) -> tuple[Planned, ...]:
    """`p` and its repeats with the next seeds (seeds S..S+K-1), each a planned run of its own."""
    return (p,) + tuple(
        Planned(f"{p.key} · seed {c.seed}", f"{p.label} (seed {c.seed})", c, p.key)
        for c in expand_seeds(p.config, seeds)[1:]
    )


def assignments(
    dataset: str, data_root: str, cifar_root: str | None = None, a4_arch: str = "simple_cnn", seeds: int = 1
) -> list[Assignment]:
    """The five assignments on `dataset` (mnist or mnist_sample); CIFAR-10 is read from `cifar_root`.

    With seeds=K, every run of assignments 1 to 4 is trained with K seeds, so their comparisons can
    tell a real difference from seed noise; assignment 5 compares datasets, far apart, and trains once.
    """
    mlp = with_seeds(Planned("basic_nn", "BasicNN", baseline("basic_nn", dataset, data_root)), seeds)
    cnn = with_seeds(Planned("simple_cnn", "SimpleCNN", baseline("simple_cnn", dataset, data_root)), seeds)
    a4 = tuple(
        p
        for name, change, _ in CHANGES
        for p in with_seeds(Planned(name, name, baseline(a4_arch, dataset, data_root, **change)), seeds)
    )
    cifar = Planned("cifar10", "CIFAR10CNN", baseline("cifar10_cnn", "cifar10", cifar_root or data_root))
    return [
        Assignment(
            1,
            "BasicNN on MNIST",
            "Train BasicNN (`basic_nn`) on MNIST: record the loss of epochs 1 to 5 and the test accuracy.",
            mlp,
        ),
        Assignment(2, "SimpleCNN on MNIST", "Train SimpleCNN (`simple_cnn`) on MNIST: the same record.", cnn),
        Assignment(
            3,
            "Compare the models",
            "Which performed better, and why? Did the CNN train slower or faster? Was the improvement worth it?",
            mlp + cnn,
        ),
        Assignment(
            4,
            "Change one hyperparameter at a time",
            "From the baseline (batch 64, lr 0.001, "
            f"5 epochs, Adam), train {MODEL_NAMES.get(a4_arch, a4_arch)} with batch size 32 and 128, "
            "learning rate 0.01 and 0.0001, and 10 epochs; observe what changes.",
            a4,
        ),
        Assignment(5, "CIFAR-10", "Train `cifar10_cnn` on CIFAR-10 and compare with the MNIST results.", (cifar,)),
    ]


# ---------------------------------------------------------------- which runs answer them


@dataclass
class RunStatus:
    planned: Planned
    state: str  # MISSING, or the run's RunState value
    run_id: str | None = None
    metrics: list[dict] = field(default_factory=list)
    epoch: int = 0  # epochs finished
    batch: int = 0
    batches: int = 0  # batches of an epoch: the steps per epoch a finished run took (0 when unknown)
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state == RunState.DONE.value

    @property
    def active(self) -> bool:
        return self.state != MISSING and RunState(self.state).active

    @property
    def needs_run(self) -> bool:
        return not (self.done or self.active)


def status_line(s: RunStatus) -> str:
    """Where a planned run stands, in one sentence: what it trains, and missing, done, training or why not."""
    c = s.planned.config
    what = (
        f"`{c.arch}` on `{c.dataset}`, batch {c.batch_size}, lr {c.lr:g}, {c.epochs} epochs, "
        f"{c.optimizer.capitalize() if c.optimizer != 'sgd' else 'SGD'}"
    )
    if s.state == MISSING:
        return f"{s.planned.label} ({what}): not run yet."
    where = f"run `{s.run_id}`"
    if s.done:
        return f"{s.planned.label} ({what}): done, {where}."
    if s.state == RunState.RUNNING.value:
        batch = f", batch {s.batch}/{s.batches}" if s.batches else ""
        epoch = min(s.epoch + 1, c.epochs)
        return f"{s.planned.label} ({what}): training, epoch {epoch} of {c.epochs}{batch}, {where}."
    if s.active:
        return f"{s.planned.label} ({what}): {s.state}, waiting for the worker, {where}."
    reason = f": {s.error}" if s.error else ""
    return f"{s.planned.label} ({what}): {s.state}{reason} ({where}); run the assignment again to retrain it."


def seed_runs(statuses: dict[str, RunStatus], key: str) -> list[RunStatus]:
    """The planned run `key` and its repeats with other seeds, first seed first."""
    return [s for s in statuses.values() if key in (s.planned.key, s.planned.seed_of)]


def _config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def locate(
    store: Store, planned: list[Planned] | tuple[Planned, ...], metrics: Callable[[str], list[dict]] | None = None
) -> dict[str, RunStatus]:
    """For each planned run, the run that answers it: a done run with an identical config
    (engine.runs.sweeps.find_finished), else the newest queued or running one, else the newest
    failed one (to show why), else MISSING. `metrics(record)` reads a run's rows."""
    read = metrics or (lambda record: store.metrics(record.id))
    newest_first: dict[str, list[RunRecord]] = {}  # config -> its train runs, newest first
    for record in reversed(store.list_runs(kind=RunKind.TRAIN.value)):
        newest_first.setdefault(_config_key(record.config), []).append(record)
    result = {}
    for p in planned:
        run_id = find_finished(store, p.config)
        if run_id is None:
            same = newest_first.get(_config_key(p.config.to_dict()), [])
            active = [r.id for r in same if r.state.active]
            others = [r.id for r in same if r.state != RunState.DONE]
            run_id = (active or others or [None])[0]
        if run_id is None:
            result[p.key] = RunStatus(p, MISSING)
            continue
        record = store.get_run(run_id)
        result[p.key] = RunStatus(
            p, record.state.value, run_id, read(record), record.epoch, record.batch, record.batches, record.error
        )
    return result


def to_queue(statuses: dict[str, RunStatus], assignment: Assignment) -> list[TrainConfig]:
    """The configs of `assignment` with no done or active run, each once."""
    seen, configs = set(), []
    for p in assignment.runs:
        key = _config_key(p.config.to_dict())
        if statuses[p.key].needs_run and key not in seen:
            seen.add(key)
            configs.append(p.config)
    return configs


def queue_missing(
    store: Store, assignment: Assignment, statuses: dict[str, RunStatus], download: bool = False
) -> list[str]:
    """Queue exactly the runs of `assignment` still missing, as one sweep; returns their run ids.

    Identical finished configs are reused, never retrained. Raises ConfigError or
    DatasetError (with a message for the learner) when a run cannot be trained.
    """
    configs = to_queue(statuses, assignment)
    if not configs:
        return []
    _, run_ids = submit_sweep(store, configs, reuse=True, download=download)
    return run_ids
