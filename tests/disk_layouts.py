"""Writers for the on-disk dataset layouts the engine reads, used by the tests.

They are written independently of engine/ml/readers.py (from the format descriptions), so a
reader bug cannot hide behind a matching writer bug.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np

from engine.ml.readers import CIFAR10_CLASSES

MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format: 0x00 0x00, type 0x08 (ubyte), number of dims, dims as big-endian int32, data."""
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def fake_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    return x, y.astype(np.uint8)


def write_mnist_raw(
    root: Path, folder: str = "MNIST", gz: bool = False, n_train: int = 60, n_test: int = 20, seed: int = 0
) -> dict[str, np.ndarray]:
    """torchvision's layout: <root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    train_x, train_y = fake_images(n_train, (28, 28), seed)
    test_x, test_y = fake_images(n_test, (28, 28), seed + 1)
    arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    for key, name in MNIST_FILES.items():
        payload = idx_bytes(arrays[key])
        if gz:
            (raw / (name + ".gz")).write_bytes(gzip.compress(payload))
        else:
            (raw / name).write_bytes(payload)
    return arrays


class Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 `str` (BINSTRING), as the official CIFAR-10 files were written:
    with pickle.load(..., encoding="latin1") the dict keys come back as str."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # The official files name numpy's pre-2.0 module; numpy 2 still resolves it.
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """The official python version: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # rows: 1024 R, 1024 G, 1024 B
        y = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": y,
            b"data": x,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        (base / name).write_bytes(py2_pickle(batch))
        xs.append(x)
        ys.append(np.array(y))
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (base / "batches.meta").write_bytes(py2_pickle(meta))
    return {
        "train_x": np.concatenate(xs[:5]).reshape(-1, 3, 32, 32),
        "train_y": np.concatenate(ys[:5]),
        "test_x": xs[5].reshape(-1, 3, 32, 32),
        "test_y": ys[5],
    }


def write_image_folder(
    path: Path, classes=("cat", "dog"), per_class: int = 3, size=(20, 24), mode: str = "RGB"
) -> Path:
    """PATH/train/<class>/*.png and PATH/test/<class>/*.png."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            (path / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                channels = 3 if mode == "RGB" else 1
                a = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
                Image.fromarray(a if channels == 3 else a[..., 0], mode).save(path / split / c / f"{i}.png")
    return path
