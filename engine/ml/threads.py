"""How many threads torch uses and how its idle threads wait, decided once at an entry point.

The CLI exports the wait policy before a command's module imports torch (engine.cli.main); the worker
(and each worker a `--slots` supervisor starts) sizes its pool with `configure_threads`, which the tests
and the benchmarks call before torch is imported. Importing a module changes nothing; the environment is
written only by engine.settings.

What was measured (benchmarks/wait_policy.py: simple_cnn's epoch, 2 threads, a 2-core x86 CPU):
- OpenMP threads that spin long while they wait (GNU OpenMP's default, ~300,000 rounds, a few ms) are
  fast on a quiet machine (4.0 s) but collapse when other processes want the cores (42.5 s against
  17.9 s with three competing processes).
- Threads that sleep at once (OMP_WAIT_POLICY=PASSIVE, no spin) never collapse, but on a quiet machine
  every parallel region pays a wake-up (5.5 s).
- A short spin, then sleep (GOMP_SPINCOUNT=1000, about 10 µs) has both: 3.7 s quiet, 11.4 s with one
  competing process (11.8 s sleeping at once), 20.3 s with three. That is the default
  (engine.settings.wait_variables) unless the user set either variable.
- Tiny work gains nothing from a second thread (basic_nn at batch 64), so `threads_for_work` gives it
  one thread: then nothing waits at all.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.settings import Settings, apply_wait_policy, wait_policy_in_force

if TYPE_CHECKING:  # torch is imported late: the wait policy must be set before it loads
    import torch

# Below this many multiply-adds in one batch's forward pass, a second thread costs more in
# hand-offs than it saves (basic_nn at batch 64 does ~7M, simple_cnn ~77M on 28x28 images).
PARALLEL_MIN_MACS = 20_000_000


@dataclass(frozen=True)
class ThreadConfig:
    threads: int  # torch's intra-op threads in this process
    wait_policy: str  # what OpenMP's idle threads do: PASSIVE (sleep) or the user's OMP_WAIT_POLICY
    wait_policy_applied: bool  # False when torch was imported before: the runtime keeps what it read then


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; a container's cpuset shows here)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_cpus(cpus: object, what: str = "threads") -> int:
    if not isinstance(cpus, int) or isinstance(cpus, bool) or cpus < 1:
        raise ValueError(f"{what} must be a whole number >= 1, got {cpus!r}")
    return cpus


def configure_threads(cpus: int | None = None, settings: Settings | None = None) -> ThreadConfig:
    """Size torch's thread pool to `cpus` (default: every CPU this process may use) and make idle
    OpenMP threads wait as `settings` say (an entry point passes its own); without them, as the
    environment says, else they spin briefly and then sleep (engine.settings.wait_variables).

    Call it at an entry point before torch is imported: the OpenMP runtime reads its wait policy
    once, when torch loads. Called later it still sets the thread count, and says the policy was
    not applied.
    """
    threads = available_cpus() if cpus is None else check_cpus(cpus)
    applied = "torch" not in sys.modules
    if applied:
        apply_wait_policy(settings)
    import torch

    torch.set_num_threads(threads)
    return ThreadConfig(threads, wait_policy_in_force(), applied)


def threads_for_work(macs_per_batch: float, budget: int) -> int:
    """How many of `budget` threads a training step with this much work should use."""
    return 1 if macs_per_batch < PARALLEL_MIN_MACS else max(1, budget)


def macs_per_sample(model: torch.nn.Module, shape: tuple[int, int, int]) -> int:
    """Multiply-adds of one forward pass of one (C, H, W) image through the model's Conv2d and Linear
    layers (the rest is small beside them), counted with forward hooks on a dummy input."""
    import torch
    from torch import nn

    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output[0].numel() * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.inference_mode():
            model(torch.zeros(1, *shape, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


@contextlib.contextmanager
def limited_threads(threads: int) -> Iterator[None]:
    """Use at most `threads` torch threads inside the block, then restore the count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(threads, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
