"""A worker's side of the queue: FIFO claim, no double claims, heartbeat, stale requeue, where a job ran."""

from __future__ import annotations

import json
import threading

from engine.cli.main import main
from engine.runs import claims, jobs
from engine.runs.jobs import JobState
from engine.runs.records import RunState
from engine.runs.store import Store
from tests.test_jobs import TINY, queued_runs


def test_claim_takes_the_oldest_queued_job_first(store):
    run_ids = queued_runs(store, 3)
    claimed = [claims.claim(store, "w1", now=2000.0 + i).run_id for i in range(3)]
    assert claimed == run_ids
    assert claims.claim(store, "w1") is None


def test_claiming_marks_the_job_running_for_that_worker_and_the_run_running(store):
    [run_id] = queued_runs(store, 1)
    job = claims.claim(store, "w1", now=2000.0)
    assert (job.state, job.worker, job.claimed_at, job.heartbeat, job.attempts) == (
        JobState.RUNNING,
        "w1",
        2000.0,
        2000.0,
        1,
    )
    assert store.get_run(run_id).state == RunState.RUNNING


def test_concurrent_claims_never_hand_out_a_job_twice(store):
    queued_runs(store, 30)
    claimed: list[list[int]] = [[] for _ in range(4)]

    def drain(i: int) -> None:
        own = Store(store.root)  # its own connection, like another process
        try:
            while (job := claims.claim(own, f"w{i}")) is not None:
                claimed[i].append(job.id)
        finally:
            own.close()

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    ids = [j for c in claimed for j in c]
    assert sorted(ids) == list(range(1, 31))  # every job once, none twice
    assert all(j.attempts == 1 for j in jobs.active_jobs(store))


def test_heartbeat_records_progress_and_reports_the_cancel_flag(store):
    [run_id] = queued_runs(store, 1)
    job = claims.claim(store, "w1", now=2000.0)
    assert claims.heartbeat(store.conn, job.id, "w1", jobs.Progress(epoch=1, batch=3, batches=9), now=2001.0) is False
    jobs.cancel(store, run_id)
    assert claims.heartbeat(store.conn, job.id, "w1", now=2002.0) is True
    job = jobs.get_job(store, job.id)
    assert job.heartbeat == 2002.0 and job.progress.to_json() == {"epoch": 1, "batch": 3, "batches": 9}


def test_a_stale_heartbeat_requeues_the_job_and_interrupts_its_run(store):
    [run_id] = queued_runs(store, 1)
    job = claims.claim(store, "w1", now=2000.0)
    claims.heartbeat(store.conn, job.id, "w1", now=2010.0)

    assert claims.requeue_stale(store, now=2039.0, stale_after=30) == []  # 29 s of silence: still alive
    [requeued] = claims.requeue_stale(store, now=2041.0, stale_after=30)

    assert requeued.id == job.id and requeued.state == JobState.QUEUED
    assert store.get_run(run_id).state == RunState.INTERRUPTED
    assert "requeued" in store.get_run(run_id).error
    again = claims.claim(store, "w2", now=2042.0)
    assert (again.id, again.worker, again.attempts) == (job.id, "w2", 2)


def test_jobs_of_a_worker_known_dead_are_requeued_without_waiting(store):
    queued_runs(store, 2)
    mine = claims.claim(store, "dead", now=2000.0)
    other = claims.claim(store, "alive", now=2000.0)
    handled = claims.requeue_stale(store, now=2001.0, stale_after=30, dead_workers=["dead"])
    assert [j.id for j in handled] == [mine.id]
    assert jobs.get_job(store, other.id).state == JobState.RUNNING


def test_a_requeued_job_tells_its_old_worker_to_drop_it(store):
    queued_runs(store, 1)
    job = claims.claim(store, "w1", now=2000.0)
    claims.requeue_stale(store, now=3000.0, stale_after=30)
    claims.claim(store, "w2", now=3001.0)
    assert claims.heartbeat(store.conn, job.id, "w1", now=3002.0) is None
    assert claims.finish(store, job, "w1", JobState.DONE, now=3003.0) is False
    assert jobs.get_job(store, job.id).worker == "w2"


def test_a_stale_job_that_was_asked_to_cancel_ends_cancelled(store):
    [run_id] = queued_runs(store, 1)
    claims.claim(store, "w1", now=2000.0)
    jobs.cancel(store, run_id, now=2001.0)
    [job] = claims.requeue_stale(store, now=3000.0, stale_after=30)
    assert job.state == JobState.CANCELLED
    assert store.get_run(run_id).state == RunState.CANCELLED
    assert jobs.queue_length(store) == 0


def test_a_stale_extractor_run_is_interrupted_but_a_stale_embed_job_leaves_its_trained_run_done(store):
    extractor = store.create_run(TINY.replace(arch="resnet18", pretrained=True), RunState.RUNNING, kind="embed")
    trained = store.create_run(TINY, RunState.DONE)
    for run_id in (extractor, trained):
        jobs.submit_job(store, "embed", run_id, now=1000.0)
        claims.claim(store, "w1", now=2000.0)
    assert len(claims.requeue_stale(store, now=3000.0, stale_after=30)) == 2
    assert store.get_run(extractor).state == RunState.INTERRUPTED
    assert store.get_run(trained).state == RunState.DONE
    assert jobs.queue_length(store) == 2


def test_placing_a_job_records_its_executor_and_node_only_while_the_worker_still_holds_it(store, capsys):
    [run_id] = queued_runs(store, 1)
    job = claims.claim(store, "w1")
    claims.place(store, job.id, "w1", "local", "lab-pc-3")
    claims.place(store, job.id, "w2", "ray", "abc")  # not w2's job: ignored
    assert main(["show", "--results", str(store.root), "--json", run_id]) == 0
    [shown] = json.loads(capsys.readouterr().out)["jobs"]
    assert (shown["executor"], shown["node"]) == ("local", "lab-pc-3")
    assert main(["show", "--results", str(store.root), run_id]) == 0
    assert "trained on: lab-pc-3" in capsys.readouterr().out
