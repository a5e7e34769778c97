"""GPU training speed: samples per second of each model and precision through fit() on CUDA.

One epoch per (model, precision) on synthetic data in the torchvision layouts (mnist_sample repeated to
60,000 MNIST-layout images; random CIFAR-10-layout images for the 3-channel models), batch 256, data
on the device, autocast following --precision. Prints one table; finishes in under 3 minutes on a
recent GPU. Without a CUDA GPU it says so and exits 0.

    bash benchmarks/gpu.sh
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.ml.threads import configure_threads  # noqa: E402

configure_threads()

import torch  # noqa: E402

MODELS = [
    ("basic_nn", "mnist", 60_000),
    ("simple_cnn", "mnist", 60_000),
    ("simple_cnn_bn", "mnist", 60_000),
    ("neural_net", "mnist", 60_000),
    ("cifar10_cnn", "cifar10", 50_000),
    ("resnet18", "cifar10", 10_000),
]
BATCH = 256


def main() -> int:
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to measure")
        return 0
    from benchmarks.common import cifar10_layout, mnist_layout
    from benchmarks.machine import describe
    from engine.config import TrainConfig
    from engine.ml.precision import native_bf16
    from engine.ml.train import fit

    device = torch.device("cuda")
    precisions = ["fp32", "bf16"] if native_bf16(device) else ["fp32"]
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lensboard-gpu-") as tmp:
        tmp = Path(tmp)
        roots = {"mnist": mnist_layout(tmp / "mnist"), "cifar10": cifar10_layout(tmp / "cifar", 50_000, 10_000)}
        for arch, dataset, n in MODELS:
            for precision in precisions:
                config = TrainConfig(
                    dataset=dataset,
                    data_root=str(roots[dataset]),
                    arch=arch,
                    epochs=1,
                    batch_size=BATCH,
                    device="cuda",
                    precision=precision,
                    train_limit=n if n < 50_000 else None,
                )
                result = fit(config, tmp / "runs" / f"{arch}-{precision}")
                assert result.outcome.value == "done", result.message
                row = result.metrics[0]
                rows.append((arch, dataset, n, precision, row["samples_per_s"], row["seconds"]))
    print(f"GPU training speed, one epoch each, batch {BATCH}, data on the device")
    print(f"machine: {describe()} | {torch.cuda.get_device_name(device)}")
    print()
    print("| model | data | images | precision | samples / s (training pass) | whole epoch (s) |")
    print("| --- | --- | ---: | --- | ---: | ---: |")
    for arch, dataset, n, precision, sps, seconds in rows:
        print(f"| {arch} | {dataset} | {n:,} | {precision} | {sps:,.0f} | {seconds:.1f} |")
    print()
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
