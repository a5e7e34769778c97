"""How torch's idle OpenMP threads should wait: simple_cnn's whole epoch through fit, for several spin
counts, on a quiet machine and with one and three competing CPU-bound processes.

GNU OpenMP (the runtime of torch's Linux wheels) lets an idle thread spin GOMP_SPINCOUNT rounds before it
sleeps: about 300,000 by default (a few ms), 0 with OMP_WAIT_POLICY=PASSIVE. Lensboard's default is 1000
(engine.settings.SHORT_SPIN); this table is why. Each cell is one fresh `fit` process, entered as the CLI
enters it, on the same 60,000 MNIST-layout images as benchmarks/train_throughput.py (batch 64, Adam,
precision auto, 2 threads).

    python benchmarks/wait_policy.py [--spins 0,1000,10000,300000] [--competing 0,1,3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import child_env, competing_process, load_average, mnist_layout, run_child  # noqa: E402
from engine.settings import SHORT_SPIN  # noqa: E402

NAMES = {"0": "0 (OMP_WAIT_POLICY=PASSIVE)", SHORT_SPIN: f"{SHORT_SPIN} (Lensboard's default)",
         "300000": "300000 (GNU OpenMP's default)"}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spins", default=f"0,{SHORT_SPIN},10000,300000", help="GOMP_SPINCOUNT values")
    parser.add_argument("--competing", default="0,1,3", help="how many competing CPU-bound processes")
    parser.add_argument("--arch", default="simple_cnn")
    args = parser.parse_args()

    from benchmarks.machine import describe

    spins, competing = args.spins.split(","), [int(c) for c in args.competing.split(",")]
    script = Path(__file__).resolve().parent / "train_throughput.py"
    seconds: dict[tuple[str, int], float] = {}
    loads = []
    with tempfile.TemporaryDirectory(prefix="lensboard-bench-") as tmp:
        root = mnist_layout(Path(tmp) / "data")
        for n in competing:
            with competing_process(n):
                loads.append(f"{n} competing: {load_average()} before")
                for spin in spins:
                    env = child_env(GOMP_SPINCOUNT=spin)
                    out = str(Path(tmp) / f"runs-{n}-{spin}")
                    row = run_child(script, "--child", "fit", "--arch", args.arch, "--root", str(root), "--out", out,
                                    env=env)  # fmt: skip
                    seconds[(spin, n)] = row["seconds"]

    print(f"{args.arch}: whole-epoch seconds through fit (60,000 images, batch 64, 2 threads), by spin count")
    print(f"machine: {describe()}")
    print(f"conditions: {'; '.join(loads)}")
    print()
    print("| spin before sleeping (GOMP_SPINCOUNT) | " + " | ".join(f"{n} competing" for n in competing) + " |")
    print("| --- |" + " ---: |" * len(competing))
    for spin in spins:
        cells = " | ".join(f"{seconds[(spin, n)]:.1f}" for n in competing)
        print(f"| {NAMES.get(spin, spin)} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
