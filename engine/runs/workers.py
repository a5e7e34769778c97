"""The worker registry: which workers serve a results root, which are alive, what they run.

Each worker has a row in the `workers` table (engine.runs.database holds the schema) with its pid,
host and heartbeat. A worker is alive while its heartbeat is fresh and, on this host, its
process exists.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from engine.runs import jobs
from engine.runs.claims import STALE_AFTER
from engine.runs.jobs import Job, JobState
from engine.runs.procs import HOST, pid_alive
from engine.runs.store import Store

FORGET_AFTER = 86400.0  # seconds after which a stopped or silent worker's row is deleted


@dataclass
class WorkerInfo:
    id: str
    pid: int
    host: str
    started: float
    heartbeat: float
    job_id: int | None


@dataclass
class WorkerStatus:
    alive: bool  # at least one live worker serves this results root
    workers: list[WorkerInfo]  # the live ones
    current: list[Job]  # running jobs
    queued: int  # jobs waiting


def register(store: Store, worker_id: str, now: float) -> None:
    with store.transaction() as c:
        c.execute(
            "INSERT INTO workers (id, pid, host, started, heartbeat) VALUES (?, ?, ?, ?, ?)",
            (worker_id, os.getpid(), HOST, now, now),
        )


def unregister(store: Store, worker_id: str, now: float) -> None:
    store.conn.execute("UPDATE workers SET stopped = ?, job_id = NULL WHERE id = ?", (now, worker_id))


def beat(store: Store, worker_id: str, now: float) -> None:
    store.conn.execute("UPDATE workers SET heartbeat = ? WHERE id = ?", (now, worker_id))


def mark_stopped(store: Store, worker_ids: list[str], now: float) -> None:
    if worker_ids:
        store.conn.execute(
            f"UPDATE workers SET stopped = ? WHERE id IN ({','.join('?' * len(worker_ids))})", [now, *worker_ids]
        )


def forget_old(store: Store, now: float) -> None:
    """Forget workers gone for a day, so the table stays small."""
    store.conn.execute("DELETE FROM workers WHERE COALESCE(stopped, heartbeat) < ?", (now - FORGET_AFTER,))


def _rows(store: Store) -> list[WorkerInfo]:
    rows = store.conn.execute(
        "SELECT id, pid, host, started, heartbeat, job_id FROM workers WHERE stopped IS NULL ORDER BY started"
    )
    return [WorkerInfo(**dict(r)) for r in rows]


def _is_alive(w: WorkerInfo, now: float, stale_after: float) -> bool:
    return w.heartbeat >= now - stale_after and (w.host != HOST or pid_alive(w.pid))


def worker_status(store: Store, now: float | None = None, stale_after: float = STALE_AFTER) -> WorkerStatus:
    """Which workers are alive (fresh heartbeat, and a living process when on this host), what runs, what waits."""
    now = time.time() if now is None else now
    alive = [w for w in _rows(store) if _is_alive(w, now, stale_after)]
    current = [j for j in jobs.active_jobs(store) if j.state == JobState.RUNNING]
    return WorkerStatus(bool(alive), alive, current, jobs.queue_length(store))


def dead_workers(store: Store) -> list[str]:
    """Workers on this host that never said goodbye and whose process is gone."""
    return [w.id for w in _rows(store) if w.host == HOST and not pid_alive(w.pid)]
