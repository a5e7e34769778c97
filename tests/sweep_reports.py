"""Sweep reports made by hand (trials, their curves, a search spec) for the tests of the Sweeps page's
pure builders (dashboard/sweeps.py, sweep_figures.py)."""

from __future__ import annotations

from engine.config import TrainConfig
from engine.runs.search_space import build_spec, parse_field
from engine.runs.sweep_report import SweepReport, TrialReport

SPEC = build_spec(
    TrainConfig(val_split=0.1, epochs=3),
    {"lr": parse_field("lr", "1e-4:1e-1:log"), "batch_size": [32, 128]},
    prune="asha",
    trials=8,
)


def trial(n: int, lr: float, bs: int, values: list[float], state: str = "done", budget: int = 3) -> TrialReport:
    curve = {e: v for e, v in enumerate(values, start=1)}
    return TrialReport(
        f"run-{n}",
        n,
        state,
        {"lr": lr, "batch_size": bs},
        values[-1] if values else None,
        len(values),
        budget,
        curve,
        len(values) if state == "pruned" else None,
    )


def report(trials, importance=None, spec=SPEC, objective="val_acc") -> SweepReport:
    return SweepReport(
        "sweep-x",
        "tpe" if spec else "grid",
        objective,
        "maximize" if objective.endswith("acc") else "minimize",
        ["lr", "batch_size"],
        trials,
        importance or {},
        spec,
    )


TRIALS = [
    trial(0, 0.05, 32, [0.60, 0.70, 0.72]),
    trial(1, 0.002, 128, [0.85, 0.90, 0.93]),
    trial(2, 1e-4, 32, [0.30], "pruned"),
    trial(3, 0.001, 32, [0.88, 0.92, 0.95]),
    trial(4, 0.003, 128, [0.86, 0.91, 0.94]),
    trial(5, 0.08, 128, [0.40], "pruned"),
    trial(6, 0.02, 32, [], "running"),
]
