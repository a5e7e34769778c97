"""`train`: one run in the foreground, printing a line per epoch; Ctrl+C stops it after the current batch."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading

from engine.cli.common import (
    Command,
    ProgressBar,
    add_results_flag,
    add_train_flags,
    config_from_args,
    epoch_line,
    settings_from,
    stop_on_ctrl_c,
)
from engine.config import TrainConfig
from engine.ml.train import preflight
from engine.model_files import pin
from engine.runs.procs import mark_foreground
from engine.runs.records import RunState
from engine.runs.runner import run_training
from engine.runs.seeds import expand_seeds
from engine.runs.store import Store
from engine.settings import Settings


def cmd_train(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    # your own model: absolute path and content hash; --seeds K: the config K times, seeds SEED..SEED+K-1
    configs = expand_seeds(pin(config_from_args(args)), args.seeds)
    states = []
    for i, config in enumerate(configs, start=1):  # one after the other; a Ctrl+C stops the rest
        if len(configs) > 1:
            print(f"seed {config.seed} ({i} of {len(configs)})", flush=True)
        states.append(_train_one(settings, config))
        if states[-1] == RunState.CANCELLED:
            break
    return 0 if all(state == RunState.DONE for state in states) and len(states) == len(configs) else 1


def _train_one(settings: Settings, config: TrainConfig) -> RunState:
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
                store,
                run_id,
                on_batch=ProgressBar(config.epochs),
                should_stop=stop.is_set,
                on_epoch=lambda row: print(epoch_line(row, config.epochs), flush=True),
                download=settings.download,
            )
        except KeyboardInterrupt:  # a second Ctrl+C: stop now, the run keeps its finished epochs
            state, message = RunState.CANCELLED, "interrupted by the user"
            store.set_state(run_id, state, message)
    with contextlib.suppress(OSError):
        paths.foreground.unlink()
    if state != RunState.DONE:
        print(f"run {state.value}: {message}", file=sys.stderr)
    print(paths.dir, flush=True)
    return state


def _setup_train(p: argparse.ArgumentParser) -> None:
    add_train_flags(p)
    add_results_flag(p)


COMMANDS: dict[str, Command] = {"train": (cmd_train, _setup_train)}
