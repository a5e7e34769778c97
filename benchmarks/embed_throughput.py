"""Embedding speed: the pretrained ResNet-18 extractor against the straightforward torchvision loop.

Both sides embed the same images (the first --images of mnist_sample's training digits, default 512)
at the extractor's default 112 px with the same ResNet-18 weights (random weights written into a
temporary torch hub cache: nothing is downloaded; speed does not depend on the values):

- reference: per-image torchvision transforms (Grayscale to 3 channels, Resize, ToTensor, Normalize
  with ImageNet statistics) in a Dataset, DataLoader(batch_size=64), the model in fp32, no_grad;
- the engine: engine.embed's Embedder as a pretrained-extractor run uses it: the stored uint8 images
  resized on the tensor in batches, under inference_mode, BatchNorm folded into the convolutions,
  channels_last, bf16 weights and inputs where the CPU computes bf16 natively.

Target: images per second >= 3x the reference.

    python benchmarks/embed_throughput.py [--images 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.ml.threads import configure_threads  # noqa: E402

THREADS = configure_threads()  # the entry point's policy, before torch loads

import torch  # noqa: E402

from benchmarks.machine import describe  # noqa: E402

TARGET = 3.0
SIZE = 112


def reference(images: torch.Tensor, net: torch.nn.Module, repeats: int) -> float:
    """Images per second of the plain loop (its best pass of `repeats`)."""
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Grayscale(num_output_channels=3),
            transforms.Resize((SIZE, SIZE)),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )

    class Digits(Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return transform(Image.fromarray(images[i, 0].numpy(), mode="L"))

    net.eval()
    with torch.no_grad():
        net(torch.stack([Digits()[i] for i in range(64)]))  # warm-up, not timed
    best = 0.0
    for _ in range(repeats):
        out = []
        start = time.perf_counter()
        with torch.no_grad():
            for batch in DataLoader(Digits(), batch_size=64):
                out.append(net(batch))
        best = max(best, len(images) / (time.perf_counter() - start))
        assert torch.cat(out).shape == (len(images), 512)
    return best


def engine_side(ds, count: int, repeats: int) -> tuple[float, str]:
    """Images per second (best pass of `repeats`) of the extractor as a pretrained-extractor run builds it."""
    from engine.ml.embed import BATCH, Embedder, pretrained_extractor

    device = torch.device("cpu")
    model, precision = pretrained_extractor(ds, SIZE, device)
    embedder = Embedder(model, ds, device, BATCH["pretrained"], "benchmark", precision)
    embedder.embed(ds.train.x[-BATCH["pretrained"] :])  # warm-up (kernel choice), not timed
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        vectors = embedder.embed(ds.train.x[:count])
        best = max(best, count / (time.perf_counter() - start))
        assert vectors.shape == (count, 512)
    return best, precision


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per side; the best counts")
    args = parser.parse_args()
    from torchvision.models import resnet18

    from engine.ml.data import load_dataset
    from engine.ml.models import RESNET18_WEIGHTS_FILE

    with tempfile.TemporaryDirectory(prefix="lensboard-embed-") as home:
        (Path(home) / "hub" / "checkpoints").mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(resnet18().state_dict(), Path(home) / "hub" / "checkpoints" / RESNET18_WEIGHTS_FILE)
        os.environ["TORCH_HOME"] = home
        os.environ["LENSBOARD_OFFLINE"] = "1"
        ds = load_dataset("mnist_sample")
        images = ds.train.x[: args.images]
        ours, precision = engine_side(ds, args.images, args.repeats)
        net = resnet18()
        net.load_state_dict(torch.load(Path(home) / "hub" / "checkpoints" / RESNET18_WEIGHTS_FILE, weights_only=True))
        net.fc = torch.nn.Identity()
        ref = reference(images, net, args.repeats)

    ratio = ours / ref
    print(
        f"Embedding speed: {args.images:,} mnist_sample digits through ResNet-18 at {SIZE} px (512-d vectors), "
        f"best of {args.repeats} passes per side"
    )
    print(f"machine: {describe()} | {os.getloadavg()[0]:.1f} load average")
    print()
    print("| side | images / s | speed-up | target | met |")
    print("| --- | ---: | ---: | ---: | :---: |")
    print(f"| torchvision loop: per-image transforms, DataLoader(64), fp32, no_grad | {ref:,.1f} | 1.0x | | |")
    print(
        f"| engine extractor: batched tensors, inference_mode, BatchNorm folded, channels_last, {precision} "
        f"| {ours:,.1f} | "
        f"{ratio:.1f}x | >= {TARGET:g}x | {'yes' if ratio >= TARGET else 'NO'} |"
    )
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
