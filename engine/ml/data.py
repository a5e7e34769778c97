"""Datasets: a registry of loaders that read each split into memory once, as tensors.

Every loader returns uint8 images (N, C, H, W) and int64 labels. `load_dataset` keeps
them as uint8 (4x less memory than float32) with the training split's per-channel mean
and std, and `batches` normalises each batch on the split's device. The training loop
takes batches by indexing a seeded permutation: no DataLoader and no per-sample PIL
work on the hot path.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.errors import ConfigError, DatasetError
from engine.ml import folders
from engine.ml.folders import FOLDER_PREFIX
from engine.ml.readers import RawSplits, files_dir, load_cifar10, load_mnist_family, load_mnist_sample
from engine.ml.splits import Split, channel_stats, channel_tensors, normalise, stratified_first

DATASETS = ("mnist_sample", "mnist", "fashion_mnist", "cifar10")
CACHE_SIZE = 2  # datasets kept in memory per process (CIFAR-10 is ~180 MB as uint8)


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train: Split
    test: Split
    mean: list[float]  # per-channel mean of the raw training images, in [0, 1]
    std: list[float]  # per-channel std of the raw training images, in [0, 1]
    source: str = ""  # where the files came from, for messages
    extra: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return c, h, w

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float (N, C, H, W) -> the normalised input the models see."""
        return normalise(raw, channel_tensors(self.mean, raw.device), channel_tensors(self.std, raw.device))

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of `normalise`, to [0, 1] for display."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)


def check_dataset_name(name: str) -> None:
    if name in DATASETS:
        return
    if name.startswith(FOLDER_PREFIX) and name[len(FOLDER_PREFIX) :].strip():
        return
    raise ConfigError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}, or folder:PATH for your own images")


# ---------------------------------------------------------------- raw loaders (uint8)


def load_folder(path: Path) -> RawSplits:
    """A folder dataset, decoded image by image to a fixed size (engine.ml.folders says how)."""
    return folders.load(path)


def load_raw(name: str, data_root: str | Path, download: bool = False) -> RawSplits:
    check_dataset_name(name)
    root = Path(data_root).expanduser()
    if name == "mnist_sample":
        return load_mnist_sample()
    if name in ("mnist", "fashion_mnist"):
        return load_mnist_family(name, root, download)
    if name == "cifar10":
        return load_cifar10(root, download)
    return load_folder(Path(name[len(FOLDER_PREFIX) :]).expanduser())


# ---------------------------------------------------------------- in-memory datasets

_cache: OrderedDict[tuple, Dataset] = OrderedDict()  # least recently used first
_cache_lock = threading.Lock()


def cache_key(name: str, data_root: str | Path) -> tuple:
    """What identifies a loaded dataset in the in-memory cache (and in dataset_info's): its name and
    where its files are, with a folder dataset's current listing."""
    if name.startswith(FOLDER_PREFIX):
        # Files can change while a worker lives: the key holds what they look like on disk now.
        return (name, *folders.cache_key(name[len(FOLDER_PREFIX) :]))
    if name == "mnist_sample":
        return (name,)
    root = Path(data_root).expanduser().resolve()
    folder = files_dir(name, root)
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    return (name, str(root), tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files))


def load_dataset(name: str, data_root: str | Path = "data", download: bool = False) -> Dataset:
    """Load both splits once per process, normalised with the training split's statistics."""
    key = cache_key(name, data_root)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    train_x, train_y, test_x, test_y, classes = load_raw(name, data_root, download)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(
            f"dataset {name!r}: train images {train_x.shape[1:]} and test images {test_x.shape[1:]} differ in shape"
        )
    train_u8 = torch.from_numpy(np.ascontiguousarray(train_x))
    mean, std = channel_stats(train_u8)
    ds = Dataset(
        name=name,
        classes=list(classes),
        mean=mean,
        std=std,
        source=str(data_root),
        train=Split(train_u8, torch.from_numpy(train_y), tuple(mean), tuple(std)),
        test=Split(torch.from_numpy(np.ascontiguousarray(test_x)), torch.from_numpy(test_y), tuple(mean), tuple(std)),
    )
    with _cache_lock:
        _cache[key] = ds
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    release_freed_memory()
    return ds


def release_freed_memory() -> None:
    """Give the memory freed while reading files (pickles, decompressed bytes) back to the system now.
    glibc keeps large freed blocks in the process otherwise: ~150 MB after reading CIFAR-10."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do


def available_datasets(data_root: str | Path) -> list[str]:
    """The datasets that can be loaded right now without a download: mnist_sample always."""
    root = Path(data_root).expanduser()
    found = ["mnist_sample"]
    for name in ("mnist", "fashion_mnist"):
        if any(files_dir(name, root).glob("train-images-idx3-ubyte*")):
            found.append(name)
    if (files_dir("cifar10", root) / "data_batch_1").exists():
        found.append("cifar10")
    return found


def split_train(ds: Dataset, val_split: float, train_limit: int | None, seed: int) -> tuple[Split, Split | None]:
    """The training split and an optional validation split, both seeded and stratified.

    The validation images are held out first (at least one per class that has two or more),
    then `train_limit` takes the first N of the rest, stratified.
    """
    train = ds.train
    val = None
    if val_split > 0:
        g = torch.Generator().manual_seed(seed)
        val_idx, train_idx = [], []
        for c in torch.unique(train.y):
            idx = torch.nonzero(train.y == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            k = int(round(len(idx) * val_split))
            if k == 0 and len(idx) > 1:
                k = 1
            val_idx.append(idx[:k])
            train_idx.append(idx[k:])
        val = train.subset(torch.cat(val_idx).sort().values)
        train = train.subset(torch.cat(train_idx).sort().values)
    if train_limit is not None:
        train = train.subset(stratified_first(train.y, train_limit))
    return train, val
