"""The command line: python -m engine COMMAND ...

Each command lives in a module of this package; only the module of the command being run is
imported, so the commands that only read or change the registry (list, show, cancel, retry, delete,
sweep-report) never import torch and answer at once. Bad input prints one clear line on stderr and
exits 2, never a traceback: every error meant for the user is a LensboardError, caught here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys

from engine.cli.common import Command, Parser
from engine.errors import LensboardError
from engine.runs.database import is_busy
from engine.settings import Settings, apply_wait_policy

# name -> (the module that implements it, one-line help), in the order `--help` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("engine.cli.train", "train one run in the foreground"),
    "list": ("engine.cli.runs", "list the runs and their state"),
    "show": ("engine.cli.runs", "one run: state, config, metrics"),
    "embed": ("engine.cli.search", "compute a run's embeddings (train = database, test = queries)"),
    "tsne": ("engine.cli.search", "a t-SNE (or PCA) map of a run's test embeddings, cached"),
    "search": ("engine.cli.search", "the top-K most similar train images for a query"),
    "retrieval-eval": ("engine.cli.search", "precision@K, recall@K, mAP@K and 1-NN accuracy over the test set"),
    "compare": (
        "engine.cli.compare",
        "groups of runs (same config, several seeds): mean, spread, and whether a difference is beyond seed noise",
    ),
    "submit": ("engine.cli.queue", "queue one training run for the worker"),
    "sweep": (
        "engine.cli.queue",
        "queue a grid of runs (comma lists), or a random or TPE search (ranges), as one sweep",
    ),
    "worker": ("engine.cli.queue", "run queued jobs in this process until stopped"),
    "cancel": ("engine.cli.runs", "cancel a queued or running run"),
    "retry": ("engine.cli.runs", "queue a run's config again as a new run"),
    "delete": ("engine.cli.delete", "delete a run and its folder (a queued or running run is cancelled first)"),
    "sweep-report": (
        "engine.cli.sweep_report",
        "what a sweep learned: trials, best, importance, epochs; early-stopping replay",
    ),
}

# commands that compute with torch: OpenMP's wait policy (engine.ml.threads) is exported before their module
# imports torch, which reads it once; `worker` also sizes torch's pool for its slot (engine.cli.queue)
THREADED_COMMANDS = ("train", "embed", "tsne", "search", "retrieval-eval", "worker")


def load(name: str) -> Command:
    """The (run, flag setup) of command `name`, importing its module only now."""
    return importlib.import_module(COMMANDS[name][0]).COMMANDS[name]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command's flags are set up (the others' modules stay unimported)."""
    parser = Parser(prog="python -m engine", description="Lensboard engine")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        if only is None or name == only:
            load(name)[1](p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in THREADED_COMMANDS:
        apply_wait_policy(Settings.from_env())
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        return load(args.command)[0](args)
    except (LensboardError, FileNotFoundError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as exc:
        if not is_busy(exc):
            raise
        print(
            "error: the results database is locked by another process (for longer than its busy timeout); "
            "try again in a moment",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head` closed our stdout: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1


if __name__ == "__main__":
    sys.exit(main())
