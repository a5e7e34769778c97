"""The command line: python -m engine COMMAND ...

Bad input prints one clear line on stderr and exits non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from engine.config import ConfigError, TrainConfig
from engine.data import DatasetError
from engine.models import ModelError
from engine.store import DB_NAME, RunNotFound, RunState, Store

USER_ERRORS = (ConfigError, DatasetError, ModelError, RunNotFound, FileNotFoundError)


class UserError(Exception):
    """A problem with what the user asked for; printed as one line."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (subcommand parsers inherit this)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


# ---------------------------------------------------------------- shared flags


def add_train_flags(p: argparse.ArgumentParser, multi: bool = False) -> None:
    """The training flags; with multi=True the sweepable ones take comma-separated lists."""
    d = TrainConfig()
    text = str if multi else None

    def sweepable(flag, kind, default, help):
        p.add_argument(flag, type=text or kind, default=None if multi else default,
                       help=help + (" (comma-separated values)" if multi else f" (default {default})"))

    sweepable("--dataset", str, d.dataset, "mnist_sample, mnist, fashion_mnist, cifar10 or folder:PATH")
    p.add_argument("--data-root", default=d.data_root, help=f"where datasets live (default {d.data_root})")
    sweepable("--arch", str, d.arch, "model architecture")
    sweepable("--epochs", int, d.epochs, "epochs, 1..1000")
    sweepable("--batch-size", int, d.batch_size, "batch size")
    sweepable("--lr", float, d.lr, "learning rate")
    sweepable("--optimizer", str, d.optimizer, "adam, sgd or adamw")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="weight decay")
    p.add_argument("--val-split", type=float, default=d.val_split, help="validation fraction, 0..0.5")
    sweepable("--seed", int, d.seed, "random seed")
    p.add_argument("--train-limit", type=int, default=None, help="train on the first N images (stratified)")
    p.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    p.add_argument("--pretrained", action="store_true", help="resnet18: start from ImageNet weights")


def add_results_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=None, help="results root (default $LENSBOARD_RESULTS or ./results)")


def config_from_args(args: argparse.Namespace, **overrides) -> TrainConfig:
    values = dict(
        dataset=args.dataset, data_root=args.data_root, arch=args.arch, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
        weight_decay=args.weight_decay, val_split=args.val_split, seed=args.seed,
        train_limit=args.train_limit, device=args.device, pretrained=args.pretrained,
    )
    values.update(overrides)
    return TrainConfig(**values)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}",
             f"train loss {row['train_loss']:.4f} acc {pct(row['train_acc'])}"]
    if "val_loss" in row:
        parts.append(f"val loss {row['val_loss']:.4f} acc {pct(row['val_acc'])}")
    parts.append(f"test loss {row['test_loss']:.4f} acc {pct(row['test_acc'])}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


class ProgressBar:
    """A one-line batch progress bar on stderr, redrawn in place."""

    def __init__(self, epochs: int, stream=sys.stderr, width: int = 30):
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


@contextlib.contextmanager
def stop_on_ctrl_c(stop: threading.Event):
    """The first Ctrl+C sets `stop` (the run ends cleanly after the current batch); a second one
    raises KeyboardInterrupt as usual. Outside the main thread, signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this batch (Ctrl+C again to stop now)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from engine.runner import run_training
    from engine.train import preflight

    config = config_from_args(args)
    preflight(config)
    store = Store(args.results)
    run_id = store.create_run(config, RunState.RUNNING)
    print(f"run {run_id}: {config.arch} on {config.dataset}, {config.epochs} epoch(s)", flush=True)
    stop = threading.Event()
    with stop_on_ctrl_c(stop):
        try:
            state, message = run_training(
                store, run_id, on_batch=ProgressBar(config.epochs), should_stop=stop.is_set,
                on_epoch=lambda row: print(epoch_line(row, config.epochs), flush=True))
        except KeyboardInterrupt:  # a second Ctrl+C: stop now, the run keeps its finished epochs
            state, message = RunState.CANCELLED, "interrupted by the user"
            store.set_state(run_id, state, message)
    if state != RunState.DONE:
        print(f"run {state.value}: {message}", file=sys.stderr)
    print(store.run_dir(run_id), flush=True)
    return 0 if state == RunState.DONE else 1


def cmd_list(args: argparse.Namespace) -> int:
    runs = Store(args.results).list_runs()
    if args.json:
        print(json.dumps([r.to_json() for r in runs], indent=2))
        return 0
    if not runs:
        print("no runs yet: `python -m engine train` starts one")
        return 0
    print(f"{'id':<28} {'state':<11} {'arch':<14} {'dataset':<14} {'ep':>5} {'bs':>5} {'lr':>8} {'test acc':>9}")
    for r in runs:
        print(f"{r.id:<28} {r.state.value:<11} {r.arch:<14} {r.dataset[:14]:<14} "
              f"{r.epoch:>2}/{r.epochs:<2} {r.config['batch_size']:>5} {r.config['lr']:>8g} {pct(r.final_test_acc):>9}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    root = args.results
    folder = Path(args.run).expanduser()
    if root is None and folder.is_dir() and (folder.parent.parent / DB_NAME).is_file():
        root = folder.parent.parent  # a run folder path names its results root: <root>/runs/<id>
    store = Store(root)
    run = store.resolve(args.run)
    info = run.to_json() | {"config": run.config, "metrics": store.metrics(run.id)}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"run {run.id}  [{run.state.value}]  {run.path}")
    if run.error:
        print(f"error: {run.error}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in run.config.items()))
    for row in info["metrics"]:
        print(epoch_line(row, run.epochs))
    return 0


def _setup_train(p):
    add_train_flags(p)
    add_results_flag(p)


def _setup_list(p):
    add_results_flag(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _setup_show(p):
    p.add_argument("run", help="a run id or its folder path")
    _setup_list(p)


# ---------------------------------------------------------------- jobs commands (worker and queue)


# ---------------------------------------------------------------- embeddings and search commands

from engine.cli_search import SEARCH_COMMANDS  # embed, tsne, search, retrieval-eval


# ---------------------------------------------------------------- the registry

# name -> (run, one-line help, flag setup)
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, Callable[[argparse.ArgumentParser], None]]] = {
    "train": (cmd_train, "train one run in the foreground", _setup_train),
    "list": (cmd_list, "list the runs and their state", _setup_list),
    "show": (cmd_show, "one run: state, config, metrics", _setup_show),
    **SEARCH_COMMANDS,
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m engine", description="Lensboard engine")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help, setup) in COMMANDS.items():
        setup(sub.add_parser(name, help=help, description=help))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = COMMANDS[args.command][0]
    try:
        return run(args)
    except (UserError, *USER_ERRORS) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
