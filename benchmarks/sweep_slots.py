"""Parallel trials: an 8-run basic_nn sweep on mnist_sample, one trial at a time against `--slots`.

The sweep (8 seeds of basic_nn, mnist_sample, the default 5 epochs, batch 64) is queued into a fresh
results root, then `python -m engine worker --idle-exit 1` drains it, timed from the worker's start
until it exits (every run done), with --slots 1 (one trial at a time, all the CPUs) and with
--slots N (N trials at once, the CPUs split between them; N = the larger of 2 and auto unless
--slots is given). Each side runs --repeats times, alternating (1, N, N, 1, ...); the best time of
each is reported (the least disturbed by other work on the machine).

    python benchmarks/sweep_slots.py [--slots N] [--runs 8] [--repeats 2] [--busy]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PROJECT, child_env, competing_process, load_average  # noqa: E402


def drain(root: Path, slots: str) -> float:
    """Seconds for `worker --slots SLOTS` to train every queued run and exit."""
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "worker",
            "--results",
            str(root),
            "--slots",
            slots,
            "--idle-exit",
            "1",
            "--poll",
            "0.2",
        ],
        cwd=PROJECT,
        env=child_env(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=3600,
    )
    return time.perf_counter() - start


def queue_sweep(root: Path, runs: int) -> list[str]:
    from engine.config import TrainConfig
    from engine.runs import sweeps
    from engine.runs.store import Store

    store = Store(root)
    try:
        _, run_ids = sweeps.submit_sweep(store, sweeps.sweep_grid(TrainConfig(arch="basic_nn"), seed=list(range(runs))))
        return run_ids
    finally:
        store.close()


def all_done(root: Path, run_ids: list[str]) -> bool:
    from engine.runs.records import RunState
    from engine.runs.store import Store

    store = Store(root)
    try:
        return all(store.get_run(r).state == RunState.DONE for r in run_ids)
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", default=None, help="the parallel side's --slots (default: max(2, auto))")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--busy", action="store_true", help="with one competing CPU-bound process")
    args = parser.parse_args()

    from benchmarks.machine import describe
    from engine.runs.slots import plan_slots

    args.slots = args.slots or str(max(2, plan_slots("auto").slots))
    plan = plan_slots(args.slots)
    times: dict[str, list[float]] = {"1": [], str(plan.slots): []}
    order = [s for i in range(args.repeats) for s in (("1", str(plan.slots)) if i % 2 == 0 else (str(plan.slots), "1"))]
    with tempfile.TemporaryDirectory(prefix="lensboard-slots-") as tmp, competing_process(args.busy):
        before = load_average()
        for i, slots in enumerate(order):
            root = Path(tmp) / f"{i}-slots-{slots}"
            run_ids = queue_sweep(root, args.runs)
            times[slots].append(drain(root, slots))
            assert all_done(root, run_ids), f"--slots {slots} left runs unfinished"
        after = load_average()

    one, many = min(times["1"]), min(times[str(plan.slots)])
    print(
        f"Sweep wall time: {args.runs} basic_nn runs (seeds), mnist_sample, 5 epochs each, "
        f"worker started until every run is done"
    )
    print(f"machine: {describe()}")
    print(
        f"conditions: {'one competing CPU-bound process, ' if args.busy else ''}{before} before, {after} after; "
        f"every time (s): " + "; ".join(f"--slots {k}: {', '.join(f'{t:.1f}' for t in v)}" for k, v in times.items())
    )
    print()
    print("| worker | trials at once | threads each | wall time (s) | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| `--slots 1` (one trial at a time) | 1 | {plan_slots('1').threads} | {one:.1f} | 1.0x |")
    print(f"| `--slots {args.slots}` | {plan.slots} | {plan.threads} | {many:.1f} | {one / many:.2f}x |")
    print()
    print(
        f"`--slots auto` on this machine: {plan_slots('auto').slots} slot(s) of {plan_slots('auto').threads} thread(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
