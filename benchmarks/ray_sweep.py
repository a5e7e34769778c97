"""Ray sweep: an 8-run basic_nn sweep on mnist_sample, the local worker against a Ray cluster on this machine.

Both serve the same 8 queued runs (learning rate 1e-3, 3e-3 x batch size 32, 64 x seed 0, 1; the course's
5 epochs of mnist_sample's 4,000 training images each) from a fresh results root:

- local: the worker as `python -m engine worker` runs it, one job at a time, torch on every core (its
  default); and the same with torch on one thread, as each Ray trial has;
- ray: `worker --ray` on a one-node Ray cluster with 2 CPUs (`ray start --head --num-cpus 2`), so 2
  single-CPU trials at once, each a Ray task whose epochs stream back into the run folder.

Wall time counts from the worker starting to serve to the last run done; the local worker is warm (the
dataset already loaded), the cluster is up before (as it would be) and joining it is shown apart. Ray's
overhead per trial is the mean of (job time - its epochs' time) under Ray minus the same under the
one-thread local worker: a Ray worker process to start (and torch to import and the dataset to load
there, once per process), the config and checkpoint sent, every epoch's checkpoint streamed back.

Then, for the README's paper estimate of the CIFAR-10 assignment sweep on a cluster, one epoch of
cifar10_cnn (the assignment's model and settings: batch 64, Adam 1e-3) on one CPU thread, measured on
5,000 CIFAR-10-shaped images and scaled to CIFAR-10's 50,000 train / 10,000 test.

    python benchmarks/ray_sweep.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import torch  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from engine.config import TrainConfig  # noqa: E402
from engine.ml.data import load_dataset  # noqa: E402
from engine.ml.train import fit  # noqa: E402
from engine.runs import jobs  # noqa: E402
from engine.runs.ray_executor import RayExecutor  # noqa: E402
from engine.runs.ray_fit import TrialSpec  # noqa: E402
from engine.runs.records import RunState  # noqa: E402
from engine.runs.store import Store  # noqa: E402
from engine.runs.worker import Worker  # noqa: E402
from tests.disk_layouts import write_cifar10  # noqa: E402

SWEEP = [
    TrainConfig(arch="basic_nn", dataset="mnist_sample", epochs=5, lr=lr, batch_size=bs, seed=seed)
    for lr in (1e-3, 3e-3)
    for bs in (32, 64)
    for seed in (0, 1)
]
CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000  # CIFAR-10's splits
MEASURED_TRAIN, MEASURED_TEST = 5_000, 1_000  # what one epoch is measured on here


def serve(root: Path, executor=None) -> tuple[float, list[float]]:
    """Queue the sweep in a fresh root and serve it to the end; (wall seconds, per-trial overhead seconds)."""
    store = Store(root)
    run_ids = [jobs.queue_train(store, config) for config in SWEEP]
    start = time.time()
    Worker(store, poll=0.05, executor=executor, log=lambda m: None).serve(idle_exit=0.3)
    overheads, ends = [], []
    for run_id in run_ids:
        assert store.get_run(run_id).state == RunState.DONE, store.get_run(run_id).error
        [job] = jobs.jobs_for_run(store, run_id)
        overheads.append(job.finished_at - job.claimed_at - sum(row["seconds"] for row in store.metrics(run_id)))
        ends.append(job.finished_at)
    store.close()
    return max(ends) - start, overheads  # until the last run was done (not the idle wait before exiting)


def cifar_epoch(tmp: Path) -> tuple[float, float, float]:
    """One cifar10_cnn epoch on one thread: (train samples/s, eval seconds per test image, checkpoint MB)."""
    write_cifar10(tmp / "data", per_batch=MEASURED_TRAIN // 5, n_test=MEASURED_TEST)
    config = TrainConfig(
        arch="cifar10_cnn",
        dataset="cifar10",
        data_root=str(tmp / "data"),
        epochs=1,
        batch_size=64,
        lr=1e-3,
        optimizer="adam",
        device="cpu",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = fit(config, tmp / "cifar-run")
    finally:
        torch.set_num_threads(threads)
    row = result.metrics[0]
    train_seconds = MEASURED_TRAIN / row["samples_per_s"]
    checkpoint_mb = (tmp / "cifar-run" / "checkpoint.pt").stat().st_size / 1e6
    return row["samples_per_s"], (row["seconds"] - train_seconds) / MEASURED_TEST, checkpoint_mb


def main() -> int:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lensboard-bench-") as tmp:
        tmp = Path(tmp)
        load_dataset("mnist_sample", SWEEP[0].data_root)  # a warm local worker: its first run loads nothing
        local_wall, local_over = serve(tmp / "local")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one_wall, one_over = serve(tmp / "local-1-thread")
        finally:
            torch.set_num_threads(threads)

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        try:
            executor = RayExecutor(cluster.address, TrialSpec(cpus=1), tmp / "ray")
            joined = time.perf_counter()
            executor.connect()
            joined = time.perf_counter() - joined
            try:
                ray_wall, ray_over = serve(tmp / "ray", executor)
            finally:
                executor.close()
        finally:
            ray.shutdown()
            cluster.shutdown()
        sps, eval_per_image, checkpoint_mb = cifar_epoch(tmp)

    n = len(SWEEP)
    local_mean, one_mean, ray_mean = sum(local_over) / n, sum(one_over) / n, sum(ray_over) / n
    print(
        f"Ray sweep: {n} basic_nn runs on mnist_sample ({SWEEP[0].epochs} epochs each), local worker vs Ray with "
        f"2 single-CPU slots on this machine"
    )
    print(f"machine: {describe('ray')} | load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print()
    print("| worker | slots | wall time (s) | runs / hour | ratio to local | overhead per trial (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| local ({threads} torch threads) | 1 | {local_wall:.1f} | {n * 3600 / local_wall:,.0f} | 1.00x | "
        f"{local_mean:.2f} |"
    )
    print(
        f"| local (1 torch thread) | 1 | {one_wall:.1f} | {n * 3600 / one_wall:,.0f} | "
        f"{local_wall / one_wall:.2f}x | {one_mean:.2f} |"
    )
    print(f"| ray | 2 | {ray_wall:.1f} | {n * 3600 / ray_wall:,.0f} | {local_wall / ray_wall:.2f}x | {ray_mean:.2f} |")
    print()
    print(
        f"Ray's overhead per trial: {ray_mean - one_mean:.2f} s more than the one-thread local worker's on "
        f"average over {n} trials; {statistics.median(ray_over) - statistics.median(one_over):.2f} s for the "
        f"median trial (a warm Ray worker process), up to {max(ray_over):.2f} s for the first trial of a worker "
        f"process (it imports torch and loads the dataset). Joining the cluster: {joined:.1f} s, once per "
        f"dispatcher."
    )
    train_s = CIFAR_TRAIN / sps
    eval_s = CIFAR_TEST * eval_per_image
    print()
    print(
        f"cifar10_cnn, batch 64, Adam, 1 CPU thread: {sps:,.0f} train images/s; one CIFAR-10 epoch "
        f"~{train_s + eval_s:.0f} s ({train_s:.0f} s training + {eval_s:.0f} s evaluating the test split); "
        f"checkpoint {checkpoint_mb:.1f} MB streamed back per epoch"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
