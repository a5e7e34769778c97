"""The thread policy: set at entry points by configure_threads, never by importing the engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.ml import threads
from engine.ml.models import build_model
from engine.ml.threads import configure_threads, limited_threads, macs_per_sample, threads_for_work

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(clean, PYTHONPATH=str(ROOT), **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_the_engine_changes_no_environment_variable():
    assert (
        python("import os, engine, engine.ml.train, engine.runs.worker; print(os.environ.get('OMP_WAIT_POLICY'))")
        == "None"
    )


def test_configure_threads_before_torch_makes_idle_threads_spin_briefly_then_sleep_and_sizes_the_pool():
    out = python(
        "from engine.ml.threads import configure_threads; c = configure_threads(1); import os, torch; "
        "print(c.threads, c.wait_policy, c.wait_policy_applied, os.environ['OMP_WAIT_POLICY'], "
        "os.environ['GOMP_SPINCOUNT'], torch.get_num_threads())"
    )
    assert out == "1 PASSIVE, spin 1000 True PASSIVE 1000 1"


def test_a_wait_policy_the_user_chose_is_kept():
    out = python(
        "from engine.ml.threads import configure_threads; print(configure_threads(1).wait_policy)",
        OMP_WAIT_POLICY="ACTIVE",
    )
    assert out == "ACTIVE"  # and no spin count of ours: the runtime's own for that policy


def test_a_spin_count_the_user_chose_is_kept():
    out = python(
        "from engine.ml.threads import configure_threads; print(configure_threads(1).wait_policy)",
        GOMP_SPINCOUNT="50000",
    )
    assert out == "PASSIVE, spin 50000"


def test_configure_threads_after_torch_sets_the_count_and_says_the_policy_came_too_late():
    before = torch.get_num_threads()
    try:
        config = configure_threads(1)
        assert config.threads == 1 and torch.get_num_threads() == 1 and not config.wait_policy_applied
        assert configure_threads().threads == threads.available_cpus()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_a_thread_count_must_be_a_whole_number_of_at_least_one(bad):
    with pytest.raises(ValueError, match="threads must be a whole number >= 1"):
        configure_threads(bad)


def test_tiny_batches_get_one_thread_and_convolutional_ones_the_whole_budget():
    mlp, cnn = build_model("basic_nn", (1, 28, 28), 10), build_model("simple_cnn", (1, 28, 28), 10)
    assert macs_per_sample(mlp, (1, 28, 28)) == 784 * 128 + 128 * 64 + 64 * 10
    # conv 1->16 at 28x28 (9 taps), conv 16->32 at 14x14 (144 taps), fc 1568->128, fc 128->10
    assert macs_per_sample(cnn, (1, 28, 28)) == 28 * 28 * 16 * 9 + 14 * 14 * 32 * 144 + 1568 * 128 + 128 * 10
    assert threads_for_work(macs_per_sample(mlp, (1, 28, 28)) * 64, 4) == 1
    assert threads_for_work(macs_per_sample(cnn, (1, 28, 28)) * 64, 4) == 4
    assert threads_for_work(macs_per_sample(mlp, (1, 28, 28)) * 1024, 4) == 4
    assert mlp.training  # counting left the model as it was


def test_limited_threads_lowers_the_count_inside_the_block_and_restores_it():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with limited_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with limited_threads(8):  # never more than the budget
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
