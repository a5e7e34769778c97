"""`train`: one run in the foreground, printing a line per epoch; Ctrl+C stops it after the current batch."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading

from engine.cli.common import (Command, ProgressBar, add_results_flag, add_train_flags, config_from_args,
                               epoch_line, settings_from, stop_on_ctrl_c)
from engine.ml.train import preflight
from engine.model_files import pin
from engine.runs.procs import mark_foreground
from engine.runs.runner import run_training
from engine.runs.store import RunState, Store


def cmd_train(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    config = pin(config_from_args(args))  # your own model: absolute path and content hash
    preflight(config, settings.download)
    store = Store(settings.results)
    run_id = store.create_run(config, RunState.RUNNING)
    paths = store.paths(run_id)
    # If this process dies (killed, terminal closed), a worker sees the file and resumes the run.
    mark_foreground(paths.dir)
    print(f"run {run_id}: {config.arch} on {config.dataset}, {config.epochs} epoch(s)", flush=True)
    stop = threading.Event()
    with stop_on_ctrl_c(stop):
        try:
            state, message = run_training(
                store, run_id, on_batch=ProgressBar(config.epochs), should_stop=stop.is_set,
                on_epoch=lambda row: print(epoch_line(row, config.epochs), flush=True), download=settings.download)
        except KeyboardInterrupt:  # a second Ctrl+C: stop now, the run keeps its finished epochs
            state, message = RunState.CANCELLED, "interrupted by the user"
            store.set_state(run_id, state, message)
    with contextlib.suppress(OSError):
        paths.foreground.unlink()
    if state != RunState.DONE:
        print(f"run {state.value}: {message}", file=sys.stderr)
    print(paths.dir, flush=True)
    return 0 if state == RunState.DONE else 1


def _setup_train(p: argparse.ArgumentParser) -> None:
    add_train_flags(p)
    add_results_flag(p)


COMMANDS: dict[str, Command] = {"train": (cmd_train, _setup_train)}
