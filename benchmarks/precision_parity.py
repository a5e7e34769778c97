"""Accuracy parity of bf16 autocast: simple_cnn on mnist_sample, 3 epochs, 3 seeds, fp32 against bf16.

The same configs through fit() with precision fp32 and bf16, in one process. Target: the mean test
accuracy of bf16 within 0.5 points of fp32's. The time per epoch is printed too (bf16 is faster only
where the CPU computes it natively: AVX512-BF16 or AMX; `auto` uses it only there).

    python benchmarks/precision_parity.py [--seeds 0,1,2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.ml.threads import configure_threads  # noqa: E402

THREADS = configure_threads()  # the entry point's policy, before torch loads

from benchmarks.machine import describe  # noqa: E402
from engine.config import TrainConfig  # noqa: E402
from engine.ml.precision import why_auto  # noqa: E402
from engine.ml.train import fit  # noqa: E402

MAX_GAP = 0.5  # points of test accuracy


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[tuple[float, float]]] = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory(prefix="lensboard-parity-") as tmp:
        for seed in seeds:
            for precision in results:
                config = TrainConfig(
                    arch="simple_cnn",
                    dataset="mnist_sample",
                    epochs=args.epochs,
                    seed=seed,
                    precision=precision,
                    device="cpu",
                )
                result = fit(config, Path(tmp) / f"{precision}-{seed}")
                assert result.outcome.value == "done", result.message
                seconds = statistics.mean(r["seconds"] for r in result.metrics)
                results[precision].append((result.metrics[-1]["test_acc"], seconds))

    print(
        f"bf16 accuracy parity: simple_cnn, mnist_sample (4,000 train / 1,000 test), {args.epochs} epochs, "
        f"batch 64, Adam 1e-3, seeds {args.seeds}"
    )
    print(f"machine: {describe()}")
    print(f"auto on this CPU: {why_auto(torch.device('cpu'))}")
    print()
    print("| precision | " + " | ".join(f"seed {s} test acc" for s in seeds) + " | mean | s / epoch |")
    print("| --- |" + " ---: |" * (len(seeds) + 2))
    for precision, rows in results.items():
        print(
            f"| {precision} | "
            + " | ".join(f"{100 * acc:.2f}%" for acc, _ in rows)
            + f" | {100 * statistics.mean(a for a, _ in rows):.2f}% | {statistics.mean(s for _, s in rows):.2f} |"
        )
    gap = 100 * (statistics.mean(a for a, _ in results["bf16"]) - statistics.mean(a for a, _ in results["fp32"]))
    ok = abs(gap) <= MAX_GAP
    print()
    print(
        f"bf16 - fp32 mean test accuracy: {gap:+.2f} points (target: within {MAX_GAP} points): "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
