"""What a Ray dispatcher tells the dashboard about its cluster: a small snapshot file in the results root.

The `worker --ray` process writes `cluster.json` every few seconds (atomically) and removes it when it
stops; the dashboard reads it, so it shows the nodes, the CPUs and GPUs in use and free, and which run
trains on which node without ever connecting to Ray itself. This module does not import Ray.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.files import atomic_write_json

SNAPSHOT_FILE = "cluster.json"
FRESH_FOR = 15.0  # seconds after which a snapshot no longer counts (its dispatcher stopped writing)


@dataclass(frozen=True)
class NodeInfo:
    """One alive node of the cluster."""

    id: str  # the Ray node id, in hex
    host: str  # its host name (its IP when Ray does not know the name)
    cpus: float  # CPUs it has
    gpus: float  # GPUs it has
    cpus_used: float  # CPUs our trials hold on it
    gpus_used: float  # GPUs our trials hold on it
    runs: tuple[str, ...] = ()  # ids of the runs training on it


@dataclass(frozen=True)
class ClusterSnapshot:
    """The cluster as its dispatcher saw it at `updated`."""

    address: str  # the cluster's address as the dispatcher was given it
    updated: float  # when it was written (time.time())
    nodes: tuple[NodeInfo, ...]  # the alive nodes
    cpus_free: float  # CPUs free across the cluster, as Ray counts them (other Ray users included)
    gpus_free: float  # GPUs free across the cluster
    waiting: tuple[str, ...] = ()  # runs whose trial waits for a node

    @property
    def cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(n.gpus for n in self.nodes)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> ClusterSnapshot:
        nodes = tuple(NodeInfo(**{**n, "runs": tuple(n.get("runs", ()))}) for n in d["nodes"])
        return cls(
            address=d["address"],
            updated=d["updated"],
            nodes=nodes,
            cpus_free=d["cpus_free"],
            gpus_free=d["gpus_free"],
            waiting=tuple(d.get("waiting", ())),
        )

    def lines(self) -> list[str]:
        """What the sidebar says, one line per fact, in Markdown."""
        used_cpus, used_gpus = self.cpus - self.cpus_free, self.gpus - self.gpus_free
        plural = "s" if len(self.nodes) != 1 else ""
        out = [
            f"Ray cluster `{self.address}`: **{len(self.nodes)}** node{plural}, "
            f"CPUs {_n(used_cpus)}/{_n(self.cpus)} used ({_n(self.cpus_free)} free)"
            + (f", GPUs {_n(used_gpus)}/{_n(self.gpus)} used ({_n(self.gpus_free)} free)" if self.gpus else "")
        ]
        for node in self.nodes:
            gpus = f", GPUs {_n(node.gpus_used)}/{_n(node.gpus)}" if node.gpus else ""
            runs = ": " + ", ".join(f"`{r}`" for r in node.runs) if node.runs else ": idle"
            out.append(f"{node.host} `{node.id[:8]}` CPUs {_n(node.cpus_used)}/{_n(node.cpus)}{gpus}{runs}")
        if self.waiting:
            out.append("waiting for a node: " + ", ".join(f"`{r}`" for r in self.waiting))
        return out


def _n(x: float) -> str:
    return f"{x:g}"


def snapshot_path(root: Path) -> Path:
    return Path(root) / SNAPSHOT_FILE


def write_snapshot(root: Path, snapshot: ClusterSnapshot) -> None:
    atomic_write_json(snapshot_path(root), snapshot.to_json())


def remove_snapshot(root: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        snapshot_path(root).unlink()


def read_snapshot(root: Path, now: float | None = None, fresh_for: float = FRESH_FOR) -> ClusterSnapshot | None:
    """The cluster snapshot of a running dispatcher, or None (no Ray dispatcher, or it stopped writing)."""
    now = time.time() if now is None else now
    try:
        snapshot = ClusterSnapshot.from_json(json.loads(snapshot_path(root).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return snapshot if now - snapshot.updated <= fresh_for else None
