"""Groups of runs that differ only in seed, and the comparison of every two groups.

Plain data in (run ids, config dicts, metrics rows), numbers and sentences out: no torch, no
Streamlit. `load_runs` is the thin part that reads them from a Store. Each run gives one value
(the final or the best value of a metric); engine.runs.verdicts tests the groups' values against
each other and words the verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from engine.config import HYPERPARAMETERS, TrainConfig, arch_label, reuse_key
from engine.errors import CompareError, ConfigError, RunNotFound
from engine.runs.store import Store
from engine.runs.verdicts import THRESHOLD, Group, Pair, check_threshold, compare_groups

METRICS = ("test_acc", "test_loss", "val_acc", "val_loss")
RULES = ("final", "best")
# Config fields that can name a group, in the order a label lists them (seed never does: it is the noise).
LABEL_FIELDS = (*[f for f in HYPERPARAMETERS if f != "seed"], "pretrained", "device", "sweep")
SHORT = {"batch_size": "bs", "weight_decay": "wd", "val_split": "val", "train_limit": "limit"}


@dataclass(frozen=True)
class RunData:
    id: str  # the run id
    config: dict  # its config.json
    rows: tuple[dict, ...]  # its metrics rows, one per finished epoch


@dataclass(frozen=True)
class Comparison:
    metric: str  # one of METRICS
    rule: str  # one of RULES
    threshold: float  # the p-value below which a difference is real
    groups: tuple[Group, ...]
    pairs: tuple[Pair, ...]  # every two groups, a < b

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            "groups": [g.to_json() for g in self.groups],
            "pairs": [p.to_json() for p in self.pairs],
        }


# ---------------------------------------------------------------- groups


def _seedless(config: Mapping) -> str:
    """What makes two runs the same experiment apart from the seed (the data root counts only for
    the datasets read from it, as for reusing finished runs)."""
    try:
        values = reuse_key(TrainConfig.from_dict(dict(config)))
    except (ConfigError, TypeError):
        values = dict(config)
    values.pop("seed", None)
    return json.dumps(values, sort_keys=True, default=str)


def _collect(configs: Mapping[str, Mapping], key: Callable[[Mapping], str]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for run_id, config in configs.items():
        groups.setdefault(key(config), []).append(run_id)
    return list(groups.values())


def group_by_config(configs: Mapping[str, Mapping]) -> list[list[str]]:
    """Run ids grouped by configuration minus the seed, in the order the runs come."""
    return _collect(configs, _seedless)


def group_by_field(configs: Mapping[str, Mapping], field: str) -> list[list[str]]:
    """Run ids grouped by one config field (any hyperparameter), in the order the runs come."""
    return _collect(configs, lambda config: json.dumps(config.get(field), default=str))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def labels(groups: Sequence[Sequence[str]], configs: Mapping[str, Mapping]) -> list[str]:
    """A name per group: the fields that are the same within each group and differ between them
    ("simple_cnn", "lr 0.01 · bs 32"); "group 2 · seeds 3-5" when nothing tells them apart."""
    shown = []
    for name in LABEL_FIELDS:
        per_group = [{json.dumps(configs[r].get(name), default=str) for r in ids} for ids in groups]
        if all(len(values) == 1 for values in per_group) and len({next(iter(v)) for v in per_group}) > 1:
            shown.append(name)
    out = []
    for i, ids in enumerate(groups, start=1):
        first = configs[ids[0]]
        parts = [
            arch_label(str(first.get(n)))
            if n == "arch"
            else _fmt(first.get(n))
            if n == "dataset"
            else f"{SHORT.get(n, n)} {_fmt(first.get(n))}"
            for n in shown
        ]
        seeds = [configs[r].get("seed") for r in ids]
        out.append(" · ".join(parts) if parts else f"group {i} · {seed_text(seeds)}")
    for i, label in enumerate(out):
        if out.count(label) > 1:
            out[i] = f"{label} (group {i + 1})"
    return out


def seed_text(seeds: Sequence) -> str:
    """[0, 1, 2] -> 'seeds 0-2'; [4] -> 'seed 4'; [0, 2, 5] -> 'seeds 0, 2, 5'."""
    known = sorted(s for s in seeds if isinstance(s, int))
    if not known:
        return "seeds unknown"
    if len(known) == 1:
        return f"seed {known[0]}"
    if known == list(range(known[0], known[0] + len(known))) and len(known) > 2:
        return f"seeds {known[0]}-{known[-1]}"
    return "seeds " + ", ".join(str(s) for s in known)


def check_membership(loose: Sequence[str], explicit: Sequence[Sequence[str]]) -> None:
    """Every run at most once: not twice in the runs given, not twice in a group, not in two groups."""
    where: dict[str, int] = {}
    for number, ids in enumerate(explicit, start=1):
        for run_id in ids:
            if run_id in where:
                if where[run_id] == number:
                    raise CompareError(f"run {run_id} is given twice in group {number}; give each run once")
                raise CompareError(
                    f"run {run_id} is in two groups ({where[run_id]} and {number}); a run can be in one group only"
                )
            where[run_id] = number
    seen = set()
    for run_id in loose:
        if run_id in where:
            raise CompareError(
                f"run {run_id} is given on its own and in group {where[run_id]}; a run can be in one group only"
            )
        if run_id in seen:
            raise CompareError(f"run {run_id} is given twice; give each run once")
        seen.add(run_id)


# ---------------------------------------------------------------- values and the whole comparison


def run_value(run: RunData, metric: str, rule: str) -> float:
    """The run's final or best value of `metric` (best: highest accuracy, lowest loss)."""
    if metric not in METRICS:
        raise CompareError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    if rule not in RULES:
        raise CompareError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    if not run.rows:
        raise CompareError(
            f"run {run.id} has no finished epoch yet, so it has no {metric}; wait for its first epoch or leave it out"
        )
    rows = sorted(run.rows, key=lambda r: r.get("epoch", 0))
    values = [float(r[metric]) for r in rows if r.get(metric) is not None]
    if not values:
        if metric.startswith("val_"):
            raise CompareError(
                f"run {run.id} has no {metric}: it was trained without a validation split; "
                "compare test_acc or test_loss instead"
            )
        raise CompareError(
            f"run {run.id} has no {metric}; valid metrics it has: "
            f"{', '.join(m for m in METRICS if m in rows[-1]) or 'none'}"
        )
    if rule == "final":
        return values[-1]
    return max(values) if metric.endswith("_acc") else min(values)


def build(
    loose: Sequence[RunData],
    groups: Sequence[Sequence[RunData]] = (),
    *,
    metric: str = "test_acc",
    rule: str = "final",
    threshold: float = THRESHOLD,
) -> Comparison:
    """Compare runs: each of `groups` is one group as given; the `loose` runs are grouped by
    configuration minus the seed. Raises CompareError for anything that cannot be compared."""
    check_threshold(threshold)
    check_membership([r.id for r in loose], [[r.id for r in g] for g in groups])
    by_id = {r.id: r for r in [*loose, *(r for g in groups for r in g)]}
    configs = {run_id: r.config for run_id, r in by_id.items()}
    ids = [[r.id for r in g] for g in groups] + group_by_config({r.id: r.config for r in loose})
    if len(ids) < 2:
        raise CompareError(
            f"a comparison needs at least two groups, and these {len(by_id)} run(s) make one "
            "(they differ only in seed); add runs of another configuration, or split them "
            "into groups with --group RUN,RUN,... --group RUN,RUN,..."
        )
    names = labels(ids, configs)
    made = tuple(
        Group(
            name,
            tuple(g),
            tuple(run_value(by_id[r], metric, rule) for r in g),
            tuple(configs[r].get("seed") for r in g),
        )
        for name, g in zip(names, ids)
    )
    return Comparison(metric, rule, threshold, made, compare_groups(made, threshold))


def load_runs(store: Store, refs: Sequence[str]) -> list[RunData]:
    """The runs named by id or folder, with their configs and metrics rows; every unknown one named."""
    found, unknown = [], []
    for ref in refs:
        try:
            record = store.resolve(ref)
        except RunNotFound:
            unknown.append(ref)
            continue
        found.append(RunData(record.id, record.config, tuple(store.metrics(record.id))))
    if unknown:
        raise CompareError(
            f"unknown run(s) {', '.join(unknown)} in {store.root}; `python -m engine list` shows the runs"
        )
    return found
