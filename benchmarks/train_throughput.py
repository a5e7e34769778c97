"""Training speed: a whole epoch through fit, against the course's reference loop, quiet and under load.

On 60,000 MNIST-layout images (real MNIST when it is under --data-root, else mnist_sample's 4,000
training images repeated 15 times, written as IDX files in torchvision's raw layout, so both sides
read the same files), one epoch at batch size 64, Adam 1e-3, with default settings on both sides:

- reference: the course's loop as a student writes it: torchvision.datasets.MNIST + DataLoader
  (shuffle=True, batch 64) with per-sample ToTensor() and Normalize(), zero_grad/forward/loss/
  backward/step, running loss and accuracy with .item(); then the test set the same way under
  no_grad. It runs with torch's defaults (all cores, GNU OpenMP's spin-then-sleep waiting).
- fit: `python -m engine train`'s path: configure_threads() at the entry point, then fit() with
  precision auto (bf16 autocast where the CPU does bf16 natively), channels_last convolutions,
  uint8 data normalised per batch, fused Adam, evaluation under inference_mode in large batches.

Time = the whole epoch, training pass plus test evaluation (fit's `seconds`, what a user waits for).
Each side runs in its own fresh process (the OpenMP wait policy is read when torch loads), one after
the other, first on a quiet machine, then with one competing CPU-bound process.
Targets: basic_nn >= 4x both ways; simple_cnn >= 1.8x quiet, >= 1.3x with the competing process.

    python benchmarks/train_throughput.py [--data-root data] [--archs basic_nn,simple_cnn] [--conditions quiet,busy]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import competing_process, load_average, mnist_layout, run_child  # noqa: E402

TARGETS = {
    ("basic_nn", "quiet"): 4.0,
    ("basic_nn", "busy"): 4.0,
    ("simple_cnn", "quiet"): 1.8,
    ("simple_cnn", "busy"): 1.3,
}
BATCH = 64
LR = 1e-3


def reference_epoch(arch: str, root: Path) -> dict:
    """The course's loop, in this (fresh) process; returns seconds for the epoch with its test pass."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from engine.ml.data import load_dataset
    from engine.ml.models import build_model

    ds = load_dataset("mnist", root)  # only for the mean and std the course hard-codes (0.1307, 0.3081)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((ds.mean[0],), (ds.std[0],))])
    train_set = datasets.MNIST(str(root), train=True, download=False, transform=transform)
    test_set = datasets.MNIST(str(root), train=False, download=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=BATCH, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=BATCH, shuffle=False)
    torch.manual_seed(0)
    model = build_model(arch, (1, 28, 28), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    model.train()
    running_loss, correct, total = 0.0, 0, 0
    for images, labels in train_loader:
        optimizer.zero_grad()
        outputs = model(images)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * labels.size(0)
        _, predicted = torch.max(outputs, 1)
        correct += (predicted == labels).sum().item()
        total += labels.size(0)
    train_seconds = time.perf_counter() - start
    model.eval()
    test_correct, test_total = 0, 0
    with torch.no_grad():
        for images, labels in test_loader:
            outputs = model(images)
            test_correct += (outputs.argmax(1) == labels).sum().item()
            test_total += labels.size(0)
    return {
        "seconds": time.perf_counter() - start,
        "train_seconds": train_seconds,
        "n": total,
        "test_acc": test_correct / test_total,
        "threads": torch.get_num_threads(),
    }


def fit_epoch(arch: str, root: Path, out: Path) -> dict:
    """fit, entered the way the CLI enters it; returns its metrics row's seconds."""
    from engine.ml.threads import configure_threads

    threads = configure_threads()  # before torch loads, as `python -m engine train` does
    from engine.config import TrainConfig
    from engine.ml.data import load_dataset
    from engine.ml.models import build_model
    from engine.ml.threads import macs_per_sample, threads_for_work
    from engine.ml.train import fit

    load_dataset("mnist", root)  # read from disk once, as the worker's cache does (the reference's read is not timed)
    config = TrainConfig(
        dataset="mnist", data_root=str(root), arch=arch, epochs=1, batch_size=BATCH, lr=LR, device="cpu"
    )
    result = fit(config, out / arch)
    assert result.outcome.value == "done", result.message
    row = result.metrics[0]
    return {
        "seconds": row["seconds"],
        "train_seconds": row["samples_per_s"] and 60_000 / row["samples_per_s"],
        "test_acc": row["test_acc"],
        "precision": row["precision"],
        "threads": threads_for_work(
            macs_per_sample(build_model(arch, (1, 28, 28), 10), (1, 28, 28)) * BATCH, threads.threads
        ),
        "wait_policy": threads.wait_policy,
    }


def child(args: argparse.Namespace) -> int:
    if args.child == "reference":
        result = reference_epoch(args.arch, Path(args.root))
    else:
        result = fit_epoch(args.arch, Path(args.root), Path(args.out))
    print(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="data", help="looks for real MNIST in DATA_ROOT/MNIST/raw")
    parser.add_argument("--archs", default="basic_nn,simple_cnn")
    parser.add_argument("--conditions", default="quiet,busy", help="quiet and/or busy (one competing process)")
    parser.add_argument("--child", choices=["reference", "fit"], help=argparse.SUPPRESS)
    parser.add_argument("--arch", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from benchmarks.machine import describe

    script = Path(__file__).resolve()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lensboard-bench-") as tmp:
        tmp = Path(tmp)
        mnist = Path(args.data_root) / "MNIST" / "raw"
        if any(mnist.glob("train-images-idx3-ubyte*")):
            root, source = Path(args.data_root), f"real MNIST from {args.data_root}"
        else:
            root, source = mnist_layout(tmp / "data"), "mnist_sample's 4,000 training images repeated to 60,000"
        loads = []
        for condition in args.conditions.split(","):
            with competing_process(condition == "busy"):
                loads.append(f"{condition}: {load_average()} before")
                for arch in args.archs.split(","):
                    ref = run_child(script, "--child", "reference", "--arch", arch, "--root", str(root))
                    ours = run_child(
                        script,
                        "--child",
                        "fit",
                        "--arch",
                        arch,
                        "--root",
                        str(root),
                        "--out",
                        str(tmp / f"runs-{condition}"),
                    )
                    rows.append((arch, condition, ref, ours))

    print(f"Whole-epoch time: 60,000 training images ({source}) + the test set, batch {BATCH}, Adam {LR:g}, CPU")
    print(f"machine: {describe()}")
    print(f"conditions: {'; '.join(loads)}")
    print()
    print(
        "| model | condition | reference loop (s) | fit (s) | speed-up | target | met "
        "| fit's precision, threads used, wait |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | :---: | --- |")
    ok = True
    for arch, condition, ref, ours in rows:
        ratio = ref["seconds"] / ours["seconds"]
        target = TARGETS.get((arch, condition), 1.0)
        ok &= ratio >= target
        print(
            f"| {arch} | {'quiet' if condition == 'quiet' else 'one competing process'} | {ref['seconds']:.1f} | "
            f"{ours['seconds']:.1f} | {ratio:.1f}x | >= {target:g}x | {'yes' if ratio >= target else 'NO'} | "
            f"{ours['precision']}, {ours['threads']}, {ours['wait_policy']} |"
        )
    print()
    print(
        "test accuracy after the epoch (reference / fit): "
        + ", ".join(f"{a} {c} {r['test_acc']:.3f} / {o['test_acc']:.3f}" for a, c, r, o in rows)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
