"""Run the queue on a Ray cluster: the executor of `python -m engine worker --ray ADDRESS`.

That worker process is the dispatcher. It runs on the head machine next to the results root and is
the only writer of the database and the run folders. Each train job's epochs run as a Ray task on
whichever node has room (engine.runs.ray_trial) and come back into the run folder here
(engine.runs.ray_fit); the other jobs (embed, project, index) read and write the run folder, so they
run here in the dispatcher. It has as many slots as the alive nodes fit trials of the CPUs and GPUs
asked for, ships the engine package to the nodes with Ray's runtime_env (no shared filesystem), and
writes the cluster snapshot the dashboard shows (engine.runs.cluster). Ray is imported on connect
only, so no other command and not the local worker ever load it.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ClusterError, UsageError
from engine.runs import claims
from engine.runs.cluster import ClusterSnapshot, NodeInfo, remove_snapshot, write_snapshot
from engine.runs.executor import JobContext, JobFn
from engine.runs.jobs import Job, JobKind
from engine.runs.procs import HOST
from engine.runs.ray_fit import RemoteTrial, TrialSpec
from engine.runs.ray_flags import StopFlags
from engine.runs.ray_trial import trial
from engine.runs.store import Store

ENGINE_DIR = Path(__file__).resolve().parents[1]  # the package the nodes import (sent with the Ray job)
REFRESH_EVERY = 2.0  # seconds between looks at the cluster's nodes (slots, and the dashboard's snapshot)
CONNECT_TIMEOUT = 5.0  # seconds to wait for the head's port to answer before calling it unreachable


@dataclass(frozen=True)
class Node:
    """An alive node as Ray reports it."""

    id: str  # Ray node id, hex
    host: str  # host name, or IP
    cpus: float
    gpus: float


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of a HOST:PORT address; UsageError for anything else."""
    if address.startswith("ray://"):
        raise UsageError(
            f"--ray {address}: a Ray Client (ray://) address is not supported; give the head's "
            f"HOST:PORT, as `ray start --head` prints it (port 6379 by default), or auto"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(
            f"--ray {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, the address `ray start --head` "
            f"prints) or auto (the cluster started on this machine)"
        )
    return host, int(port)


def resolve_address(address: str) -> str:
    """HOST:PORT of the cluster `address` names ("auto": the one started on this machine)."""
    if address != "auto":
        parse_address(address)
        return address
    import ray._private.services as services  # heavy, optional; Ray's own lookup of "auto"

    try:
        found = services.canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError):
        found = None
    if not found:
        raise UsageError(
            "--ray auto found no Ray cluster on this machine; start one with `ray start --head`, "
            "or give the head's HOST:PORT"
        )
    return found


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """UsageError unless something answers on the address's port (Ray itself would wait minutes)."""
    host, port = parse_address(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
            f"`ray start --head` on the head machine and pass the address it prints, or auto "
            f"on the head itself"
        ) from None


def version_mismatch(message: str) -> str | None:
    """One line from Ray's multi-line "Version mismatch" error, or None when `message` is not one."""
    if not message.startswith("Version mismatch"):
        return None
    found = re.findall(r"Ray: (\S+)\s+Python: (\S+)", message)
    if len(found) != 2:
        return "the Ray cluster runs another Ray or Python version than this machine: " + " ".join(message.split())
    (ray_there, py_there), (ray_here, py_here) = found
    return (
        f"the Ray cluster runs Ray {ray_there} on Python {py_there}, but this machine has Ray {ray_here} on "
        f"Python {py_here}; install the same versions on every machine (pip install ray=={ray_there})"
    )


def capacity(nodes: list[Node], spec: TrialSpec) -> int:
    """How many trials of `spec` the nodes fit at once."""
    total = 0
    for node in nodes:
        fits = int(node.cpus // spec.cpus) if spec.cpus > 0 else 1_000_000
        if spec.gpus > 0:
            fits = min(fits, int(node.gpus // spec.gpus))
        total += fits
    return total


def describe(nodes: list[Node]) -> str:
    """'2 nodes: a (8 CPUs, 0 GPUs), b (4 CPUs, 1 GPUs)'."""
    listed = ", ".join(f"{n.host} {n.id[:8]} ({n.cpus:g} CPUs, {n.gpus:g} GPUs)" for n in nodes)
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}: {listed}"


def check_fits(nodes: list[Node], spec: TrialSpec) -> None:
    """UsageError when no node has the CPUs or GPUs one trial asks for; the message says what the cluster has."""
    if spec.gpus > max((n.gpus for n in nodes), default=0):
        raise UsageError(f"--gpus-per-trial {spec.gpus:g} is more than any node has; the cluster has {describe(nodes)}")
    if spec.cpus > max((n.cpus for n in nodes), default=0):
        raise UsageError(f"--cpus-per-trial {spec.cpus:g} is more than any node has; the cluster has {describe(nodes)}")
    if capacity(nodes, spec) < 1:
        raise UsageError(
            f"no node fits a trial of {spec.cpus:g} CPUs and {spec.gpus:g} GPUs; the cluster has {describe(nodes)}"
        )


class RayExecutor:
    """Runs train jobs as Ray tasks on a cluster, as many at once as its nodes fit."""

    name = "ray"

    def __init__(self, address: str, spec: TrialSpec, root: Path, log: Callable[[str], None] | None = None):
        self.address, self.spec, self.root = address, spec, Path(root)
        self.log = log or (lambda message: print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ray: {message}", flush=True))
        self.nodes: list[Node] = []  # the alive nodes at the last look
        self.running: dict[int, tuple[str, str | None]] = {}  # train job id -> (run id, node id or None)
        self._remote: Any = None  # the trial as a Ray remote function
        self._flags: Any = None  # the StopFlags actor
        self._node_id = ""
        self._owns_connection = False  # connect() called ray.init, so close() calls ray.shutdown
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- connecting

    def connect(self) -> None:
        """Join the cluster; UsageError (one line) when it cannot be reached, runs another Ray version, or
        has no node that fits a trial. A process already connected to Ray (ray.init) keeps its connection."""
        import ray  # heavy and optional: only `worker --ray` imports it
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        address = resolve_address(self.address)
        check_reachable(address)
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            self._join(address, auto=self.address == "auto")
        elif (joined := ray.get_runtime_context().gcs_address) != address:
            raise ClusterError(f"this process is connected to the Ray cluster at {joined}, not {address}")
        try:
            self._node_id = ray.get_runtime_context().get_node_id()
            self.nodes = self._alive_nodes()
            check_fits(self.nodes, self.spec)
            strategy = NodeAffinitySchedulingStrategy(self._node_id, soft=False)
            self._flags = ray.remote(StopFlags).options(num_cpus=0, scheduling_strategy=strategy).remote()
            self._remote = ray.remote(trial)  # type: ignore[arg-type]  # ray's stubs expect no arguments
        except BaseException:
            if self._owns_connection:
                ray.shutdown()
            raise
        self.address = address
        self.log(
            f"joined the Ray cluster at {address}: {describe(self.nodes)}; {self.slots} trial(s) of "
            f"{self.spec.cpus:g} CPU(s) and {self.spec.gpus:g} GPU(s) fit at once"
        )
        self._watcher = threading.Thread(target=self._watch, name="ray-cluster-watch", daemon=True)
        self._watcher.start()

    def _join(self, address: str, auto: bool = False) -> None:
        """ray.init on the cluster at HOST:PORT `address`, with the engine package sent along to its nodes.
        `auto`: found on this machine, so Ray itself uses this machine's token when the cluster asks for one."""
        import ray

        try:
            ray.init(
                address="auto" if auto else address,
                namespace="lensboard",
                logging_level=logging.WARNING,
                runtime_env={"py_modules": [str(ENGINE_DIR)], "excludes": ["__pycache__"]},
            )
        except RuntimeError as exc:
            line = version_mismatch(str(exc))
            if line is None:
                raise ClusterError(f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())}") from None
            raise UsageError(line) from None
        except ConnectionError as exc:
            raise UsageError(
                f"cannot join the Ray cluster at {address} ({' '.join(str(exc).split())}); a cluster "
                f"started by `ray start` asks for its token: give this machine the head's "
                f"~/.ray/auth_token and set RAY_AUTH_MODE=token, or use --ray auto on the head "
                f"itself"
            ) from None
        except SystemExit:  # what Ray does when something answers on the port but no cluster ever replies
            raise UsageError(
                f"nothing at {address} answered as a Ray cluster; give the address `ray start --head` "
                f"printed (port 6379 by default)"
            ) from None

    def close(self) -> None:
        """Stop watching the cluster, remove the dashboard's snapshot and leave the cluster (when we joined it)."""
        import ray

        self._closed.set()
        if self._watcher is not None:
            self._watcher.join()
        remove_snapshot(self.root)
        if self._flags is not None:
            ray.kill(self._flags)
        if self._owns_connection:
            ray.shutdown()

    def _alive_nodes(self) -> list[Node]:
        import ray

        return [
            Node(
                n["NodeID"],
                n.get("NodeManagerHostname") or n.get("NodeManagerAddress", "?"),
                float(n["Resources"].get("CPU", 0)),
                float(n["Resources"].get("GPU", 0)),
            )
            for n in ray.nodes()
            if n.get("Alive")
        ]

    def _watch(self) -> None:
        """Every few seconds: the alive nodes (for the slots) and the dashboard's snapshot."""
        while not self._closed.is_set():
            try:
                self.nodes = self._alive_nodes()
                write_snapshot(self.root, self.snapshot())
            except Exception as exc:  # a slow GCS, a full disk: try again at the next look
                self.log(f"could not refresh the cluster snapshot: {type(exc).__name__}: {exc}")
            self._closed.wait(REFRESH_EVERY)

    # -- the executor protocol

    @property
    def slots(self) -> int:
        return capacity(self.nodes, self.spec)

    def node(self) -> str:
        return self._node_id

    def execute(self, fn: JobFn, store: Store, job: Job, ctx: JobContext) -> str | None:
        worker_id = ctx.pulse.worker_id
        if job.kind != JobKind.TRAIN:  # embed, project, index: they read and write the run folder, here
            claims.place(store, job.id, worker_id, "local", HOST)
            return fn(store, job, ctx)
        claims.place(store, job.id, worker_id, self.name, None)  # where: once a node takes it
        spec = TrialSpec(self.spec.cpus, self.spec.gpus, batch_delay=ctx.batch_delay)
        ctx.batch_delay = 0.0  # the trial sleeps between its batches on its node; not the dispatcher

        def on_node(node: str, host: str) -> None:
            claims.place(store, job.id, worker_id, self.name, node)
            with self._lock:
                self.running[job.id] = (job.run_id, node)
            self.log(f"job {job.id} ({job.run_id}) trains on node {node} ({host}), attempt {job.attempts}")

        ctx.fit = RemoteTrial(self._remote, self._flags, job, ctx, spec, on_node).fit
        with self._lock:
            self.running[job.id] = (job.run_id, None)
        try:
            return fn(store, job, ctx)
        finally:
            with self._lock:
                self.running.pop(job.id, None)

    # -- the dashboard's view

    def snapshot(self, now: float | None = None) -> ClusterSnapshot:
        import ray

        with self._lock:
            running = list(self.running.values())
        free = ray.available_resources()
        nodes = []
        for node in self.nodes:
            runs = tuple(run_id for run_id, where in running if where == node.id)
            nodes.append(
                NodeInfo(
                    node.id,
                    node.host,
                    node.cpus,
                    node.gpus,
                    cpus_used=len(runs) * self.spec.cpus,
                    gpus_used=len(runs) * self.spec.gpus,
                    runs=runs,
                )
            )
        return ClusterSnapshot(
            self.address,
            time.time() if now is None else now,
            tuple(nodes),
            float(free.get("CPU", 0)),
            float(free.get("GPU", 0)),
            waiting=tuple(run_id for run_id, where in running if where is None),
        )
