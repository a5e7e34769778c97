"""A 24-trial TPE search with ASHA early stopping against a 24-point grid of the same space.

    python benchmarks/search.py [--epochs 4] [--train-limit 2000] [--trials 24] [--results DIR]

On mnist_sample: architecture {basic_nn, simple_cnn} x batch size {32, 64, 128} x learning rate
(the grid: 1e-4, 1e-3, 1e-2, 1e-1; the search: anywhere in 1e-4..1e-1 on a log scale), Adam, each
run up to --epochs epochs with a 10% validation split. Both go through the real queue and worker
(in this process, one trial at a time), so pruning is decided exactly as in the dashboard. Read:
the best validation accuracy each reached (the search chooses on it; the test accuracy of that run
is shown too, never used to choose) and the epochs each trained, as search / grid ratios; plus what
an ASHA replay on the finished grid says. Wall time is printed but the CPU is shared with other
work while this runs, so the epochs are the fair measure of cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.ml.threads import configure_threads  # noqa: E402

configure_threads()  # the entry point's thread policy (passive OpenMP waiting), before torch loads

import torch  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from engine.config import TrainConfig  # noqa: E402
from engine.runs import sweeps  # noqa: E402
from engine.runs.search_space import build_spec, parse_field  # noqa: E402
from engine.runs.store import Store  # noqa: E402
from engine.runs.sweep_report import SweepReport, replay_report, sweep_report  # noqa: E402
from engine.runs.worker import Worker  # noqa: E402

ARCHS = ["basic_nn", "simple_cnn"]
BATCH_SIZES = [32, 64, 128]
GRID_LRS = [1e-4, 1e-3, 1e-2, 1e-1]


def drain(store: Store) -> float:
    """Run every queued job (and the trials they queue) in this process; returns the seconds it took."""
    worker = Worker(store, log=lambda message: None)
    t0 = time.perf_counter()
    while worker.step() is not None:
        pass
    return time.perf_counter() - t0


def test_acc_of(store: Store, run_id: str) -> float:
    return store.metrics(run_id)[-1]["test_acc"]


def row(name: str, report: SweepReport, seconds: float, store: Store) -> tuple:
    best = report.best
    return (
        name,
        len(report.trials),
        report.epochs_run,
        seconds,
        best.value,
        test_acc_of(store, best.run),
        ", ".join(f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-limit", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument(
        "--results",
        default=None,
        help="keep the runs in this results root (to look at on the Sweeps page); default: a temp dir",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models on a shared CPU: one thread is fastest and steadiest
    print(f"machine: {describe('optuna')}")
    print("note: the CPU is shared with other work while this runs; wall times are noisy, epochs are the cost\n")

    base = TrainConfig(
        dataset="mnist_sample",
        epochs=args.epochs,
        train_limit=args.train_limit,
        val_split=0.1,
        optimizer="adam",
        seed=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.results or Path(tmp) / "results")
        points = sweeps.sweep_grid(base, arch=ARCHS, batch_size=BATCH_SIZES, lr=GRID_LRS)
        grid_id, _ = sweeps.submit_sweep(store, points)
        grid_s = drain(store)
        grid = sweep_report(store, grid_id)

        spec = build_spec(
            base,
            {"arch": ARCHS, "batch_size": BATCH_SIZES, "lr": parse_field("lr", "1e-4:1e-1:log")},
            sampler="tpe",
            trials=args.trials,
            prune="asha",
            seed=args.search_seed,
            parallel=1,
        )
        search_id, _ = sweeps.start_search(store, spec)
        search_s = drain(store)
        found = sweep_report(store, search_id)
        replayed = replay_report(grid, "asha")

        rows = [
            row(f"grid ({len(grid.trials)} points)", grid, grid_s, store),
            row(f"TPE + ASHA ({args.trials} trials)", found, search_s, store),
        ]
        print(
            f"mnist_sample, train limit {args.train_limit}, 10% validation, up to {args.epochs} epochs per run, "
            f"Adam; space: arch {ARCHS} x batch size {BATCH_SIZES} x lr 1e-4..1e-1\n"
        )
        print("| method | runs | epochs trained | wall s | best val acc | its test acc | best run |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for name, n, epochs, seconds, val, test, params in rows:
            print(f"| {name} | {n} | {epochs} | {seconds:.0f} | {100 * val:.2f}% | {100 * test:.2f}% | {params} |")
        (_, _, g_epochs, g_s, g_val, _, _), (_, _, s_epochs, s_s, s_val, _, _) = rows
        pruned = sum(t.state == "pruned" for t in found.trials)
        print(
            f"\nsearch / grid: best val acc {s_val / g_val:.3f}x, epochs {s_epochs / g_epochs:.2f}x, "
            f"wall time {s_s / g_s:.2f}x; ASHA stopped {pruned} of {len(found.trials)} trials"
        )
        by_arch = {
            name: {a: sum(t.epochs for t in r.trials if t.params["arch"] == a) for a in ARCHS}
            for name, r in (("grid", grid), ("search", found))
        }
        print(
            "epochs by architecture (simple_cnn epochs cost several basic_nn ones): "
            + "; ".join(
                f"{name} " + ", ".join(f"{a} {n}" for a, n in counts.items()) for name, counts in by_arch.items()
            )
        )
        fate = "the winner survives" if replayed.winner_survives else "it would have stopped the winner"
        print(
            f"ASHA replayed on the finished grid: would stop {len(replayed.stopped)} of {len(grid.trials)} runs, "
            f"saving {100 * replayed.epochs_saved_fraction:.0f}% of its epochs; {fate}"
        )
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
