"""`worker --slots N`: N ordinary workers, each with its share of the CPUs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.config import TrainConfig
from engine.runs import jobs, sweeps
from engine.runs.records import RunState
from engine.runs.slots import MAX_SLOTS, auto_slots, plan_slots, slot_environment
from engine.runs.store import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cpus, slots", [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (64, 4)])
def test_auto_gives_one_slot_per_two_cpus_from_one_up_to_four(cpus, slots):
    assert auto_slots(cpus) == slots
    assert plan_slots("auto", cpus=cpus).slots == slots


def test_the_cpus_are_split_evenly_between_the_slots_unless_threads_are_given():
    assert plan_slots("2", cpus=8).threads == 4
    assert plan_slots(3, cpus=2).threads == 1  # at least one each
    assert plan_slots("2", threads=3, cpus=8).threads == 3
    assert plan_slots("auto", once=True, cpus=8).slots == 1
    assert plan_slots("auto", cpus=8).threads == 2


@pytest.mark.parametrize("slots", ["0", "-1", "two", "1.5", str(MAX_SLOTS + 1)])
def test_a_bad_slot_count_names_what_is_allowed(slots):
    with pytest.raises(ValueError, match=f"--slots must be 'auto' or a whole number from 1 to {MAX_SLOTS}"):
        plan_slots(slots, cpus=2)


def test_once_cannot_be_combined_with_several_slots_and_threads_must_be_positive():
    with pytest.raises(ValueError, match="--once"):
        plan_slots("2", once=True, cpus=2)
    with pytest.raises(ValueError, match="--threads must be a whole number >= 1"):
        plan_slots("1", threads=0, cpus=2)


def test_the_worker_command_rejects_bad_slots_in_one_line(tmp_path, capsys):
    assert main(["worker", "--results", str(tmp_path), "--slots", "zero"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --slots must be 'auto' or a whole number")


def test_a_slot_gets_its_thread_count_and_a_short_spin_before_sleeping_before_torch_loads():
    env = slot_environment({"PATH": "/bin"}, 3)
    assert env["OMP_NUM_THREADS"] == "3" and env["OMP_WAIT_POLICY"] == "PASSIVE" and env["GOMP_SPINCOUNT"] == "1000"
    chosen = slot_environment({"OMP_WAIT_POLICY": "ACTIVE"}, 1)
    assert chosen["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in chosen


def test_two_slots_train_queued_runs_at_once_in_two_worker_processes(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    config = TrainConfig(arch="basic_nn", epochs=1, train_limit=200, batch_size=50)
    _, run_ids = sweeps.submit_sweep(store, sweeps.sweep_grid(config, seed=[0, 1, 2, 3]))
    env = {k: v for k, v in os.environ.items() if k != "LENSBOARD_RESULTS"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "worker",
            "--results",
            str(root),
            "--slots",
            "2",
            "--idle-exit",
            "3",
            "--poll",
            "0.1",
            "--batch-delay",
            "0.3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(env, PYTHONPATH=str(ROOT), LENSBOARD_OFFLINE="1"),
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "started 2 worker slot(s) with" in proc.stdout
    assert all(store.get_run(r).state == RunState.DONE for r in run_ids)
    all_jobs = [j for r in run_ids for j in jobs.jobs_for_run(store, r)]
    assert all(j.attempts == 1 for j in all_jobs)
    assert len({j.worker for j in all_jobs}) == 2  # both slots trained
    store.close()
