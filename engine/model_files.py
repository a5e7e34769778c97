"""Your own model's file, without importing it: where "FILE.py:Class" points, and whether the file changed.

Kept apart from engine.ml.user_models (which imports the file, and torch) so that queueing a run, a
retry or a listing can record and compare a file's hash at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from engine.config import TrainConfig, is_user_arch
from engine.errors import ConfigError


@dataclass(frozen=True)
class UserArch:
    path: Path  # the model file, absolute
    class_name: str  # the nn.Module subclass in it

    @property
    def arch(self) -> str:
        return f"{self.path}:{self.class_name}"


def locate(arch: str, base: Path | None = None) -> UserArch:
    """The file and class an arch "FILE.py:Class" names; a relative FILE is taken from `base`
    (default: the current folder). ConfigError when the arch is malformed or the file is missing."""
    head, sep, name = arch.rpartition(":")
    if not is_user_arch(arch) or not sep or not head.endswith(".py") or not name.isidentifier():
        raise ConfigError(
            f"arch {arch!r} is not FILE.py:ClassName (e.g. models/mynet.py:MyNet); "
            f"a built-in arch or your own model class after the file's path and a colon"
        )
    path = Path(head).expanduser()
    path = (path if path.is_absolute() else (base or Path.cwd()) / path).resolve()
    if not path.is_file():
        raise ConfigError(
            f"model file {path} does not exist (from arch {arch!r}); give the path of a .py "
            f"file that defines class {name}"
        )
    return UserArch(path, name)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pin(config: TrainConfig) -> TrainConfig:
    """`config` with a user model's file made absolute and the sha256 of its content recorded, as a new
    run must record them; a built-in arch is returned unchanged (its arch_sha256 cleared)."""
    if not is_user_arch(config.arch):
        return config if config.arch_sha256 is None else config.replace(arch_sha256=None)
    found = locate(config.arch)
    return config.replace(arch=found.arch, arch_sha256=file_sha256(found.path))


def file_change(config: TrainConfig) -> str | None:
    """Why a run's model file is not the one it was trained from (changed or gone), or None when it
    is the same (or the run has a built-in arch, or recorded no hash)."""
    if not is_user_arch(config.arch) or config.arch_sha256 is None:
        return None
    path = Path(config.arch.rpartition(":")[0])
    try:
        now = file_sha256(path)
    except OSError:
        return f"the model file {path} this run was trained from is gone"
    if now != config.arch_sha256:
        return (
            f"the model file {path} changed since this run was made (sha256 {config.arch_sha256[:12]} "
            f"then, {now[:12]} now)"
        )
    return None
