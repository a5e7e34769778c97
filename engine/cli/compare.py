"""`python -m engine compare`: is the difference between groups of runs larger than seed noise?

Without --group, the runs given are grouped by configuration minus the seed; each --group list is
one group as given (runs given on their own besides are grouped by configuration). Reads only the
registry and the metrics files: it never imports torch. Bad input is a LensboardError, which
engine.cli.main prints as one line before exiting with 2.
"""

from __future__ import annotations

import argparse
import json

from engine.cli.common import Command, add_results_flag, open_store
from engine.errors import UsageError
from engine.runs.compare import METRICS, RULES, Comparison, build, load_runs, seed_text
from engine.runs.store import Store, root_of_run_folder
from engine.runs.verdicts import TEST_NAME, THRESHOLD, check_threshold, higher_is_better, verdict


def _group_refs(raw: str) -> list[str]:
    refs = [part.strip() for part in raw.split(",")]
    if not all(refs):
        raise UsageError(
            f"--group {raw!r} has an empty run id; give run ids separated by commas, e.g. --group RUN,RUN,RUN"
        )
    return refs


def compare_from_args(args: argparse.Namespace) -> Comparison:
    check_threshold(args.threshold)
    explicit = [_group_refs(raw) for raw in args.group]
    every = list(args.runs) + [ref for refs in explicit for ref in refs]
    if not every:
        raise UsageError(
            "give the runs to compare: RUN RUN ... (grouped by configuration minus the seed) "
            "or --group RUN,RUN,... --group RUN,RUN,..."
        )
    # the results root: --results, else the root of the first run given as a folder, else the default
    root = None if args.results else root_of_run_folder(every[0])
    store = Store(root) if root else open_store(args)
    try:
        loose = load_runs(store, args.runs)
        groups = [load_runs(store, refs) for refs in explicit]
    finally:
        store.close()
    return build(loose, groups, metric=args.metric, rule=args.rule, threshold=args.threshold)


def _number(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if higher_is_better(metric) else f"{value:.4f}"


def readable(comparison: Comparison) -> list[str]:
    """The comparison as lines for a terminal: one row per group, then one verdict per pair."""
    metric = comparison.metric
    unit = " (%)" if higher_is_better(metric) else ""
    lines = [
        f"{comparison.rule} {metric}{unit}, {TEST_NAME}: a difference is real when p < {comparison.threshold:g}",
        "",
        f"{'#':>2}  {'group':<28} {'n':>3} {'mean':>9} {'std':>8}  seeds",
    ]
    for i, g in enumerate(comparison.groups, start=1):  # numbered from 1 here, as --group counts
        lines.append(
            f"{i:>2}  {g.label[:28]:<28} {g.n:>3} {_number(g.mean, metric):>9} "
            f"{_number(g.std, metric):>8}  {seed_text(g.seeds)}"
        )
        lines.append(f"{'':>4}runs: {', '.join(g.runs)}")
    lines.append("")
    for pair in comparison.pairs:
        a, b = comparison.groups[pair.a], comparison.groups[pair.b]
        lines.append(f"{pair.a + 1} vs {pair.b + 1}: " + verdict(a, b, metric, comparison.threshold, pair.p).text + ".")
    return lines


def cmd_compare(args: argparse.Namespace) -> int:
    comparison = compare_from_args(args)
    if args.json:
        print(json.dumps(comparison.to_json(), indent=2))
    else:
        print("\n".join(readable(comparison)))
    return 0


def _setup_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs", nargs="*", metavar="RUN", help="run ids or folders; runs that differ only in seed form one group"
    )
    p.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="RUN,RUN,...",
        help="one group as given (repeat the flag for each group)",
    )
    p.add_argument("--metric", default="test_acc", choices=METRICS, help="the value compared (default test_acc)")
    p.add_argument(
        "--rule",
        default="final",
        choices=RULES,
        help="final: after the last epoch; best: the best epoch (default final)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        metavar="P",
        help=f"a difference is real when {TEST_NAME}'s p-value is below this (default {THRESHOLD:g})",
    )
    add_results_flag(p, json=True)


COMMANDS: dict[str, Command] = {"compare": (cmd_compare, _setup_compare)}
