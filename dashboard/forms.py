"""Pure helpers behind the Train page's form: parse what a person typed, describe a model.

Every parser raises ConfigError with a message that says what was wrong and what is
allowed, so the page can show it next to the field before anything is queued.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from engine.config import is_user_arch
from engine.errors import ConfigError, ModelError
from engine.ml.models import build_model, count_parameters, describe
from engine.model_files import file_sha256, locate

# Log-scale learning-rate choices: one decade in two steps.
LR_CHOICES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
BATCH_CHOICES = (8, 16, 32, 64, 128, 256, 512)
# (channels, height, width), classes of the built-in datasets, known without loading them.
KNOWN_SHAPES = {
    "mnist_sample": ((1, 28, 28), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}
# (training images, test images) of the built-in datasets, known without loading them.
SPLIT_SIZES = {
    "mnist_sample": (4000, 1000),
    "mnist": (60000, 10000),
    "fashion_mnist": (60000, 10000),
    "cifar10": (50000, 10000),
}
DATASET_BLURBS = {
    "mnist_sample": "5,000 real handwritten digits (28x28, grey), bundled: works offline",
    "mnist": "MNIST: 60,000 handwritten digits for training, 10,000 for testing",
    "fashion_mnist": "Fashion-MNIST: 60,000 small grey pictures of clothes, 10 kinds",
    "cifar10": "CIFAR-10: 50,000 small colour photos (32x32), 10 classes",
}


def parse_float(text: str, name: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number such as 0.001 or 1e-3, got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {text.strip()!r}")
    return value


def parse_list(text: str, name: str, kind: type) -> list:
    """'1e-3, 1e-2' -> [0.001, 0.01]; duplicates dropped, order kept; at least one value."""
    values = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if kind is int:
            try:
                value = int(part)
            except ValueError:
                raise ConfigError(
                    f"{name}: {part!r} is not a whole number; give whole numbers separated by commas, e.g. 32, 128"
                ) from None
        elif kind is float:
            value = parse_float(part, name)
        else:
            value = part
        if value not in values:
            values.append(value)
    if not values:
        raise ConfigError(f"{name}: give at least one value (several separated by commas)")
    return values


def parameter_count(arch: str, shape: tuple[int, int, int], classes: int) -> int:
    """Number of trainable numbers in `arch` built for images of `shape` and `classes` classes."""
    version = None
    if is_user_arch(arch):  # your own model: counted again when its file changes
        version = file_sha256(locate(arch).path)
    return _parameter_count(arch, tuple(shape), int(classes), version)


@lru_cache(maxsize=128)
def _parameter_count(arch: str, shape: tuple[int, int, int], classes: int, version: str | None) -> int:
    return count_parameters(build_model(arch, shape, classes))


def human_count(n: int) -> str:
    """1234567 -> '1.23M', 101770 -> '101.8k'."""
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def arch_caption(arch: str, shape: tuple[int, int, int] | None, classes: int | None) -> str:
    try:
        text = describe(arch)
    except ConfigError as exc:  # your own model: the path is not FILE.py:Class, or no such file
        return f"**cannot be used**: {exc}"
    if shape is not None:
        try:
            count = parameter_count(arch, shape, classes)
        except (ModelError, ConfigError) as exc:
            if is_user_arch(arch):  # the file does not import, no such class, a wrong output, ...
                return f"**cannot be used**: {exc}"
            return f"{text} · **cannot be built for these images**: {exc}"  # e.g. a folder's small images
        text += f" · **{human_count(count)} parameters** for {shape[1]}x{shape[2]} images"
    return text


def grid_size(**lists: list) -> int:
    """How many runs a sweep over these value lists makes."""
    return math.prod(len(v) for v in lists.values()) if lists else 0


def folder_under_root(text: str, data_root: Path) -> Path:
    """The image folder typed on the Train page, resolved (a relative path is under the data root).

    From the dashboard, folder datasets come only from under the data root, so a visitor cannot
    make the server read (and show) any folder it can read; symbolic links are followed before the
    check. The command line may name any folder.
    """
    root = Path(data_root).expanduser().resolve()
    typed = Path(text.strip()).expanduser()
    path = (typed if typed.is_absolute() else root / typed).resolve()
    if path != root and not path.is_relative_to(root):
        raise ConfigError(
            f"the image folder must be inside the data root {root} (this page reads nothing "
            f"else; set LENSBOARD_DATA to move it); got {text.strip()!r}"
        )
    return path
