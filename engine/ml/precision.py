"""Numeric precision of training and inference: fp32, or bf16 autocast where the hardware does it natively.

`auto` picks bf16 on CPUs with AVX512-BF16 or AMX (read from /proc/cpuinfo's flags) and on CUDA GPUs
that support bf16, fp32 everywhere else. Under bf16 autocast, matrix products and convolutions run in
bf16 while the weights, the optimiser and the loss stay fp32, so a run's accuracy stays within noise
of fp32 (benchmarks/precision_parity.py measures it) and its checkpoints are the same fp32 state.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import PRECISIONS

if TYPE_CHECKING:  # torch is imported where it is used: reading a CPU's flags needs none of it
    import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # instruction sets that compute bf16 natively


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first CPU listed in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


@lru_cache(maxsize=1)
def _this_cpu_flags() -> frozenset[str]:
    try:
        return frozenset(cpu_flags(Path("/proc/cpuinfo").read_text()))
    except OSError:  # not Linux: no way to know, so no native bf16
        return frozenset()


def cpu_has_native_bf16(flags: set[str] | frozenset[str] | None = None) -> bool:
    flags = _this_cpu_flags() if flags is None else flags
    return any(f in flags for f in CPU_BF16_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """True when `device` (a torch.device) computes bf16 in hardware."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_native_bf16()


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision a run uses: 'fp32' or 'bf16'. `auto` means bf16 where native, else fp32;
    an explicit choice is kept (bf16 without hardware support is correct, only slower)."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; valid: {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return requested


def why_auto(device: torch.device) -> str:
    """One line on what `auto` picks on `device` and why, for pages and logs."""
    if device.type == "cuda":
        return "bf16: this GPU computes bf16 natively" if native_bf16(device) else "fp32: this GPU has no native bf16"
    if cpu_has_native_bf16():
        found = [f for f in CPU_BF16_FLAGS if f in _this_cpu_flags()]
        return f"bf16: this CPU computes bf16 natively ({', '.join(found)})"
    return "fp32: this CPU has no native bf16 (AVX512-BF16 or AMX)"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """A context in which forward passes run at `precision` ('fp32' is a no-op)."""
    import torch

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def is_convolutional(model: torch.nn.Module) -> bool:
    from torch import nn

    return any(isinstance(m, nn.Conv2d) for m in model.modules())
