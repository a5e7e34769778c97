"""What the commands share: one-line usage errors, the training flags, settings from flags, printers."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import NoReturn, TextIO

from engine.config import PRECISIONS, TrainConfig
from engine.errors import UsageError
from engine.runs.records import RunRecord
from engine.runs.store import Store, root_of_run_folder
from engine.runs.workers import worker_status
from engine.settings import Settings

# name -> (run, flag setup): what each command module exposes as COMMANDS
Command = tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (subcommand parsers inherit this)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


# ---------------------------------------------------------------- settings and runs from flags


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings of this command: --results and --data-root (where the command has them) over the
    environment over the defaults."""
    return Settings.from_env(results=getattr(args, "results", None), data_root=getattr(args, "data_root", None))


def open_store(args: argparse.Namespace) -> Store:
    return Store(settings_from(args).results)


def store_of_run(args: argparse.Namespace) -> Store:
    """The store args.run lives in: the root of a run folder, unless --results names another."""
    root = None if args.results else root_of_run_folder(args.run)
    return Store(root or settings_from(args).results)


def open_run(args: argparse.Namespace) -> tuple[Store, RunRecord]:
    """The store and the run named by args.run: an id, a unique prefix of one, or a run folder, whose
    root is used unless --results names another."""
    store = store_of_run(args)
    return store, store.resolve(args.run)


def add_results_flag(p: argparse.ArgumentParser, json: bool = False) -> None:
    p.add_argument("--results", default=None, help="results root (default $LENSBOARD_RESULTS or ./results)")
    if json:
        p.add_argument("--json", action="store_true", help="machine-readable output")


def add_run_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run id, a unique prefix of one, or its folder path")


# ---------------------------------------------------------------- training flags


def add_train_flags(p: argparse.ArgumentParser, multi: bool = False) -> None:
    """The training flags; with multi=True the sweepable ones take comma-separated lists."""
    d = TrainConfig()
    text = str if multi else None

    def sweepable(flag: str, kind: type, default: object, help: str) -> None:
        p.add_argument(
            flag,
            type=text or kind,
            default=None if multi else default,
            help=help + (" (comma-separated values)" if multi else f" (default {default})"),
        )

    sweepable("--dataset", str, d.dataset, "mnist_sample, mnist, fashion_mnist, cifar10 or folder:PATH")
    p.add_argument("--data-root", default=None, help="where datasets live (default $LENSBOARD_DATA or ./data)")
    sweepable("--arch", str, d.arch, "a built-in architecture, or FILE.py:Class for your own nn.Module")
    sweepable("--epochs", int, d.epochs, "epochs, 1..1000")
    sweepable("--batch-size", int, d.batch_size, "batch size")
    sweepable("--lr", float, d.lr, "learning rate")
    sweepable("--optimizer", str, d.optimizer, "adam, sgd or adamw")
    # A sweep reads these as text: one value in a grid, a range LOW:HIGH[:log] or a list in a search.
    p.add_argument("--momentum", type=text or float, default=None if multi else d.momentum, help="SGD momentum")
    p.add_argument("--weight-decay", type=text or float, default=None if multi else d.weight_decay, help="weight decay")
    p.add_argument(
        "--val-split",
        type=float,
        default=None if multi else d.val_split,
        help="validation fraction, 0..0.5" + (" (a search: 0.1 unless set)" if multi else ""),
    )
    sweepable("--seed", int, d.seed, "random seed")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="K",
        help="repeat each config with K seeds, SEED..SEED+K-1, 1..100 (default 1)",
    )
    p.add_argument("--train-limit", type=int, default=None, help="train on the first N images (stratified)")
    p.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--precision",
        default=d.precision,
        choices=list(PRECISIONS),
        help="auto: bf16 autocast where the CPU (AVX512-BF16, AMX) or GPU does bf16 natively, "
        f"else fp32 (default {d.precision})",
    )
    p.add_argument("--pretrained", action="store_true", help="resnet18: start from ImageNet weights")


def config_from_args(args: argparse.Namespace, **overrides: object) -> TrainConfig:
    values = dict(
        # Absolute, so a worker started elsewhere finds the same files (and --reuse matches the dashboard's).
        dataset=args.dataset,
        data_root=str(settings_from(args).data_root),
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        val_split=args.val_split,
        seed=args.seed,
        train_limit=args.train_limit,
        device=args.device,
        pretrained=args.pretrained,
        precision=args.precision,
    )
    values.update(overrides)
    return TrainConfig(**values)


def split_values(flag: str, raw: str, kind: type) -> list:
    values = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            raise UsageError(f"{flag}: empty value in {raw!r}; give comma-separated values, e.g. {flag} 0.1,0.01")
        try:
            values.append(kind(part))
        except ValueError:
            raise UsageError(f"{flag}: {part!r} is not {'an integer' if kind is int else 'a number'}") from None
    return values


# ---------------------------------------------------------------- printing


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4f} acc {pct(row['train_acc'])}"]
    if "val_loss" in row:
        parts.append(f"val loss {row['val_loss']:.4f} acc {pct(row['val_acc'])}")
    parts.append(f"test loss {row['test_loss']:.4f} acc {pct(row['test_acc'])}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


def worker_hint(store: Store) -> str | None:
    if worker_status(store).alive:
        return None
    return "note: no worker is running, so nothing runs yet: start one with `python -m engine worker` or `make worker`"


def print_worker_hint(store: Store) -> None:
    hint = worker_hint(store)
    if hint:
        print(hint, file=sys.stderr)


class ProgressBar:
    """A one-line batch progress bar on stderr, redrawn in place; silent when stderr is not a terminal."""

    def __init__(self, epochs: int, stream: TextIO = sys.stderr, width: int = 30):
        self.epochs, self.stream, self.width = epochs, stream, width

    def __call__(self, epoch: int, batch: int, batches: int) -> None:
        if not self.stream.isatty():
            return  # a redrawn bar is noise in a log file
        if batch != batches and batch % max(1, batches // 50):
            return
        filled = round(self.width * batch / batches)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r  epoch {epoch}/{self.epochs} [{bar}] {batch}/{batches}")
        if batch == batches:
            self.stream.write("\r" + " " * (self.width + 40) + "\r")
        self.stream.flush()


def stage_printer(label: str, stream: TextIO = sys.stderr) -> Callable[[int, int, str], None]:
    """A (done, total, stage) progress line on stderr for long computations; silent when not a terminal."""
    last = [-1]

    def show(done: int, total: int, stage: str = "") -> None:
        if not stream.isatty():
            return
        percent = int(100 * done / max(total, 1))
        if percent != last[0]:
            last[0] = percent
            stream.write(f"\r  {label}: {stage} {percent:3d}%")
            if done >= total:
                stream.write("\r" + " " * 70 + "\r")
            stream.flush()

    return show


@contextlib.contextmanager
def stop_on_ctrl_c(stop: threading.Event) -> Iterator[None]:
    """The first Ctrl+C sets `stop` (the run ends cleanly after the current batch); a second one
    raises KeyboardInterrupt as usual. Outside the main thread, signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    # Only flags: printing here could re-enter a write to the same stream.
    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
