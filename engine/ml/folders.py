"""Folder datasets (`folder:PATH`): your own images in PATH/train/<class>/ and PATH/test/<class>/.

Every image becomes a FOLDER_IMAGE_SIDE x FOLDER_IMAGE_SIDE square (centre-cropped to a square,
then resized), whatever its size, so one odd file never changes the others. The dataset is grey
(one channel) when every image is grey, else RGB. Images are decoded one at a time straight into
one preallocated array (a JPEG at a reduced scale), so loading a folder of photos costs about the
final array, not the photos. 16-bit images are scaled to 8 bits.

The layout is checked first, from the folder listing alone (cheap): each split's class folders,
no empty class folder, at least two classes, the same classes in train and test, and at most
MAX_FOLDER_IMAGES images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import DatasetError
from engine.ml import images

FOLDER_PREFIX = "folder:"  # a dataset name `folder:PATH` names a folder dataset
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")  # the files a class folder's images are
FOLDER_IMAGE_SIDE = 32  # every folder image becomes a square of this many pixels (like CIFAR-10)
MAX_FOLDER_IMAGES = 100_000  # train + test; 100,000 RGB images are 1.2 GB as normalised floats
HEADER_SAMPLE = 256  # images whose headers a quick look (the Train page) reads to tell grey from colour
SPLITS = ("train", "test")
EXPECTED = "PATH/train/<class>/*.png|jpg and PATH/test/<class>/*.png|jpg"


@dataclass(frozen=True)
class FolderLayout:
    """What a folder dataset holds, from its listing alone."""

    path: Path  # the dataset folder (PATH)
    classes: tuple[str, ...]  # class folder names, sorted; the label of a class is its position
    files: dict  # split -> tuple of (image path, label), in class then file-name order

    def count(self, split: str) -> int:
        return len(self.files[split])


def _error(path: Path, where: Path, reason: str) -> DatasetError:
    return DatasetError(
        f"dataset '{FOLDER_PREFIX}{path}' could not be loaded from {where} ({reason}): "
        f"expected {EXPECTED}. Fix the folder, or use the bundled offline dataset 'mnist_sample'."
    )


def _listing(path: Path, folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except PermissionError:
        raise _error(path, folder, "permission denied: the user running Lensboard cannot read this folder") from None
    except OSError as exc:
        raise _error(path, folder, f"cannot be read: {exc.strerror or exc}") from None


def scan(path: str | Path) -> FolderLayout:
    """Check a folder dataset's layout from its listing (no image is opened); DatasetError says
    what is wrong: a missing split, an empty or unreadable class folder, a single class, classes
    that differ between train and test, or too many images."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise _error(path, path, "no such folder" if not path.exists() else "not a folder")
    per_split: dict[str, list[tuple[str, list[Path]]]] = {}
    for split in SPLITS:
        d = path / split
        if not d.is_dir():
            raise _error(path, d, "no images found: this split folder is missing")
        found = []
        for c in _listing(path, d):
            if not c.is_dir() or c.name.startswith("."):
                continue  # loose files and hidden folders (.ipynb_checkpoints) are not classes
            pictures = [f for f in _listing(path, c) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
            if not pictures:
                raise _error(
                    path,
                    c,
                    f"no images found in the class folder {split}/{c.name} "
                    f"({', '.join(IMAGE_SUFFIXES)}): add some or remove the folder",
                )
            found.append((c.name, pictures))
        if not found:
            raise _error(path, d, "no images found: there are no class folders")
        per_split[split] = found
    classes = tuple(name for name, _ in per_split["train"])
    if tuple(name for name, _ in per_split["test"]) != classes:
        raise _error(path, path, "train and test must have the same class folders")
    if len(classes) < 2:
        raise _error(
            path,
            path,
            f"only one class ({classes[0]}): a classifier needs at least two "
            f"classes to tell apart, or every answer is right",
        )
    files = {
        split: tuple((f, label) for label, (_, pictures) in enumerate(found) for f in pictures)
        for split, found in per_split.items()
    }
    total = sum(len(v) for v in files.values())
    if total > MAX_FOLDER_IMAGES:
        raise _error(
            path, path, f"{total:,} images; at most {MAX_FOLDER_IMAGES:,} are loaded (train and test together)"
        )
    return FolderLayout(path, classes, files)


def _header(layout: FolderLayout, f: Path) -> str:
    try:
        mode, _ = images.header(f)
    except images.ImageError as exc:
        raise _error(layout.path, f, f"unreadable image: {exc}") from None
    return mode


def _sample(files: list[Path], n: int) -> list[Path]:
    if len(files) <= n:
        return files
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def channels(layout: FolderLayout, sample: int | None = None) -> int:
    """1 when every image (or every one of `sample` images spread over the folder) is grey, else 3."""
    every = [f for split in SPLITS for f, _ in layout.files[split]]
    chosen = every if sample is None else _sample(every, sample)
    return 1 if all(images.is_grey(_header(layout, f)) for f in chosen) else 3


def describe(path: str | Path) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), classes) of a folder dataset, cheaply: its listing and at most HEADER_SAMPLE image
    headers (for the Train page; training reads every image). Raises DatasetError."""
    layout = scan(path)
    return (channels(layout, HEADER_SAMPLE), FOLDER_IMAGE_SIDE, FOLDER_IMAGE_SIDE), len(layout.classes)


def load(path: str | Path, side: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train_x, train_y, test_x, test_y, classes): uint8 (N, C, side, side) images, int64 labels;
    `side` is FOLDER_IMAGE_SIDE unless given."""
    side = side or FOLDER_IMAGE_SIDE
    layout = scan(path)
    c = channels(layout)
    mode = "L" if c == 1 else "RGB"
    out: list[np.ndarray] = []
    for split in SPLITS:
        files = layout.files[split]
        x = np.empty((len(files), c, side, side), dtype=np.uint8)  # the only full-size allocation
        for i, (f, _) in enumerate(files):
            try:
                x[i] = images.decode_square(f, side, mode)
            except images.ImageError as exc:
                raise _error(layout.path, f, f"unreadable image: {exc}") from None
            except OSError as exc:
                raise _error(layout.path, f, f"unreadable image: {exc.strerror or exc}") from None
        out += [x, np.array([label for _, label in files], dtype=np.int64)]
    return out[0], out[1], out[2], out[3], list(layout.classes)


def cache_key(path: str | Path) -> tuple:
    """What the folder looks like on disk now (folders' mtimes and entry counts), so a process that
    lives on (a worker) reads it again after files change. Raises DatasetError when unreadable."""
    path = Path(path).expanduser().resolve()
    dirs = [d for d in (path / s for s in SPLITS) if d.is_dir()]
    dirs += [c for d in dirs for c in _listing(path, d) if c.is_dir()]
    try:
        return (str(path), tuple((d.stat().st_mtime_ns, len(_listing(path, d))) for d in dirs))
    except OSError as exc:
        raise _error(path, path, f"cannot be read: {exc.strerror or exc}") from None
