"""Commands that queue work and run it: submit, sweep, worker."""

from __future__ import annotations

import argparse

from engine.cli.cluster import add_ray_flags, ray_executor
from engine.cli.common import (
    Command,
    add_results_flag,
    add_train_flags,
    config_from_args,
    print_worker_hint,
    settings_from,
    split_values,
)
from engine.cli.numbers import real, whole
from engine.cli.sweep_search import add_search_flags, cmd_search, grid_args
from engine.config import TrainConfig
from engine.errors import UsageError
from engine.ml.threads import configure_threads
from engine.runs import jobs, sweeps
from engine.runs.claims import STALE_AFTER
from engine.runs.seeds import check_seeds, expand_seeds, with_seeds
from engine.runs.slots import plan_slots, run_slots
from engine.runs.store import Store
from engine.runs.worker import POLL_EVERY, run_worker
from engine.settings import Settings

# the sweepable training fields (the queue's list) and the type of one value (that of its default)
SWEEP_FIELDS = {name: type(getattr(TrainConfig(), name)) for name in sweeps.SWEEPABLE}


def _describe(config: TrainConfig) -> str:
    return " ".join(f"{name}={getattr(config, name)}" for name in SWEEP_FIELDS)


def cmd_submit(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    config, *more = expand_seeds(config_from_args(args), args.seeds)
    if more:
        return _submit_seeds(settings, [config, *more])
    store = Store(settings.results)
    run_id = sweeps.submit(store, config, download=settings.download)  # the same preflight as `train`
    ahead = jobs.queue_length(store) - 1
    print(
        f"queued run {run_id}: {config.arch} on {config.dataset}, {config.epochs} epoch(s)"
        f"{f'; {ahead} job(s) ahead of it' if ahead else ''}",
        flush=True,
    )
    print_worker_hint(store)
    print(store.run_dir(run_id), flush=True)
    return 0


def _submit_seeds(settings: Settings, configs: list[TrainConfig]) -> int:
    """`submit --seeds K`: the K runs are queued together as one sweep (all validated before any is queued)."""
    store = Store(settings.results)
    sweep_id, run_ids = sweeps.submit_sweep(store, configs, download=settings.download)
    for run_id, config in zip(run_ids, configs):
        print(f"queued run {run_id}: {config.arch} on {config.dataset}, {config.epochs} epoch(s), seed {config.seed}")
    print_worker_hint(store)
    print(
        f"queued {len(run_ids)} seeds of one config as sweep {sweep_id}; when they finish, "
        f"`python -m engine compare` tells their spread from a real difference",
        flush=True,
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.search != "grid" or args.resume:
        return cmd_search(args)  # random or TPE search: engine/cli/sweep_search.py
    grid_args(args)  # --momentum, --weight-decay: one value; --val-split: 0 unless set
    settings = settings_from(args)
    defaults = TrainConfig()
    lists = {
        name: (
            split_values("--" + name.replace("_", "-"), getattr(args, name), kind)
            if getattr(args, name) is not None
            else [getattr(defaults, name)]
        )
        for name, kind in SWEEP_FIELDS.items()
    }
    base = config_from_args(args, **{name: values[0] for name, values in lists.items()})
    # refuses a grid over --max-runs (seeds included) before building it
    grid = with_seeds(sweeps.sweep_grid(base, args.max_runs, check_seeds(args.seeds), **lists), args.seeds)
    store = Store(settings.results)
    # validates every config before queueing any
    plan = sweeps.plan_sweep(store, grid, reuse=args.reuse, download=settings.download)
    if args.dry_run:
        for i, p in enumerate(plan, start=1):
            print(f"{i:>3}. {_describe(p.config)}" + (f"  (reuses finished run {p.reuse})" if p.reuse else ""))
        reused = sum(p.reuse is not None for p in plan)
        print(f"dry run: {len(plan) - reused} run(s) would be queued" + (f", {reused} reused" if reused else ""))
        return 0
    sweep_id, run_ids = sweeps.submit_sweep(store, grid, reuse=args.reuse, download=settings.download)
    reused = 0
    for run_id, config in zip(run_ids, grid):
        if store.get_run(run_id).sweep_id == sweep_id:
            print(f"queued {run_id}  {_describe(config)}")
        else:
            reused += 1
            print(f"reused {run_id}  {_describe(config)}  (an identical finished run)")
    print_worker_hint(store)
    print(f"queued {len(run_ids) - reused} run(s) as sweep {sweep_id}" + (f", reused {reused}" if reused else ""))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    executor = ray_executor(args, settings)  # None: the local worker; connects to the cluster with --ray
    if executor is not None and args.slots != "1":
        executor.close()
        raise UsageError(
            "--slots is for the local worker; on a Ray cluster as many trials run at once as the "
            "cluster fits (--cpus-per-trial, --gpus-per-trial)"
        )
    if executor is None:
        try:
            plan = plan_slots(args.slots, args.threads, once=args.once)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if plan.slots > 1:  # a supervisor of ordinary one-slot workers
            passed = [
                "--results",
                str(settings.results),
                "--stale-after",
                str(args.stale_after),
                "--poll",
                str(args.poll),
                "--batch-delay",
                str(args.batch_delay),
            ]
            if args.idle_exit is not None:
                passed += ["--idle-exit", str(args.idle_exit)]
            return run_slots(plan, passed)
        configure_threads(plan.threads, settings)
    try:
        run_worker(
            settings,
            once=args.once,
            idle_exit=args.idle_exit,
            stale_after=args.stale_after,
            poll=args.poll,
            batch_delay=args.batch_delay,
            executor=executor,
        )
    finally:
        if executor is not None:
            executor.close()
    return 0


def _setup_submit(p: argparse.ArgumentParser) -> None:
    add_train_flags(p)
    add_results_flag(p)


def _setup_sweep(p: argparse.ArgumentParser) -> None:
    add_train_flags(p, multi=True)
    add_results_flag(p)
    p.add_argument("--dry-run", action="store_true", help="list the grid (validated) without queueing it")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="reuse finished runs with an identical config instead of training them again",
    )
    p.add_argument(
        "--max-runs",
        type=whole(1, 100_000),
        default=sweeps.MAX_SWEEP_RUNS,
        metavar="N",
        help=f"refuse a grid of more runs than this (default {sweeps.MAX_SWEEP_RUNS})",
    )
    add_search_flags(p)  # --search random|tpe, --trials, --prune, ... (engine/cli/sweep_search.py)


def _setup_worker(p: argparse.ArgumentParser) -> None:
    add_results_flag(p)
    p.add_argument("--once", action="store_true", help="run one job, then exit (at once when the queue is empty)")
    p.add_argument(
        "--idle-exit",
        type=real(0, 1e7),
        default=None,
        metavar="SECONDS",
        help="exit after this many seconds with nothing to do",
    )
    p.add_argument(
        "--stale-after",
        type=real(above=0, high=86400),
        default=STALE_AFTER,
        metavar="SECONDS",
        help=f"requeue running jobs without a heartbeat for this long (default {STALE_AFTER:g})",
    )
    p.add_argument(
        "--poll",
        type=real(above=0, high=3600),
        default=POLL_EVERY,
        metavar="SECONDS",
        help=f"how often an idle worker looks at the queue (default {POLL_EVERY:g})",
    )
    p.add_argument(
        "--batch-delay",
        type=real(0, 60),
        default=0.0,
        metavar="SECONDS",
        help="sleep this long after every training batch (slows runs down for demos and tests)",
    )
    add_ray_flags(p)
    p.add_argument(
        "--slots",
        default="1",
        metavar="N",
        help="train N runs at once, each in its own worker process with its share of the CPUs; "
        "'auto' (what `make run` uses): one per 2 CPUs, at most 4 (default 1)",
    )
    p.add_argument(
        "--threads",
        type=whole(1, 4096),
        default=None,
        metavar="N",
        help="torch threads per slot (default: the CPUs split evenly between the slots)",
    )


COMMANDS: dict[str, Command] = {
    "submit": (cmd_submit, _setup_submit),
    "sweep": (cmd_sweep, _setup_sweep),
    "worker": (cmd_worker, _setup_worker),
}
