"""`python -m engine sweep-report [SWEEP] [--replay median|asha|hyperband] [--json]`.

What a sweep (grid or search) learned: every trial's state, params, objective value and epochs,
the best trial, which hyperparameters mattered, the epochs spent against the budget; with
--replay, what that early-stopping rule would have stopped. Without SWEEP, the sweeps there are.
Reads the registry only (never imports torch).
"""

from __future__ import annotations

import argparse
import json

from engine.cli.common import Command, add_results_flag, open_store
from engine.runs.sweep_report import SweepReport, list_sweeps, sweep_report


def _value(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _param(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def report_lines(report: SweepReport) -> list[str]:
    """The human-readable report (the JSON has the same facts)."""
    where = "validation split" if report.on_validation else "TEST set: these runs held out no validation split"
    head = "grid" if report.search == "grid" else f"{report.search} search"
    lines = [
        f"sweep {report.sweep} · {head} · {len(report.trials)} of {report.planned} trial(s) made · "
        f"objective {report.objective} ({where})"
    ]
    if report.spec is not None:
        lines.append(f"early stopping: {report.prune}; each trial up to {report.spec.base.epochs} epoch(s)")
    cols = "".join(f" {n:>12}" for n in report.names)
    lines.append(f"{'#':>3} {'run':<28} {'state':<10} {'value':>8} {'epochs':>7}{cols}")
    for t in report.trials:
        params = "".join(f" {_param(t.params.get(n)):>12}" for n in report.names)
        epochs = f"{t.epochs}/{t.budget}"
        lines.append(f"{t.number:>3} {t.run:<28} {t.state:<10} {_value(t.value):>8} {epochs:>7}{params}")
    best = report.best
    if best is None:
        lines.append("best: none yet (no trial has run to the end)")
    else:
        lines.append(
            f"best: trial {best.number} (run {best.run}) {report.objective} {best.value:.4f} with "
            + ", ".join(f"{k}={_param(v)}" for k, v in best.params.items())
        )
    if report.importance:
        lines.append(
            "importance: "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(report.importance.items(), key=lambda kv: -kv[1]))
        )
    else:
        lines.append("importance: not yet (it needs two trials that ran to the end with different values)")
    if report.epochs_budget:
        lines.append(
            f"epochs: {report.epochs_run} of a budget of {report.epochs_budget} "
            f"({100 * report.epochs_run / report.epochs_budget:.0f}%)"
        )
    if report.replay is not None:
        r = report.replay
        fate = (
            "no run finished, so there is no winner"
            if r.winner_survives is None
            else "the winner would have survived"
            if r.winner_survives
            else f"the winner ({r.winner}) would have been stopped at epoch {r.stopped_at[r.winner]}"
        )
        lines.append(
            f"replay ({r.rule}): would have stopped {len(r.stopped)} of {len(report.trials)} run(s) and "
            f"saved {100 * r.epochs_saved_fraction:.0f}% of the epochs; {fate}"
        )
    return lines


def cmd_sweep_report(args: argparse.Namespace) -> int:
    store = open_store(args)
    if args.sweep is None:
        sweeps = list_sweeps(store)
        if args.json:
            print(
                json.dumps(
                    [
                        {"sweep": s.sweep, "search": s.search, "runs": s.runs, "planned": s.planned, "states": s.states}
                        for s in sweeps
                    ],
                    indent=2,
                )
            )
        elif not sweeps:
            print("no sweeps yet: `python -m engine sweep --help` makes one")
        for s in [] if args.json else sweeps:
            states = ", ".join(f"{k} {v}" for k, v in sorted(s.states.items()))
            print(f"{s.sweep}  {s.search:<6} {s.runs}/{s.planned} run(s): {states}")
        return 0
    report = sweep_report(store, args.sweep, args.replay)
    print(json.dumps(report.to_json(), indent=2) if args.json else "\n".join(report_lines(report)))
    return 0


def _setup(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", nargs="?", default=None, help="a sweep id (without it: list the sweeps)")
    p.add_argument(
        "--replay",
        choices=("median", "asha", "hyperband"),
        default=None,
        help="also say what this early-stopping rule would have stopped, had it been on",
    )
    add_results_flag(p, json=True)


COMMANDS: dict[str, Command] = {
    "sweep-report": (cmd_sweep_report, _setup),
}
