"""A split held in memory: uint8 images as read from the files, and what the training loop takes from it.

The images stay uint8 (4x less memory than float32); `Split.inputs` and `batches` normalise them with the
training split's per-channel statistics a batch at a time, on the split's device. `channel_stats` computes
those statistics a few thousand images at a time, so no float copy of a whole split is ever made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

STATS_CHUNK = 1 << 20  # pixels per step when computing the channel statistics (8 MB as float64)
Index = int | slice | torch.Tensor  # which images of a split: one, a range, or an index tensor


def normalise(raw: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (or [0, 1] float) images (..., C, H, W) -> float32 (x - mean) / std, with mean and std
    per channel as (C, 1, 1) tensors on the images' device."""
    x = raw.float() / 255.0 if raw.dtype == torch.uint8 else raw.float()
    return (x - mean) / std


def channel_tensors(values: Iterable[float], device: torch.device | str = "cpu") -> torch.Tensor:
    """Per-channel statistics as a (C, 1, 1) float32 tensor, broadcasting over (..., C, H, W)."""
    return torch.tensor(list(values), dtype=torch.float32, device=device).view(-1, 1, 1)


@dataclass
class Split:
    x: torch.Tensor  # (M, C, H, W) uint8 as read from the files; the model sees `inputs` / `batches`
    y: torch.Tensor  # (N,) int64, one label per image of this split
    mean: tuple[float, ...] = ()  # per-channel mean of the raw training images in [0, 1]; () = x is the input
    std: tuple[float, ...] = ()  # per-channel std, likewise
    # (N,) rows of x that make this split (a validation or limited training split shares its dataset's
    # images instead of copying them); None = all of x, in order
    rows: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> Split:
        rows = None if self.rows is None else self.rows.to(device)
        return Split(self.x.to(device), self.y.to(device), self.mean, self.std, rows)

    def subset(self, index: torch.Tensor) -> Split:
        rows = index if self.rows is None else self.rows[index]
        return Split(self.x, self.y[index], self.mean, self.std, rows)

    def images(self, index: Index = slice(None)) -> torch.Tensor:
        """The stored uint8 images `index` (an int, a slice or an index tensor) of this split."""
        return self.x[index] if self.rows is None else self.x[self.rows[index]]

    def normaliser(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function: raw images of this split (on its device) -> the normalised float32 model input.
        The statistics are copied to the device once, not per batch."""
        if not self.mean:
            return lambda raw: raw.float()
        mean, std = channel_tensors(self.mean, self.x.device), channel_tensors(self.std, self.x.device)
        return lambda raw: normalise(raw, mean, std)

    def inputs(self, index: Index = slice(None)) -> torch.Tensor:
        """The model input of images `index` (an int, a slice or an index tensor): float32, normalised."""
        return self.normaliser()(self.images(index))


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (unbiased, at least 1e-6) of uint8 images (N, C, H, W) scaled to [0, 1],
    a few thousand images at a time: no float copy of the whole split is ever made."""
    n, c = images.shape[0], images.shape[1]
    pixels = images[0].numel() if n else 1
    step = max(1, STATS_CHUNK // pixels)
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for start in range(0, n, step):
        part = images[start : start + step].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = total / count
    var = (squares - count * mean.square()) / max(1, count - 1)
    return mean.float().tolist(), var.clamp_min(0).sqrt().float().clamp_min(1e-6).tolist()


def stratified_first(y: torch.Tensor, n: int) -> torch.Tensor:
    """Indices (sorted) of n items taken round-robin over the classes, each class in its file order:
    the first of every class, then the second of every class, and so on."""
    if n >= len(y):
        return torch.arange(len(y))
    order = torch.argsort(y, stable=True)  # grouped by class, file order within a class
    counts = torch.bincount(y)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(y)
    rank[order] = torch.arange(len(y)) - starts[y[order]]  # position of each item within its class
    # Sort by (rank, class): round 0 over all classes, then round 1, ... and keep the first n.
    picked = torch.argsort(rank * (int(y.max()) + 1) + y, stable=True)[:n]
    return picked.sort().values


def batches(
    split: Split, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x, y) batches, x normalised float32 on the split's device; shuffled by a seeded
    permutation when a generator is given."""
    n = len(split)
    inputs = split.normaliser()
    if generator is None:
        for start in range(0, n, batch_size):
            yield inputs(split.images(slice(start, start + batch_size))), split.y[start : start + batch_size]
        return
    order = torch.randperm(n, generator=generator).to(split.x.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield inputs(split.images(idx)), split.y[idx]
