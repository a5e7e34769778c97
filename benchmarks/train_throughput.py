"""Training throughput: engine.ml.train.fit against the course's reference loop, same process, same models.

On 60,000 MNIST-layout images (real MNIST when it is under --data-root, else the 4,000 training images
of mnist_sample repeated 15 times and written as IDX files in torchvision's raw layout, so both sides
read the same files), one epoch of basic_nn and of simple_cnn at batch size 64, Adam 1e-3:

- reference: torchvision.datasets.MNIST + DataLoader(shuffle=True) with per-sample ToTensor() and
  Normalize(), the course's loop (zero_grad, forward, loss, backward, step, running loss and accuracy
  with .item());
- fit: the engine's loop (whole split as one normalised tensor, batches by indexing a seeded randperm).

Samples/s counts the training pass only on both sides (fit's `samples_per_s`: its evaluation on the
test split and its checkpoint are outside that figure). Targets on a 2-core CPU: basic_nn >= 3x the
reference, simple_cnn >= 1x.

    python benchmarks/train_throughput.py [--data-root data] [--archs basic_nn,simple_cnn]
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe  # noqa: E402

import engine  # noqa: E402,F401  (first: it sets torch's thread wait policy, as in the CLI and the worker)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.config import TrainConfig  # noqa: E402
from engine.ml.data import available_datasets, load_dataset, load_mnist_sample  # noqa: E402
from engine.ml.models import build_model  # noqa: E402
from engine.ml.train import fit  # noqa: E402

TARGETS = {"basic_nn": 3.0, "simple_cnn": 1.0}  # fit / reference, at least
N_TRAIN = 60_000
BATCH = 64
LR = 1e-3


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX (ubyte): 0x0000, 0x08, ndim, big-endian int32 dims, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    path.write_bytes(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes())


def repeated_sample_root(tmp: Path) -> Path:
    """mnist_sample's training images repeated to 60,000, as <tmp>/MNIST/raw/*-ubyte."""
    train_x, train_y, test_x, test_y, _ = load_mnist_sample()
    reps = -(-N_TRAIN // len(train_y))
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", np.tile(train_x[:, 0], (reps, 1, 1))[:N_TRAIN])
    write_idx(raw / "train-labels-idx1-ubyte", np.tile(train_y, reps)[:N_TRAIN])
    write_idx(raw / "t10k-images-idx3-ubyte", test_x[:, 0])
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    return tmp


def reference_epoch(arch: str, root: Path, mean: float, std: float) -> float:
    """The course's loop; returns training samples/s."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    train_set = datasets.MNIST(str(root), train=True, download=False, transform=transform)
    loader = DataLoader(train_set, batch_size=BATCH, shuffle=True)
    torch.manual_seed(0)
    model = build_model(arch, (1, 28, 28), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    running_loss, correct, total = 0.0, 0, 0
    start = time.perf_counter()
    for images, labels in loader:
        optimizer.zero_grad()
        outputs = model(images)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * labels.size(0)
        _, predicted = torch.max(outputs, 1)
        correct += (predicted == labels).sum().item()
        total += labels.size(0)
    seconds = time.perf_counter() - start
    assert total == len(train_set)
    return total / seconds


def fit_epoch(arch: str, root: Path, out: Path) -> tuple[float, float]:
    """One epoch through fit; returns (training samples/s, whole fit call in seconds)."""
    config = TrainConfig(dataset="mnist", data_root=str(root), arch=arch, epochs=1, batch_size=BATCH,
                         lr=LR, optimizer="adam", device="cpu")
    start = time.perf_counter()
    result = fit(config, out / arch)
    total = time.perf_counter() - start
    assert result.outcome.value == "done", result.message
    return result.metrics[0]["samples_per_s"], total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="data", help="looks for real MNIST in DATA_ROOT/MNIST/raw")
    parser.add_argument("--archs", default="basic_nn,simple_cnn")
    args = parser.parse_args()
    archs = args.archs.split(",")

    with tempfile.TemporaryDirectory(prefix="lensboard-bench-") as tmp:
        tmp = Path(tmp)
        if "mnist" in available_datasets(args.data_root):
            root, source = Path(args.data_root), f"real MNIST from {args.data_root}"
        else:
            root, source = repeated_sample_root(tmp / "data"), "mnist_sample's 4,000 training images repeated to 60,000"
        ds = load_dataset("mnist", root)  # loaded and normalised once, as fit would; not timed
        n = len(ds.train)
        rows = []
        for arch in archs:
            ref = reference_epoch(arch, root, ds.mean[0], ds.std[0])
            ours, wall = fit_epoch(arch, root, tmp / "runs")
            rows.append((arch, ref, ours, wall))

    print(f"Training throughput, one epoch of {n:,} images ({source}), batch {BATCH}, Adam {LR:g}, CPU")
    print(f"machine: {describe()}")
    print()
    print("| model | reference loop (samples/s) | fit (samples/s) | ratio | target | met |")
    print("| --- | ---: | ---: | ---: | ---: | :---: |")
    ok = True
    for arch, ref, ours, wall in rows:
        ratio = ours / ref
        target = TARGETS.get(arch, 1.0)
        ok &= ratio >= target
        print(f"| {arch} | {ref:,.0f} | {ours:,.0f} | {ratio:.1f}x | >= {target:g}x | {'yes' if ratio >= target else 'NO'} |")
    print()
    print("fit's whole call per model (training + test evaluation + checkpoint, seconds): "
          + ", ".join(f"{arch} {wall:.1f}" for arch, _, _, wall in rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
