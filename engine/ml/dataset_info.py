"""What a dataset looks like, read from its headers and labels without loading its images.

Checking a form before a run is queued needs the image shape, the classes and how many training
images each class has (the batch size is checked against the training split a config cuts). The
dashboard and `submit` ask here instead of loading the dataset: for CIFAR-10 that is a few MB read
one file at a time instead of ~180 MB held, and for MNIST only 16 header bytes and the label file.

The shapes follow the readers in engine.ml.readers and engine.ml.folders exactly (tests compare the two
on every dataset kind).
"""

from __future__ import annotations

import gzip
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import DatasetError
from engine.ml import data as datasets
from engine.ml import folders, readers

CACHE_SIZE = 32  # headers kept per process; each is a few numbers


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # as given: a name from engine.ml.data.DATASETS or folder:PATH
    shape: tuple[int, int, int]  # (C, H, W) of every image the loader returns
    classes: tuple[str, ...]  # class names, index = label
    train_counts: tuple[int, ...]  # training images per class, index = label
    test_size: int  # images in the test split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def train_size(self) -> int:
        return sum(self.train_counts)

    def cut_size(self, val_split: float, train_limit: int | None) -> int:
        """How many images engine.ml.data.split_train leaves for training: per class it holds out
        round(n * val_split) images (at least one of a class that has two or more), then keeps the
        first `train_limit` of the rest."""
        size = 0
        for n in self.train_counts:
            k = int(round(n * val_split)) if val_split > 0 and n else 0
            if val_split > 0 and k == 0 and n > 1:
                k = 1
            size += n - k
        return size if train_limit is None else min(train_limit, size)


_cache: OrderedDict[tuple, DatasetInfo] = OrderedDict()
_lock = threading.Lock()


def dataset_info(name: str, data_root: str | Path = "data", download: bool = False) -> DatasetInfo:
    """The dataset's shape, classes and split sizes; raises DatasetError (with the loader's message)
    when its files are missing or unreadable. A missing torchvision dataset is downloaded first when
    `download` is true, as the loader would. Cached on what the files look like on disk."""
    datasets.check_dataset_name(name)
    key = datasets.cache_key(name, data_root)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    root = Path(data_root).expanduser()
    if name == "mnist_sample":
        info = _mnist_sample_info()
    elif name in ("mnist", "fashion_mnist"):
        info = _mnist_family_info(name, root, download)
    elif name == "cifar10":
        info = _cifar10_info(root, download)
    else:
        info = _folder_info(name, Path(name[len(datasets.FOLDER_PREFIX) :]).expanduser())
    with _lock:
        _cache[key] = info
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return info


def _counts(labels: np.ndarray, classes: int) -> tuple[int, ...]:
    return tuple(int(c) for c in np.bincount(labels.astype(np.int64), minlength=classes)[:classes])


def _mnist_sample_info() -> DatasetInfo:
    train_x, train_y, test_x, test_y, classes = readers.load_mnist_sample()  # 4 MB, bundled
    return DatasetInfo(
        "mnist_sample", tuple(train_x.shape[1:]), tuple(classes), _counts(train_y, len(classes)), len(test_y)
    )


def _idx_header(path: Path) -> tuple[tuple[int, ...], int]:
    """(shape from the header, bytes of data in the file) of an IDX file or its .gz, without reading the data."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if not candidate.exists():
            continue
        if candidate.suffix == ".gz":
            with gzip.open(candidate, "rb") as f:
                head = f.read(4)
                dims = head[3] if len(head) == 4 else 0
                head += f.read(4 * dims)
            with open(candidate, "rb") as f:  # gzip's last 4 bytes: the uncompressed size mod 2**32
                f.seek(-4, 2)
                size = struct.unpack("<I", f.read(4))[0]
        else:
            with open(candidate, "rb") as f:
                head = f.read(4)
                dims = head[3] if len(head) == 4 else 0
                head += f.read(4 * dims)
            size = candidate.stat().st_size
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
            raise ValueError("not an unsigned-byte IDX file (bad magic number)")
        if len(head) < 4 + 4 * dims:
            raise ValueError("truncated header")
        shape = struct.unpack(f">{dims}i", head[4 : 4 + 4 * dims])
        return shape, (size - len(head)) % 2**32
    raise FileNotFoundError(path)


def _mnist_family_info(name: str, root: Path, download: bool) -> DatasetInfo:
    raw = readers.files_dir(name, root)
    files = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
    names = [f for pair in files.values() for f in pair]
    expected = f"the four IDX files {', '.join(names)} (optionally .gz) in {raw}"
    if not all((raw / f).exists() or (raw / (f + ".gz")).exists() for f in names):
        readers.download_torchvision(name, root, expected, raw, download)
    classes = readers.MNIST_CLASSES if name == "mnist" else readers.FASHION_CLASSES
    shapes, labels = {}, {}
    for split, (images, label_file) in files.items():
        try:
            shape, size = _idx_header(raw / images)
            if len(shape) != 3:
                raise ValueError(f"expected 3 dimensions, found {len(shape)}")
            if size % 2**32 != (int(np.prod(shape)) % 2**32):
                raise ValueError(
                    f"truncated or oversized: header says {int(np.prod(shape))} bytes of data, file has {size}"
                )
            shapes[split] = shape
            labels[split] = readers.read_idx(readers.open_idx(raw / label_file), 1)
        except (OSError, ValueError, EOFError, zlib.error) as exc:
            which = images if split not in shapes else label_file
            raise readers.missing_error(name, raw, expected, f"{which}: {exc}") from exc
        if shapes[split][0] != len(labels[split]):
            raise readers.missing_error(name, raw, expected, f"{split} images and labels differ in count")
        if len(labels[split]) and labels[split].max() >= len(classes):
            raise readers.missing_error(
                name,
                raw,
                expected,
                f"{split} labels go up to {labels[split].max()}, but there are only {len(classes)} classes",
            )
    if shapes["train"][1:] != shapes["test"][1:]:
        raise DatasetError(
            f"dataset {name!r}: train images {(1, *shapes['train'][1:])} and test images "
            f"{(1, *shapes['test'][1:])} differ in shape"
        )
    return DatasetInfo(
        name, (1, *shapes["train"][1:]), tuple(classes), _counts(labels["train"], len(classes)), len(labels["test"])
    )


def _cifar10_info(root: Path, download: bool) -> DatasetInfo:
    base = readers.files_dir("cifar10", root)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    expected = f"the official python pickles {', '.join(names)} and batches.meta in {base}"
    if not all((base / n).exists() for n in names):
        readers.download_torchvision("cifar10", root, expected, base, download)
    classes = readers.CIFAR10_CLASSES
    train_labels, test_size = [], 0
    for n in names:
        try:  # one file at a time: its ~30 MB are freed before the next is read
            batch = readers.unpickle(base / n)
            x = np.asarray(batch["data"], dtype=np.uint8)
            x = x.reshape(-1, 3, 32, 32)
            y = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64)
            del batch
        except Exception as exc:  # a corrupt pickle can raise almost anything
            raise readers.missing_error("cifar10", base, expected, f"{n}: {type(exc).__name__}: {exc}") from exc
        if len(x) != len(y):
            raise readers.missing_error("cifar10", base, expected, f"{n}: images and labels differ in count")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise readers.missing_error("cifar10", base, expected, f"{n}: labels must be 0..{len(classes) - 1}")
        del x
        if n == "test_batch":
            test_size = len(y)
        else:
            train_labels.append(y)
    if (base / "batches.meta").exists():
        try:
            label_names = [str(c) for c in readers.unpickle(base / "batches.meta")["label_names"]]
            if len(label_names) == len(classes):
                classes = label_names
        except Exception:
            pass  # the names are a nicety, as in the loader
    labels = np.concatenate(train_labels)
    return DatasetInfo("cifar10", (3, 32, 32), tuple(classes), _counts(labels, len(classes)), test_size)


def _folder_info(name: str, path: Path) -> DatasetInfo:
    """Class folders and file counts from the listing, and the shape engine.ml.folders.load gives: every
    image a FOLDER_IMAGE_SIDE square, one channel when every image's header says grey (the loader's rule,
    on every image, so the shape checked is the shape trained). No image is decoded."""
    layout = folders.scan(path)
    side = folders.FOLDER_IMAGE_SIDE
    labels = np.array([label for _, label in layout.files["train"]], dtype=np.int64)
    return DatasetInfo(
        name,
        (folders.channels(layout), side, side),
        layout.classes,
        _counts(labels, len(layout.classes)),
        layout.count("test"),
    )
