"""The `worker` command's Ray flags: --ray ADDRESS, --cpus-per-trial, --gpus-per-trial."""

from __future__ import annotations

import argparse

from engine.errors import UsageError
from engine.runs.ray_executor import RayExecutor
from engine.runs.ray_fit import TrialSpec
from engine.settings import Settings


def add_ray_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run the queue on a Ray cluster: its head's HOST:PORT (as `ray start --head` prints it), "
        "or auto for the cluster started on this machine",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=float,
        default=None,
        metavar="N",
        help="with --ray: CPUs each trial reserves; its torch threads follow (default 1)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        metavar="G",
        help="with --ray: GPUs each trial reserves (default 0)",
    )


def ray_executor(args: argparse.Namespace, settings: Settings) -> RayExecutor | None:
    """A connected RayExecutor when --ray was given, else None (the local worker); one clear line when
    the flags or the cluster cannot be used."""
    if args.ray is None:
        given = [
            f for f in ("--cpus-per-trial", "--gpus-per-trial") if getattr(args, f[2:].replace("-", "_")) is not None
        ]
        if given:
            raise UsageError(f"{' and '.join(given)} only apply to a Ray cluster; add --ray ADDRESS")
        return None
    cpus = 1.0 if args.cpus_per_trial is None else args.cpus_per_trial
    gpus = 0.0 if args.gpus_per_trial is None else args.gpus_per_trial
    if cpus <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {cpus:g}")
    if gpus < 0:
        raise UsageError(f"--gpus-per-trial must be >= 0, got {gpus:g}")
    executor = RayExecutor(args.ray, TrialSpec(cpus, gpus), settings.results)
    executor.connect()
    return executor
