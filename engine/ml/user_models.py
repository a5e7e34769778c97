"""Your own model: an nn.Module class from your own Python file, trained like a built-in one.

An arch "path/to/mynet.py:MyNet" names class MyNet in that file. The class is built with the
keyword arguments its constructor names among `in_channels`, `num_classes` and `image_size`
(an int for square images, else (height, width)), and must return one score per class.
A run records the file's absolute path and the sha256 of its content (`TrainConfig.arch_sha256`),
so a file changed since is noticed: said on the run's pages, refused when the run resumes.

Loading a model file runs its code. Lensboard imports only files the person running it names
(on the command line or in the Train page's path field) or puts in the models folder, never an
uploaded file. Listing the models folder reads the files' syntax only (ast): nothing runs until
a class is chosen.

Every problem is a one-line ConfigError (the arch is not FILE.py:Class, no such file) or
ModelError (the file does not import, no such class, not an nn.Module, the constructor wants
something else, the output has the wrong shape), raised before anything trains.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from engine.config import TrainConfig
from engine.errors import ModelError
from engine.model_files import file_change, locate

CONSTRUCTOR_ARGS = ("in_channels", "num_classes", "image_size")  # what Lensboard can pass a model class
MODULE_PREFIX = "lensboard_user_model_"  # sys.modules name of an imported model file: prefix + hash


def check_unchanged(config: TrainConfig, resuming: bool) -> None:
    """ModelError when a run's model file is not the one recorded: a run trains the code it recorded."""
    change = file_change(config)
    if change is None:
        return
    if resuming:
        raise ModelError(
            f"cannot resume: {change}, and a resumed run must train the same code; put the file "
            f"back as it was, or train the new version as a new run (retry)"
        )
    raise ModelError(f"{change} before it started; queue it again to train the file as it is now")


# ---------------------------------------------------------------- importing a file, finding the class

_loaded: dict[tuple[Path, str], ModuleType] = {}  # (path, sha256) -> the module: each version runs once
_lock = threading.Lock()  # the dashboard runs page scripts in threads


def load_module(path: Path) -> ModuleType:
    """Import the model file at `path` (absolute) under a name of its own, once per content version.

    Its folder is on sys.path while it runs, so it can import the files beside it. Any failure
    (a syntax error, a missing package, an exception, sys.exit) is a one-line ModelError.
    """
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    with _lock:
        if (path, digest) in _loaded:
            return _loaded[(path, digest)]
        name = MODULE_PREFIX + hashlib.sha256(f"{path}\0{digest}".encode()).hexdigest()[:16]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:  # a path without .py: checked before, so never here
            raise ModelError(f"model file {path} cannot be imported: Python sees no module loader for it")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and typing look their module up here
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            sys.modules.pop(name, None)
            raise ModelError(f"model file {path} does not import: {_one_line(exc)}") from exc
        finally:
            sys.path.remove(str(path.parent))
        _loaded[(path, digest)] = module
        return module


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def module_classes(module: ModuleType) -> list[str]:
    """Names of the nn.Module subclasses defined in `module` itself (not imported into it)."""
    return sorted(
        name
        for name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, nn.Module) and value.__module__ == module.__name__
    )


def load_class(arch: str) -> type[nn.Module]:
    """The nn.Module subclass an arch "FILE.py:Class" names, its file imported."""
    found = locate(arch)
    module = load_module(found.path)
    where = f"{found.path.name}"
    value = getattr(module, found.class_name, None)
    if value is None:
        there = module_classes(module)
        raise ModelError(
            f"no class {found.class_name!r} in {found.path}; "
            + (f"its nn.Module classes: {', '.join(there)}" if there else "it defines no nn.Module class")
        )
    if not inspect.isclass(value):
        raise ModelError(
            f"{found.class_name!r} in {where} is a {type(value).__name__}, not a class; name an nn.Module subclass"
        )
    if not issubclass(value, nn.Module):
        raise ModelError(f"class {found.class_name} in {where} is not an nn.Module; it must subclass torch.nn.Module")
    return value


def constructor_kwargs(cls: type, shape: tuple[int, int, int], classes: int) -> dict:
    """The keyword arguments `cls` names among in_channels, num_classes and image_size, with their values.

    A required parameter Lensboard cannot give is a ModelError naming it.
    """
    c, h, w = shape
    offered = {"in_channels": c, "num_classes": classes, "image_size": h if h == w else (h, w)}
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot read the constructor of {cls.__name__}: {_one_line(exc)}") from exc
    kwargs, missing = {}, []
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in offered and p.kind != p.POSITIONAL_ONLY:
            kwargs[name] = offered[name]
        elif p.default is p.empty:
            missing.append(name)
    if missing:
        raise ModelError(
            f"{cls.__name__}() needs {', '.join(missing)}, which Lensboard cannot give: it passes "
            f"only {', '.join(CONSTRUCTOR_ARGS)} (those the constructor names); give "
            f"{'them' if len(missing) > 1 else 'it'} a default value"
        )
    return kwargs


def build_user_model(arch: str, shape: tuple[int, int, int], classes: int) -> nn.Module:
    """Build the user's class for (C, H, W) images and `classes` classes, and check that it gives one
    score per class for a batch of those images."""
    cls = load_class(arch)
    kwargs = constructor_kwargs(cls, shape, classes)
    call = f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        model = cls(**kwargs)
    except Exception as exc:
        raise ModelError(f"{call} raised {_one_line(exc)}") from exc
    size = "x".join(str(d) for d in shape)
    try:
        out = _dry_run(model, shape)
    except Exception as exc:
        raise ModelError(f"{call} cannot take a batch of {size} images: {_one_line(exc)}") from exc
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"{call} returns a {type(out).__name__}; forward(x) must return one tensor of class "
            f"scores, (batch, {classes})"
        )
    if tuple(out.shape) != (2, classes):
        raise ModelError(
            f"{call} gives output of shape {tuple(out.shape)} for 2 images of {size}; it must be "
            f"(batch, num_classes) = (2, {classes}): one score per class of the dataset"
        )
    return model


@torch.no_grad()
def _dry_run(model: nn.Module, shape: tuple[int, int, int]) -> object:
    """model(x) on two blank images, in eval mode (batch norm takes one batch as it will at test time)."""
    was_training = model.training
    model.eval()
    try:
        return model(torch.zeros(2, *shape))
    finally:
        model.train(was_training)


# ---------------------------------------------------------------- the embedding


def last_linear(model: nn.Module, shape: tuple[int, int, int]) -> nn.Linear | None:
    """The nn.Linear that runs last in forward(x) (found by running it once), or None."""
    called: list[nn.Linear] = []
    hooks = [
        m.register_forward_hook(lambda m, _i, _o: called.append(m)) for m in model.modules() if isinstance(m, nn.Linear)
    ]
    try:
        device = next(model.parameters(), torch.zeros(0)).device
        with torch.no_grad():
            was_training = model.training
            model.eval()
            try:
                model(torch.zeros(2, *shape, device=device))
            finally:
                model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return called[-1] if called else None


class FeatureReader(nn.Module):
    """A user model with the `features(x)` every built-in model has: the model's own features()
    method when it has one, else the input of its last nn.Linear, read with a forward hook."""

    def __init__(self, model: nn.Module, shape: tuple[int, int, int]):
        super().__init__()
        self.model = model
        own = getattr(model, "features", None)  # a submodule named `features` (VGG style) is not the method
        self.own = callable(own) and not isinstance(own, nn.Module)
        self.last = None if self.own else last_linear(model, shape)
        if not self.own and self.last is None:
            raise ModelError(
                f"{type(model).__name__} has no features() method and no nn.Linear layer, so "
                f"Lensboard cannot tell which vector is its embedding; add a method features(x) "
                f"that returns it, (batch, D)"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.own:
            return self.model.features(x).flatten(1)  # type: ignore[operator]  # (B, D); checked callable
        seen: list[torch.Tensor] = []
        assert self.last is not None  # __init__ refuses a model with neither
        hook = self.last.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
        try:
            self.model(x)
        finally:
            hook.remove()
        return seen[-1].flatten(1)  # (B, D): what the last linear layer read


# ---------------------------------------------------------------- the models folder


def find_model_classes(folder: Path) -> list[str]:
    """Archs "FILE.py:Class" for the nn.Module classes defined at the top of each *.py file in `folder`,
    read from the files' syntax only: no file is run. A class counts when one of its bases is spelled
    ...Module or ...Sequential, or is such a class of the same file. Unreadable files are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        modules: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(_is_module_base(b, modules) for b in node.bases):
                modules.append(node.name)
        found += [f"{path.resolve()}:{name}" for name in modules]
    return found


def _is_module_base(base: ast.expr, known: list[str]) -> bool:
    name = base.attr if isinstance(base, ast.Attribute) else base.id if isinstance(base, ast.Name) else ""
    return name in ("Module", "Sequential") or name in known
