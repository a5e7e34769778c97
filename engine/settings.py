"""Settings: where results and data live and what the machine may do, resolved once.

The three entry points (the CLI, the worker, the Streamlit router) build one `Settings` from their
flags and the environment, then pass it down. This is the only module that reads `os.environ`;
importing any engine module changes no environment variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

RESULTS_ENV = "LENSBOARD_RESULTS"  # the results root (default ./results)
DATA_ENV = "LENSBOARD_DATA"  # where torchvision-layout datasets live (default ./data)
OFFLINE_ENV = "LENSBOARD_OFFLINE"  # 1: never try a download (tests, air-gapped machines)
NO_WORKER_ENV = "LENSBOARD_NO_WORKER"  # 1: the dashboard never starts a worker (page tests)
DEVICE_ENV = "LENSBOARD_DEVICE"  # the default device of new runs: auto, cpu or cuda
MODELS_ENV = "LENSBOARD_MODELS"  # the folder whose *.py model classes the Train page lists (default ./models)
READ_ONLY_ENV = "LENSBOARD_READ_ONLY"  # 1: the dashboard shares results; every control that writes is refused
RAY_ENV = "LENSBOARD_RAY"  # a Ray cluster's address: the worker the dashboard starts runs the queue there
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"  # how OpenMP's idle threads wait; the runtime reads it once, when torch loads
SPIN_COUNT_ENV = "GOMP_SPINCOUNT"  # GNU OpenMP: how many rounds an idle thread spins before it sleeps
PASSIVE = "PASSIVE"  # idle threads sleep instead of spinning for long (see engine.ml.threads)
SHORT_SPIN = "1000"  # about 10 µs: it bridges the gaps between a step's parallel regions, then yields the core

TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    results: Path  # the results root: lensboard.sqlite3 plus runs/<id>/
    data_root: Path  # where mnist/fashion_mnist/cifar10 files live (MNIST/raw, cifar-10-batches-py)
    offline: bool = False  # True: a missing dataset or weights file is an error, never a download
    device: str = "auto"  # default device for new runs: auto (CUDA when present), cpu or cuda
    start_worker: bool = True  # the dashboard starts a background worker when none serves the root
    models_dir: Path = Path("models")  # your own model files the Train page lists (*.py, read as syntax only)
    read_only: bool = False  # the dashboard only reads: no worker, no control that writes, a read-only registry
    ray: str | None = None  # a Ray cluster's address (HOST:PORT or auto) for the worker the dashboard starts
    wait_policy: str = PASSIVE  # OMP_WAIT_POLICY for torch's idle threads: the user's value, else PASSIVE
    # GOMP_SPINCOUNT: the user's value; else SHORT_SPIN, unless the user chose OMP_WAIT_POLICY (then the runtime's)
    spin_count: str | None = SHORT_SPIN

    @property
    def download(self) -> bool:
        """Whether a missing dataset or weights file may be downloaded."""
        return not self.offline

    def with_results(self, results: str | os.PathLike | None) -> Settings:
        """The same settings for another results root (None keeps this one)."""
        return self if results is None else replace(self, results=resolve_path(results))

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        results: str | os.PathLike | None = None,
        data_root: str | os.PathLike | None = None,
    ) -> Settings:
        """Flags win over the environment, which wins over the defaults (./results, ./data)."""
        env = os.environ if environ is None else environ
        wait = wait_variables(env)
        return cls(
            results=resolve_path(results or env.get(RESULTS_ENV) or "results"),
            data_root=resolve_path(data_root or env.get(DATA_ENV) or "data"),
            offline=env.get(OFFLINE_ENV, "").strip().lower() in TRUE,
            device=env.get(DEVICE_ENV, "").strip() or "auto",
            start_worker=env.get(NO_WORKER_ENV, "").strip() in ("", "0"),
            models_dir=resolve_path(env.get(MODELS_ENV) or "models"),
            read_only=env.get(READ_ONLY_ENV, "").strip().lower() in TRUE,
            ray=env.get(RAY_ENV, "").strip() or None,
            wait_policy=wait[WAIT_POLICY_ENV],
            spin_count=wait.get(SPIN_COUNT_ENV),
        )

    def wait_variables(self) -> dict[str, str]:
        """The OpenMP variables to export for these settings (see `wait_variables`)."""
        return {WAIT_POLICY_ENV: self.wait_policy, **({SPIN_COUNT_ENV: self.spin_count} if self.spin_count else {})}


def wait_variables(env: Mapping[str, str]) -> dict[str, str]:
    """OMP_WAIT_POLICY and GOMP_SPINCOUNT as a process exports them before torch loads: the user's values
    where set, else PASSIVE with a short spin (SHORT_SPIN). A user who chose only OMP_WAIT_POLICY gets
    that policy's own spin; one who chose only GOMP_SPINCOUNT gets that spin (it overrides the policy's)."""
    policy, spin = env.get(WAIT_POLICY_ENV, "").strip(), env.get(SPIN_COUNT_ENV, "").strip()
    out = {WAIT_POLICY_ENV: policy or PASSIVE}
    if spin or not policy:
        out[SPIN_COUNT_ENV] = spin or SHORT_SPIN
    return out


def resolve_path(path: str | os.PathLike) -> Path:
    """Absolute, with ~ expanded: a worker started elsewhere finds the same files."""
    return Path(path).expanduser().resolve()


def child_environment(project: Path) -> dict[str, str]:
    """The environment of a worker the dashboard spawns: the parent's, with the project importable."""
    paths = [str(project), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))


def apply_wait_policy(settings: Settings | None = None) -> str:
    """Export OMP_WAIT_POLICY and GOMP_SPINCOUNT for the OpenMP runtime torch is about to load (it reads
    them once, then): `settings`' (an entry point passes its own), else what the environment says
    (`wait_variables`). Called at entry points only (engine.cli.main, engine.ml.threads.configure_threads);
    returns the policy in force, in words."""
    os.environ.update(wait_variables(os.environ) if settings is None else settings.wait_variables())
    return wait_policy_in_force()


def wait_policy_in_force() -> str:
    """What OMP_WAIT_POLICY and GOMP_SPINCOUNT say in this process, for messages: "PASSIVE, spin 1000"."""
    policy = os.environ.get(WAIT_POLICY_ENV, "unset (spin, then sleep)")
    spin = os.environ.get(SPIN_COUNT_ENV)
    return f"{policy}, spin {spin}" if spin else policy
