"""TrainConfig: everything that defines one training run, and its validation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from engine.errors import ConfigError

OPTIMIZERS = ("adam", "sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
MAX_EPOCHS = 1000
MAX_VAL_SPLIT = 0.5
MAX_SEED = 2**32 - 1  # torch generators take 64 bits; the per-epoch seed multiplies this one
# The hyperparameters a learner changes, in the order tables and reports show them: what the Runs table
# lists, a grid sweep may vary, and (but the seed) what names a group of runs.
HYPERPARAMETERS = (
    "arch",
    "dataset",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "val_split",
    "seed",
    "train_limit",
)


USER_ARCH_MARK = ".py:"  # an arch "path/to/mynet.py:MyNet" names a class in the user's own file


def is_user_arch(arch: str) -> bool:
    """True for an arch that names the user's own model class ("FILE.py:Class"), not a built-in."""
    return isinstance(arch, str) and USER_ARCH_MARK in arch


def arch_label(arch: str) -> str:
    """A short name for people: "mynet.py:MyNet" for the user's own model, the key of a built-in."""
    if not is_user_arch(arch):
        return arch
    path, _, name = arch.rpartition(":")
    return f"{PurePath(path).name}:{name}"


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "mnist_sample"  # a name from engine.ml.data.DATASETS, or "folder:PATH"
    data_root: str = "data"  # where torchvision-layout datasets live (MNIST/raw, cifar-10-batches-py)
    arch: str = "simple_cnn"  # a key of engine.ml.models.MODELS, or "FILE.py:Class" (your own nn.Module)
    epochs: int = 5  # full passes over the training split, 1..1000
    batch_size: int = 64  # images per optimiser step, 1..size of the training split
    lr: float = 1e-3  # learning rate, finite and > 0
    optimizer: str = "adam"  # one of OPTIMIZERS
    momentum: float = 0.9  # SGD momentum in [0, 1); ignored by adam/adamw
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw), >= 0
    val_split: float = 0.0  # fraction of train held out for validation, in [0, 0.5]
    seed: int = 0  # seeds weights, shuffling and the validation split; 0..MAX_SEED
    train_limit: int | None = None  # train on the first N images (stratified); None = all
    device: str = "auto"  # "auto" picks CUDA when present, else the CPU
    pretrained: bool = False  # resnet18 only: start from ImageNet weights
    arch_sha256: str | None = None  # a "FILE.py:Class" arch: sha256 of FILE when the run was made; else None
    # one of PRECISIONS: "auto" is bf16 autocast where the device computes bf16 natively (CPUs with
    # AVX512-BF16 or AMX, CUDA GPUs with bf16), else fp32; the metrics rows say which one ran
    precision: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a dict; unknown keys are an error, missing keys take defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _number(name: str, value: Any, kind: type) -> None:
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(f"{name} must be {'a number' if kind is float else 'an integer'}, got {value!r}")


def validate(config: TrainConfig) -> TrainConfig:
    """Check every field's type and range; return the config.

    The names of the dataset and the architecture are checked against their registries by
    `engine.ml.train.check_config` (they live with torch; this module stays cheap to import), and
    the batch size against the training split by `check_batch_size` once that size is known.
    """
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {config.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if config.device not in DEVICES:
        raise ConfigError(f"unknown device {config.device!r}; valid: {', '.join(DEVICES)}")
    if config.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {config.precision!r}; valid: {', '.join(PRECISIONS)}")
    _number("epochs", config.epochs, int)
    if not 1 <= config.epochs <= MAX_EPOCHS:
        raise ConfigError(f"epochs must be from 1 to {MAX_EPOCHS}, got {config.epochs}")
    _number("batch_size", config.batch_size, int)
    if config.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {config.batch_size}")
    _number("lr", config.lr, float)
    if not math.isfinite(config.lr) or config.lr <= 0:
        raise ConfigError(f"lr must be a finite number > 0, got {config.lr}")
    _number("momentum", config.momentum, float)
    if not 0 <= config.momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {config.momentum}")
    _number("weight_decay", config.weight_decay, float)
    if not math.isfinite(config.weight_decay) or config.weight_decay < 0:
        raise ConfigError(f"weight_decay must be a finite number >= 0, got {config.weight_decay}")
    _number("val_split", config.val_split, float)
    if not 0 <= config.val_split <= MAX_VAL_SPLIT:
        raise ConfigError(f"val_split must be in [0, {MAX_VAL_SPLIT}], got {config.val_split}")
    _number("seed", config.seed, int)
    if not 0 <= config.seed <= MAX_SEED:
        raise ConfigError(f"seed must be from 0 to {MAX_SEED}, got {config.seed}")
    if config.train_limit is not None:
        _number("train_limit", config.train_limit, int)
        if config.train_limit < 1:
            raise ConfigError(f"train_limit must be at least 1 (or unset for all), got {config.train_limit}")
    if config.pretrained and config.arch != "resnet18":
        raise ConfigError(f"pretrained weights exist only for arch 'resnet18', not {config.arch!r}")
    return config


def check_batch_size(config: TrainConfig, train_size: int) -> None:
    if not 1 <= config.batch_size <= train_size:
        raise ConfigError(f"batch_size must be from 1 to the training set size ({train_size}), got {config.batch_size}")


def reuse_key(config: TrainConfig) -> dict:
    """What makes two configs train the same run: the data root counts only for the datasets read
    from it, and as an absolute path (the CLI and the dashboard may spell it differently)."""
    values = config.to_dict()
    if config.dataset in ("mnist", "fashion_mnist", "cifar10"):
        values["data_root"] = str(Path(config.data_root).expanduser().resolve())
    else:
        values.pop("data_root")
    return values
