"""What a worker does with a job: claim, heartbeat, place, finish, requeue, and recovery of abandoned jobs.

Workers claim the oldest queued job in one `BEGIN IMMEDIATE` transaction with a single
`UPDATE ... RETURNING`, so no job is ever claimed twice, even by several worker
processes on one results root. A running job carries its worker's heartbeat; a
job whose heartbeat went stale (its worker died) is requeued and its run resumes
from `checkpoint.pt`. Every function takes `now` so tests need no clock patching.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from engine.runs.jobs import Job, JobKind, JobState, Progress, job_from_row, now_or_time
from engine.runs.records import RunState
from engine.runs.store import Store, set_worker_job, write_state

STALE_AFTER = 30.0  # seconds without a heartbeat before a running job counts as abandoned


def claim(store: Store, worker_id: str, now: float | None = None) -> Job | None:
    """Atomically take the oldest queued job for `worker_id`, or None when the queue is empty."""
    now = now_or_time(now)
    if store.conn.execute("SELECT 1 FROM jobs WHERE state = ? LIMIT 1", (JobState.QUEUED.value,)).fetchone() is None:
        return None  # a plain read first: an idle worker polling never takes the write lock
    with store.transaction() as c:
        row = c.execute(
            "UPDATE jobs SET state = ?, claimed_at = ?, worker = ?, heartbeat = ?, attempts = attempts + 1,"
            " progress = '{}' WHERE id = (SELECT id FROM jobs WHERE state = ? ORDER BY id LIMIT 1)"
            " RETURNING *",
            (JobState.RUNNING.value, now, worker_id, now, JobState.QUEUED.value),
        ).fetchone()
        if row is None:
            return None
        job = job_from_row(row)
        if job.kind == JobKind.TRAIN:
            write_state(c, job.run_id, RunState.RUNNING, None, now)
        set_worker_job(c, worker_id, job.id, now)
    return job


def heartbeat(
    conn: sqlite3.Connection, job_id: int, worker_id: str, progress: Progress | None = None, now: float | None = None
) -> bool | None:
    """Record that `worker_id` still runs `job_id` (and its progress).

    Returns the job's cancel flag, or None when the job is no longer this worker's
    (it was requeued as stale, or cancelled while queued): the worker must drop it.
    Takes a bare connection so a worker's heartbeat thread can use its own.
    """
    now = now_or_time(now)
    if progress is None:
        row = conn.execute(
            "UPDATE jobs SET heartbeat = ? WHERE id = ? AND worker = ? AND state = ? RETURNING cancel_requested",
            (now, job_id, worker_id, JobState.RUNNING.value),
        ).fetchone()
    else:
        row = conn.execute(
            "UPDATE jobs SET heartbeat = ?, progress = ? WHERE id = ? AND worker = ? AND state = ?"
            " RETURNING cancel_requested",
            (now, json.dumps(progress.to_json(), sort_keys=True), job_id, worker_id, JobState.RUNNING.value),
        ).fetchone()
    conn.execute("UPDATE workers SET heartbeat = ? WHERE id = ?", (now, worker_id))
    return None if row is None else bool(row[0])


def place(store: Store, job_id: int, worker_id: str, executor: str, node: str | None) -> None:
    """Record where the work of a job `worker_id` holds runs: its executor ("local", "ray") and node
    (None: not known yet, e.g. a Ray task waiting for a node)."""
    store.conn.execute(
        "UPDATE jobs SET executor = ?, node = ? WHERE id = ? AND worker = ?", (executor, node, job_id, worker_id)
    )


def finish(
    store: Store,
    job: Job,
    worker_id: str,
    state: JobState,
    error: str | None = None,
    now: float | None = None,
    note: str | None = None,
) -> bool:
    """Mark a claimed job finished; False when it was no longer this worker's."""
    now = now_or_time(now)
    with store.transaction() as c:
        cur = c.execute(
            "UPDATE jobs SET state = ?, error = ?, note = ?, finished_at = ?, heartbeat = ?"
            " WHERE id = ? AND worker = ? AND state = ?",
            (JobState(state).value, error, note, now, now, job.id, worker_id, JobState.RUNNING.value),
        )
        set_worker_job(c, worker_id, None, now)
        return cur.rowcount == 1


def requeue(store: Store, job: Job, worker_id: str, reason: str, now: float | None = None) -> bool:
    """Put a job this worker holds back on the queue (its run becomes interrupted); False if it was not ours."""
    now = now_or_time(now)
    with store.transaction() as c:
        ours = (
            c.execute(
                "SELECT 1 FROM jobs WHERE id = ? AND worker = ? AND state = ?",
                (job.id, worker_id, JobState.RUNNING.value),
            ).fetchone()
            is not None
        )
        if ours:
            _back_on_queue(c, job, reason, now)
        set_worker_job(c, worker_id, None, now)
        return ours


def _back_on_queue(c: sqlite3.Connection, job: Job, reason: str, now: float) -> None:
    """Inside a transaction: the job is queued again, and the run it makes becomes interrupted."""
    c.execute(
        "UPDATE jobs SET state = ?, worker = NULL, claimed_at = NULL, heartbeat = NULL,"
        " progress = '{}', error = ? WHERE id = ?",
        (JobState.QUEUED.value, reason, job.id),
    )
    _set_made_run(c, job, RunState.INTERRUPTED, reason, now)


def _set_made_run(c: sqlite3.Connection, job: Job, state: RunState, error: str, now: float) -> None:
    """Set the state of the run this job makes (a train job's run, a pretrained extractor's embed job's
    run); a job that only adds to a run (embed, project, index on a trained run) leaves it alone."""
    write_state(c, job.run_id, state, error, now, kind=job.kind, reset_batch=True)


def requeue_stale(
    store: Store, now: float | None = None, stale_after: float = STALE_AFTER, dead_workers: Iterable[str] = ()
) -> list[Job]:
    """Requeue running jobs whose heartbeat is older than `stale_after` seconds, or whose worker is
    known dead; their train runs become `interrupted` and resume from their checkpoint when claimed
    again. A stale job that was asked to cancel is cancelled instead. Returns the jobs handled."""
    now = now_or_time(now)
    dead = list(dead_workers)
    cutoff = now - stale_after
    handled = []
    with store.transaction() as c:
        sql = "SELECT * FROM jobs WHERE state = ? AND (heartbeat IS NULL OR heartbeat < ?"
        args: list[Any] = [JobState.RUNNING.value, cutoff]
        if dead:
            sql += f" OR worker IN ({','.join('?' * len(dead))})"
            args += dead
        for row in c.execute(sql + ") ORDER BY id", args).fetchall():
            job = job_from_row(row)
            if job.cancel_requested:
                c.execute(
                    "UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE id = ?",
                    (JobState.CANCELLED.value, now, "cancelled (its worker stopped)", job.id),
                )
                _set_made_run(c, job, RunState.CANCELLED, "cancelled; its worker stopped before it did", now)
                job.state = JobState.CANCELLED
            else:
                _back_on_queue(
                    c, job, f"worker {job.worker} stopped responding; requeued to resume from its last checkpoint", now
                )
                job.state = JobState.QUEUED
            handled.append(job)
        if handled:
            c.execute(
                f"UPDATE workers SET job_id = NULL WHERE job_id IN ({','.join('?' * len(handled))})",
                [j.id for j in handled],
            )
    return handled
