"""The queue on a Ray cluster: trials in parallel across nodes, a lost node, cancel, a failing trial, a killed
dispatcher; and the one-line errors of a cluster that cannot be used.

The cluster is `ray.cluster_utils.Cluster` on this machine: a head and one more node, one CPU each, started
once for the module and always shut down. Every wait is bounded; no test asserts a wall-clock time.
"""

from __future__ import annotations

import builtins
import collections
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from engine.cli.main import main
from engine.config import TrainConfig
from engine.errors import UsageError
from engine.runs import jobs
from engine.runs.cluster import ClusterSnapshot, NodeInfo, read_snapshot, write_snapshot
from engine.runs.jobs import JobState
from engine.runs.ray_executor import Node, RayExecutor, capacity, check_fits, check_reachable, version_mismatch
from engine.runs.ray_fit import TrialSpec
from engine.runs.records import RunState
from engine.runs.runner import run_training
from engine.runs.store import Store
from engine.runs.worker import Worker
from tests import waiting
from tests.waiting import settled

PROJECT = Path(__file__).resolve().parent.parent
WAIT = 120  # generous upper bound for the cluster to get somewhere on a busy machine; never a speed check
# 10 batches of 32 per epoch: slow enough (with a batch delay) to act in the middle of an epoch
SMALL = TrainConfig(arch="basic_nn", dataset="mnist_sample", epochs=2, batch_size=32, train_limit=320, seed=0)
TIMING = ("seconds", "samples_per_s")  # the only metrics that differ between two runs of one config

pytestmark = pytest.mark.usefixtures("one_thread")  # the local reference runs on one thread, as each trial does


def wait_until(condition, timeout: float = WAIT, every: float = 0.05, what: str = "condition"):
    return waiting.wait_until(condition, timeout, every, what)


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def same_metrics(remote: list[dict], local: list[dict]) -> bool:
    """Row for row, the same epochs, accuracies and learning rates, and the same losses to float32 rounding
    (a vectorised sum may add in another order in another process, depending on memory alignment)."""
    remote = without_timing(remote)
    return [sorted(r) for r in remote] == [sorted(r) for r in local] and all(
        there[k] == pytest.approx(here[k], rel=1e-6) if k.endswith("_loss") else there[k] == here[k]
        for there, here in zip(remote, local)
        for k in there
    )


def local_run(tmp_path: Path, config: TrainConfig) -> tuple[list[dict], list[str]]:
    """The metrics and the run folder's files of `config` trained here by the local runner: what every
    trial must reproduce exactly."""
    store = Store(tmp_path / "local")
    run_id = store.create_run(config)
    state, message = run_training(store, run_id)
    assert state == RunState.DONE, message
    rows, files = store.metrics(run_id), sorted(p.name for p in store.run_dir(run_id).iterdir())
    store.close()
    return without_timing(rows), files


def local_metrics(tmp_path: Path, config: TrainConfig) -> list[dict]:
    return local_run(tmp_path, config)[0]


# ---------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and one more node on this machine, one CPU each; this process is connected to it as the
    dispatcher would be (with the engine package sent along)."""
    original_print = builtins.print  # Ray's tqdm support may replace it in this process (RAY_TQDM_PATCH_PRINT)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
        host = RayExecutor(c.address, TrialSpec(), tmp_path_factory.mktemp("host"))
        host.connect()  # ray.init here: each test's executor keeps this connection (and its warm workers)
        yield c
        host.close()
    finally:
        ray.shutdown()
        c.shutdown()
        builtins.print = original_print  # later tests in this process see the real print (and pickle it as such)


class Dispatcher:
    """A Worker with a RayExecutor, serving in a thread of this process (what `worker --ray` runs)."""

    def __init__(self, address: str, store: Store, batch_delay: float = 0.0):
        self.executor = RayExecutor(address, TrialSpec(cpus=1), store.root)
        self.executor.connect()
        self.worker = Worker(
            store, poll=0.05, heartbeat_every=0.1, batch_delay=batch_delay, executor=self.executor, log=lambda m: None
        )
        self.thread = threading.Thread(target=self.worker.serve, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.shutdown.set()
        self.thread.join(timeout=WAIT)
        assert not self.thread.is_alive(), "the dispatcher did not stop"
        self.executor.close()


@pytest.fixture
def dispatch(cluster, store):  # after `store`: the dispatchers stop before its connection closes
    started: list[Dispatcher] = []

    def start(store: Store, batch_delay: float = 0.0) -> Dispatcher:
        started.append(Dispatcher(cluster.address, store, batch_delay))
        return started[-1]

    yield start
    for d in started:
        d.stop()


class TrialWatch:
    """Samples this machine's processes for running trials ("ray::trial-<run id>-job-<job id>" is the title Ray
    gives the worker process while it runs that task): the most copies of one job's trial ever seen at once."""

    def __init__(self):
        self.most = collections.Counter()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(0.05):
            now = collections.Counter()
            for pid in os.listdir("/proc"):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except (OSError, ValueError):
                    continue
                if cmdline.startswith(b"ray::trial-"):
                    now[cmdline.split(b"\0")[0].split()[0].decode()] += 1
            for job_id, n in now.items():
                self.most[job_id] = max(self.most[job_id], n)

    def stop(self) -> collections.Counter:
        self._done.set()
        self._thread.join()
        return self.most


# ---------------------------------------------------------------- running trials


def test_a_sweep_runs_two_trials_at_once_on_two_nodes_and_every_run_ends_done_with_the_metrics_of_a_local_run(
    cluster, dispatch, store, tmp_path
):
    configs = [SMALL.replace(lr=lr) for lr in (0.001, 0.002, 0.003, 0.004)]
    run_ids = [jobs.queue_train(store, c, sweep_id="sweep-ray") for c in configs]
    watch = TrialWatch()
    d = dispatch(store)
    seen_snapshot = wait_until(lambda: read_snapshot(store.root), what="the cluster snapshot")
    wait_until(lambda: all(settled(store, r) for r in run_ids), what="the sweep to finish")
    d.stop()
    most = watch.stop()

    assert [store.get_run(r).state for r in run_ids] == [RunState.DONE] * 4
    run_jobs = [jobs.jobs_for_run(store, r)[0] for r in run_ids]
    assert all(j.state == JobState.DONE and j.executor == "ray" and j.attempts == 1 for j in run_jobs)
    node_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert {j.node for j in run_jobs} <= node_ids and len({j.node for j in run_jobs}) == 2  # both nodes worked
    spans = sorted((j.claimed_at, j.finished_at) for j in run_jobs)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "no two trials ever ran at the same time"
    assert max(most.values()) == 1  # and never one trial twice
    assert len(seen_snapshot.nodes) == 2 and seen_snapshot.cpus == 2
    for run_id, config in zip(run_ids, configs):
        rows, files = local_run(tmp_path / run_id, config)
        assert same_metrics(store.metrics(run_id), rows)
        assert sorted(p.name for p in store.run_dir(run_id).iterdir()) == files  # config, metrics, checkpoint, model
    assert read_snapshot(store.root) is None  # the dispatcher removed it when it stopped


def test_cancel_stops_a_remote_trial_after_its_current_batch_and_keeps_its_finished_epochs(cluster, dispatch, store):
    run_id = jobs.queue_train(store, SMALL.replace(epochs=6))
    dispatch(store, batch_delay=0.1)
    wait_until(lambda: jobs.jobs_for_run(store, run_id)[0].progress.epoch == 2, what="the trial's second epoch")
    jobs.cancel(store, run_id)
    wait_until(lambda: settled(store, run_id), what="the cancel")

    run, [job] = store.get_run(run_id), jobs.jobs_for_run(store, run_id)
    assert run.state == RunState.CANCELLED and job.state == JobState.CANCELLED
    epochs = [row["epoch"] for row in store.metrics(run_id)]
    assert 1 <= len(epochs) < 6 and epochs == list(range(1, len(epochs) + 1)) and run.epoch == len(epochs)
    assert not store.paths(run_id).model.exists()


def test_a_remote_trial_that_raises_fails_its_run_with_the_traceback_saved_and_the_others_go_on(
    cluster, dispatch, store
):
    bad = jobs.queue_train(store, SMALL.replace(batch_size=10_000, train_limit=64))  # passes no preflight
    good = jobs.queue_train(store, SMALL.replace(epochs=1))
    dispatch(store)
    wait_until(lambda: settled(store, bad) and settled(store, good), what="both runs to end")

    run, [job] = store.get_run(bad), jobs.jobs_for_run(store, bad)
    assert run.state == RunState.FAILED and job.state == JobState.FAILED
    assert run.error.startswith("ConfigError: batch_size must be from 1 to the training set size (64)")
    text = store.paths(bad).traceback.read_text()
    assert "RemoteTraceback" in text and "check_batch_size" in text  # where it happened, on the node
    assert store.get_run(good).state == RunState.DONE


def test_removing_the_node_of_a_trial_mid_epoch_resumes_it_on_another_node_with_every_epoch_once(
    cluster, dispatch, store, tmp_path
):
    run_ids = [jobs.queue_train(store, SMALL.replace(seed=s)) for s in (1, 2)]
    head = cluster.head_node.node_id
    dispatch(store, batch_delay=0.1)

    def mid_epoch_off_the_head():
        for run_id in run_ids:
            [job] = jobs.jobs_for_run(store, run_id)
            if job.node not in (None, head) and job.progress.epoch == 2 and job.progress.batch >= 1:
                return run_id, job.node
        return None

    victim, lost = wait_until(mid_epoch_off_the_head, what="a trial in its second epoch on the other node")
    [node] = [n for n in cluster.list_all_nodes() if n.node_id == lost]
    cluster.remove_node(node)
    cluster.add_node(num_cpus=1)  # the module's cluster keeps two nodes
    wait_until(lambda: all(settled(store, r) for r in run_ids), what="both runs to end")

    [job] = jobs.jobs_for_run(store, victim)
    assert store.get_run(victim).state == RunState.DONE and job.state == JobState.DONE
    assert job.attempts >= 2 and job.node != lost
    assert [row["epoch"] for row in store.metrics(victim)] == [1, 2]
    seed = store.get_run(victim).config["seed"]
    assert same_metrics(store.metrics(victim), local_metrics(tmp_path, SMALL.replace(seed=seed)))


def test_a_dispatcher_killed_and_started_again_requeues_its_trials_which_never_run_twice_at_once(
    cluster, dispatch, store, tmp_path
):
    run_ids = [jobs.queue_train(store, SMALL.replace(seed=s)) for s in (3, 4)]
    watch = TrialWatch()
    with open(tmp_path / "killed-dispatcher.log", "wb") as log:
        killed = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "worker",
                "--ray",
                cluster.address,
                "--results",
                str(store.root),
                "--poll",
                "0.1",
                "--batch-delay",
                "0.05",
                "--idle-exit",
                "60",
            ],
            cwd=PROJECT,
            env=dict(os.environ, PYTHONPATH=str(PROJECT)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: any(store.metrics(r) for r in run_ids), what="a first finished epoch")
        killed.send_signal(signal.SIGKILL)
    finally:
        if killed.poll() is None:
            killed.kill()
        killed.wait(timeout=WAIT)
    assert any(j.state == JobState.RUNNING for r in run_ids for j in jobs.jobs_for_run(store, r))  # left behind
    dispatch(store, batch_delay=0.05)  # the dispatcher started again
    wait_until(lambda: all(settled(store, r) for r in run_ids), what="both runs to end after the restart")
    most = watch.stop()

    run_jobs = [jobs.jobs_for_run(store, r)[0] for r in run_ids]
    assert [store.get_run(r).state for r in run_ids] == [RunState.DONE] * 2
    assert max(j.attempts for j in run_jobs) >= 2  # the killed dispatcher's trials were requeued
    for run_id in run_ids:
        assert [row["epoch"] for row in store.metrics(run_id)] == [1, 2]
    assert most and max(most.values()) == 1, most  # no trial ever ran twice at the same time


# ---------------------------------------------------------------- a cluster that cannot be used


def test_asking_for_more_gpus_than_any_node_has_says_what_the_cluster_has(cluster, tmp_path):
    executor = RayExecutor(cluster.address, TrialSpec(cpus=1, gpus=1), tmp_path)
    with pytest.raises(
        UsageError,
        match=r"--gpus-per-trial 1 is more than any node has; the cluster has 2 nodes: "
        r".*\(1 CPUs, 0 GPUs\)",
    ):
        executor.connect()


def test_an_unreachable_address_is_one_line_at_once(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["worker", "--ray", f"127.0.0.1:{port}", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot reach a Ray cluster at 127.0.0.1:{port}") and "\n" not in err
    for bad in ("ray://10.0.0.1:10001", "10.0.0.1", "head:port"):
        with pytest.raises(UsageError, match="HOST:PORT"):
            check_reachable(bad)


def test_trial_flags_without_ray_are_refused(tmp_path, capsys):
    assert main(["worker", "--cpus-per-trial", "2", "--results", str(tmp_path)]) == 2
    assert "--cpus-per-trial only apply to a Ray cluster; add --ray ADDRESS" in capsys.readouterr().err


def test_a_ray_version_mismatch_becomes_one_line_naming_both_versions():
    from ray._private.utils import check_version_info

    with pytest.raises(RuntimeError) as raised:  # Ray's own message, from Ray's own check
        check_version_info({"ray_version": "2.0.0", "python_version": "3.9.1"}, "this machine")
    line = version_mismatch(str(raised.value))
    assert (
        line.startswith(f"the Ray cluster runs Ray 2.0.0 on Python 3.9.1, but this machine has Ray {ray.__version__}")
        and "pip install ray==2.0.0" in line
        and "\n" not in line
    )
    assert version_mismatch("something else") is None


def test_slots_are_the_trials_the_nodes_fit_and_a_trial_no_node_fits_is_refused():
    nodes = [Node("a" * 56, "big", 8, 1), Node("b" * 56, "small", 2, 0)]
    assert capacity(nodes, TrialSpec(cpus=1)) == 10
    assert capacity(nodes, TrialSpec(cpus=3)) == 2
    assert capacity(nodes, TrialSpec(cpus=2, gpus=1)) == 1
    check_fits(nodes, TrialSpec(cpus=8, gpus=1))
    with pytest.raises(
        UsageError,
        match=r"--cpus-per-trial 9 is more than any node has; the cluster has 2 nodes: "
        r"big aaaaaaaa \(8 CPUs, 1 GPUs\), small bbbbbbbb \(2 CPUs, 0 GPUs\)",
    ):
        check_fits(nodes, TrialSpec(cpus=9))


def test_the_cluster_snapshot_says_nodes_cpus_and_which_run_is_where_and_goes_stale(tmp_path):
    snap = ClusterSnapshot(
        "10.0.0.5:6379",
        1000.0,
        (NodeInfo("ab" * 28, "gpu-box", 8, 1, 1, 1, ("run-a",)), NodeInfo("cd" * 28, "laptop", 4, 0, 0, 0)),
        7,
        0,
        ("run-b",),
    )
    write_snapshot(tmp_path, snap)
    assert read_snapshot(tmp_path, now=1005.0) == snap
    assert read_snapshot(tmp_path, now=1100.0) is None  # its dispatcher stopped writing
    assert snap.lines() == [
        "Ray cluster `10.0.0.5:6379`: **2** nodes, CPUs 5/12 used (7 free), GPUs 1/1 used (0 free)",
        "gpu-box `abababab` CPUs 1/8, GPUs 1/1: `run-a`",
        "laptop `cdcdcdcd` CPUs 0/4: idle",
        "waiting for a node: `run-b`",
    ]


def test_the_local_worker_and_every_other_command_never_import_ray():
    modules = sorted(
        ".".join(p.relative_to(PROJECT).with_suffix("").parts)
        for p in (PROJECT / "engine").rglob("*.py")
        if p.name != "__main__.py"
    )
    code = (
        f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
