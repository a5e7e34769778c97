"""Embeddings: the vector a model gives each image, for the train split (the database) and the
test split (the queries).

Two sources of embeddings:
- a trained run: `features(x)` of its model, the input of the last linear layer;
- a pretrained ResNet-18 used as a feature extractor, as a run of its own (kind 'embed'): the
  images go to 3 channels, are resized to `image_size` and normalised with ImageNet statistics,
  and the 512-d output of global average pooling is the embedding.

Files in the run folder, each written atomically; `meta.json` is written last and marks them
complete:
    embeddings/train.npy  train_labels.npy  test.npy  test_labels.npy  meta.json
Recomputing embeddings removes the caches built on the old ones (index/, projections/).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.config import TrainConfig, arch_label, is_user_arch
from engine.errors import Cancelled, EmbeddingError
from engine.files import RunPaths, atomic_numpy_save, atomic_write_json
from engine.ml.analysis import PreparedImage, prepare_image
from engine.ml.data import Dataset, load_dataset
from engine.ml.images import open_upload
from engine.ml.models import load_resnet18_imagenet
from engine.ml.precision import autocast, resolve_precision
from engine.ml.splits import channel_tensors, normalise
from engine.ml.train import load_trained, pick_device
from engine.ml.user_models import FeatureReader

SPLITS = ("train", "test")  # train = the search database, test = the queries
PRETRAINED_FILE = "embed.json"  # in such a run's folder: how its inputs are prepared
DEFAULT_IMAGE_SIZE = 112  # pretrained ResNet-18 input side; 224 is ImageNet's, 112 is 4x cheaper on a CPU
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Images per forward pass. The pretrained ResNet-18 is fastest at 64 on a 2-core CPU (its activations stay
# in cache: 727 images/s against 628 at 128 and 564 at 256, at 112 px in bf16); the small trained models
# gain from large batches.
BATCH = {"trained": 1000, "pretrained": 64}

ProgressFn = Callable[[int, int, str], None]  # (done, total, stage)
StopFn = Callable[[], bool]


@dataclass
class Embeddings:
    vectors: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


# ---------------------------------------------------------------- the models that embed


class ImageNetFeatures(nn.Module):
    """A pretrained ResNet-18 without its classifier: dataset images in, 512-d vectors out."""

    takes_raw = True  # Embedder passes stored uint8 images as they are: no normalise-then-undo per batch
    ds_mean: torch.Tensor  # buffers (1, C, 1, 1): the dataset's statistics, to undo a normalised input
    ds_std: torch.Tensor
    in_mean: torch.Tensor  # (1, 3, 1, 1): ImageNet's statistics, what the network was trained on
    in_std: torch.Tensor

    def __init__(self, net: nn.Module, dataset: Dataset, image_size: int):
        super().__init__()
        net.fc = nn.Identity()
        self.net = net
        self.image_size = image_size
        self.register_buffer("ds_mean", torch.tensor(dataset.mean).view(1, -1, 1, 1))
        self.register_buffer("ds_std", torch.tensor(dataset.std).view(1, -1, 1, 1))
        self.register_buffer("in_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("in_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.input_dtype = torch.float32  # what `prepare` gives the network: bf16 after for_inference("bf16")

    def for_inference(self, precision: str) -> ImageNetFeatures:
        """Made faster for embedding, in place: every BatchNorm folded into the convolution before it
        (eval mode only: the same function, fewer passes over memory), channels_last, and with
        precision 'bf16' the weights and inputs in bf16 (no per-batch weight casts). Returns self."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        net: Any = self.net.eval()  # torchvision's ResNet: its layers are attributes mypy cannot see
        net.conv1, net.bn1 = fuse_conv_bn_eval(net.conv1, net.bn1), nn.Identity()
        for block in (b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer):
            block.conv1, block.bn1 = fuse_conv_bn_eval(block.conv1, block.bn1), nn.Identity()
            block.conv2, block.bn2 = fuse_conv_bn_eval(block.conv2, block.bn2), nn.Identity()
            if block.downsample is not None:
                block.downsample = fuse_conv_bn_eval(block.downsample[0], block.downsample[1])
        self.to(memory_format=torch.channels_last)
        if precision == "bf16":
            self.net.to(torch.bfloat16)
        self.input_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        return self

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Stored uint8 or dataset-normalised float (B, C, H, W) -> ImageNet-normalised (B, 3, S, S)."""
        if x.dtype == torch.uint8:
            raw = x.float() / 255.0
        else:
            raw = (x * self.ds_std + self.ds_mean).clamp(0, 1)
        if raw.shape[1] == 1:
            raw = raw.expand(-1, 3, -1, -1)
        raw = F.interpolate(
            raw,
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
            antialias=raw.shape[-1] > self.image_size,
        )
        x = ((raw - self.in_mean) / self.in_std).contiguous(memory_format=torch.channels_last)
        return x.to(self.input_dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))  # (B, 512)


@dataclass
class Embedder:
    """What turns dataset images into embeddings for one run."""

    model: nn.Module  # has features(x), in eval mode, on `device`
    dataset: Dataset
    device: torch.device
    batch: int
    source: str  # for people: "simple_cnn trained run", "resnet18 ImageNet (112 px)"
    precision: str = "fp32"  # "bf16": the forward pass under bf16 autocast (the vectors come out float32)

    def embed(
        self, x: torch.Tensor, progress: Callable[[int], None] | None = None, should_stop: StopFn | None = None
    ) -> np.ndarray:
        """Images (N, C, H, W) -> float32 (N, D), under inference_mode in batches of `batch`.

        Takes a dataset's uint8 images as stored (normalised here, a batch at a time, on the device)
        or float32 images already normalised (a prepared upload).
        """
        mean, std = channel_tensors(self.dataset.mean, self.device), channel_tensors(self.dataset.std, self.device)
        raw_ok = getattr(self.model, "takes_raw", False)
        features: Callable[[torch.Tensor], torch.Tensor] = self.model.features  # type: ignore[assignment]
        out = []
        with torch.inference_mode():
            for start in range(0, len(x), self.batch):
                if should_stop and should_stop():
                    raise Cancelled("stopped on request")
                part = x[start : start + self.batch].to(self.device)
                if part.dtype == torch.uint8 and not raw_ok:
                    part = normalise(part, mean, std)
                with autocast(self.device, self.precision):
                    out.append(features(part).float())
                if progress:
                    progress(min(start + self.batch, len(x)))
        if not out:
            raise EmbeddingError("there are no images to embed")
        return torch.cat(out).cpu().numpy().astype(np.float32, copy=False)


def check_image_size(image_size: int) -> int:
    if (
        not isinstance(image_size, int)
        or isinstance(image_size, bool)
        or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE
    ):
        raise EmbeddingError(
            f"image_size must be an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels, got {image_size!r}"
        )
    return image_size


def pretrained_settings(run_dir: Path) -> dict:
    """How a pretrained extractor run prepares its inputs (image size, ImageNet statistics)."""
    try:
        return json.loads((Path(run_dir) / PRETRAINED_FILE).read_text())
    except FileNotFoundError:
        return {"image_size": DEFAULT_IMAGE_SIZE}


def write_pretrained_settings(run_dir: Path, image_size: int, weights_name: str) -> None:
    atomic_write_json(
        Path(run_dir) / PRETRAINED_FILE,
        {"image_size": image_size, "weights": weights_name, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    )


def pretrained_extractor(
    ds: Dataset, image_size: int, device: torch.device, download: bool = False
) -> tuple[ImageNetFeatures, str]:
    """The ImageNet ResNet-18 extractor for `ds`, ready to embed on `device`, and its precision:
    bf16 where the hardware computes it natively, else fp32."""
    precision = resolve_precision("auto", device)
    model = ImageNetFeatures(load_resnet18_imagenet(download=download), ds, image_size).to(device).eval()
    return model.for_inference(precision), precision


def embedder_for(
    run_dir: Path,
    config: TrainConfig,
    *,
    pretrained: bool,
    name: str = "",
    device: torch.device | None = None,
    download: bool = False,
) -> Embedder:
    """The model of a run folder, ready to embed its dataset's images: the trained model, or (for a
    pretrained extractor run) an ImageNet ResNet-18."""
    device = device or pick_device("auto")
    if pretrained:
        size = check_image_size(int(pretrained_settings(run_dir)["image_size"]))
        ds = load_dataset(config.dataset, config.data_root, download=download)
        if ds.shape[0] not in (1, 3):
            raise EmbeddingError(
                f"the pretrained ResNet-18 takes grey or RGB images; dataset "
                f"{config.dataset!r} has {ds.shape[0]} channels"
            )
        extractor, precision = pretrained_extractor(ds, size, device, download)
        return Embedder(
            extractor, ds, device, BATCH["pretrained"], f"resnet18 ImageNet features ({size} px)", precision
        )
    if not RunPaths(Path(run_dir)).model.exists():
        raise EmbeddingError(
            f"run {name or Path(run_dir).name} has no trained model yet; embeddings need a finished run (state done)"
        )
    model, ds = load_trained(run_dir, config, device, download=download)
    if is_user_arch(config.arch):  # your own model: its features(), else the input of its last nn.Linear
        model = FeatureReader(model, ds.shape).eval()
    return Embedder(model, ds, device, BATCH["trained"], f"{arch_label(config.arch)} trained run")


def embed_upload(embedder: Embedder, data: bytes, invert: bool | None = None) -> tuple[np.ndarray, PreparedImage]:
    """An uploaded image file as a query vector (D,), through the run's own preprocessing.

    Uses the Inspect page's checks (engine.ml.images.open_upload raises UploadError on a bad
    file) and conversion (channels, size, the dataset's normalisation). Returns (vector, prepared).
    """
    prepared = prepare_image(open_upload(data), embedder.dataset, invert)
    return embedder.embed(prepared.x.unsqueeze(0))[0], prepared


# ---------------------------------------------------------------- files


def embeddings_dir(run_dir: Path) -> Path:
    return RunPaths(Path(run_dir)).embeddings


def embedding_meta(run_dir: Path) -> dict | None:
    """The summary written after all embedding files; None when they are missing or incomplete."""
    try:
        return json.loads(RunPaths(Path(run_dir)).embeddings_meta.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def has_embeddings(run_dir: Path) -> bool:
    folder = embeddings_dir(run_dir)
    return embedding_meta(run_dir) is not None and all(
        (folder / f"{s}.npy").exists() and (folder / f"{s}_labels.npy").exists() for s in SPLITS
    )


def load_embeddings(run_dir: Path, split: str) -> Embeddings:
    if split not in SPLITS:
        raise EmbeddingError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if not has_embeddings(run_dir):
        raise EmbeddingError(
            f"run {Path(run_dir).name} has no embeddings yet: compute them first "
            f"(`python -m engine embed {Path(run_dir).name}` or the Embeddings page)"
        )
    folder = embeddings_dir(run_dir)
    try:
        vectors = np.load(folder / f"{split}.npy")
        labels = np.load(folder / f"{split}_labels.npy")
    except (OSError, ValueError, EOFError) as exc:  # a truncated or overwritten file
        raise EmbeddingError(
            f"the {split} embeddings of run {Path(run_dir).name} are damaged "
            f"({type(exc).__name__}: {str(exc)[:120]}); compute them again "
            f"(`python -m engine embed {Path(run_dir).name}` or the Embeddings page)"
        ) from None
    if vectors.ndim != 2 or len(vectors) != len(labels):
        raise EmbeddingError(
            f"embeddings of run {Path(run_dir).name} are inconsistent "
            f"({vectors.shape} vectors, {labels.shape} labels); compute them again"
        )
    return Embeddings(vectors.astype(np.float32, copy=False), labels.astype(np.int64, copy=False))


def clear_derived(run_dir: Path) -> None:
    """Remove the embeddings' meta and everything built on the old embeddings."""
    paths = RunPaths(Path(run_dir))
    paths.embeddings_meta.unlink(missing_ok=True)
    for folder in (paths.index, paths.projections):
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- computing


def compute_embeddings(
    run_dir: Path, embedder: Embedder, progress: ProgressFn | None = None, should_stop: StopFn | None = None
) -> dict:
    """Embed the train and test splits of `embedder`'s dataset and save them in `run_dir`; returns the
    meta dict. Raises Cancelled when `should_stop` says so (nothing half-written stays behind)."""
    t0 = time.perf_counter()
    ds = embedder.dataset
    splits = {"train": ds.train, "test": ds.test}
    total = sum(len(s) for s in splits.values())
    done_before = 0
    arrays = {}
    for name, split in splits.items():

        def step(done: int, _name: str = name, _before: int = done_before) -> None:
            if progress:
                progress(_before + done, total, f"embedding the {_name} split")

        arrays[name] = (embedder.embed(split.x, step, should_stop), split.y.numpy().astype(np.int64))
        if not np.isfinite(arrays[name][0]).all():
            raise EmbeddingError(
                f"the {name} embeddings of run {Path(run_dir).name} contain NaN or infinite values; "
                f"the model probably diverged"
            )
        done_before += len(split)
    folder = embeddings_dir(run_dir)
    clear_derived(run_dir)
    for name, (vectors, labels) in arrays.items():
        atomic_numpy_save(folder / f"{name}_labels.npy", labels)
        atomic_numpy_save(folder / f"{name}.npy", vectors)
    meta = {
        "dim": int(arrays["train"][0].shape[1]),
        "train": len(arrays["train"][1]),
        "test": len(arrays["test"][1]),
        "source": embedder.source,
        "dataset": ds.name,
        "classes": ds.classes,
        "seconds": round(time.perf_counter() - t0, 3),
        "created": time.time(),
        "precision": embedder.precision,
    }
    atomic_write_json(RunPaths(Path(run_dir)).embeddings_meta, meta)
    return meta
