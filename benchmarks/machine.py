"""The line every benchmark prints first: the machine its numbers were measured on."""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(*packages: str) -> str:
    """Platform, CPU, core count, Python and torch (threads, OpenMP wait policy), plus `packages`' versions."""
    import torch

    parts = [
        platform.platform(),
        cpu_name(),
        f"{os.cpu_count()} CPUs",
        f"python {platform.python_version()}",
        f"torch {torch.__version__} ({torch.get_num_threads()} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')})",
    ]
    for name in packages:
        module = importlib.import_module(name)
        parts.append(f"{name} {getattr(module, '__version__', '?')}")
    return " | ".join(parts)
