"""The job queue: submit, cancel, retry, sweeps, and what `show` says about a run's jobs."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from engine.cli.main import main
from engine.config import TrainConfig
from engine.errors import ConfigError, JobError
from engine.ml.train import preflight
from engine.runs import claims, jobs, sweeps
from engine.runs.database import SCHEMA as store_schema
from engine.runs.jobs import JobState
from engine.runs.records import RunState
from engine.runs.store import Store

TINY = TrainConfig(arch="basic_nn", dataset="mnist_sample", epochs=1, batch_size=64, train_limit=64)


def queued_runs(store: Store, n: int, now: float = 1000.0) -> list[str]:
    """n queued train runs with their jobs, without the dataset preflight (the queue does not care)."""
    run_ids = []
    for i in range(n):
        run_id = store.create_run(TINY.replace(seed=i), RunState.QUEUED, now=now + i)
        jobs.submit_job(store, "train", run_id, now=now + i)
        run_ids.append(run_id)
    return run_ids


def test_submit_validates_and_queues_a_train_job(store):
    run_id = sweeps.submit(store, TINY)
    assert store.get_run(run_id).state == RunState.QUEUED
    [job] = jobs.jobs_for_run(store, run_id)
    assert (job.kind, job.state, job.attempts) == ("train", JobState.QUEUED, 0)
    assert jobs.queue_length(store) == 1


def test_submit_rejects_a_bad_config_with_the_same_message_as_train(store):
    bad = TINY.replace(batch_size=1000)  # larger than the 64 training images
    with pytest.raises(ConfigError) as from_train:
        preflight(bad)
    with pytest.raises(ConfigError) as from_submit:
        sweeps.submit(store, bad)
    assert str(from_submit.value) == str(from_train.value)
    assert store.list_runs() == [] and jobs.queue_length(store) == 0


def test_cancelling_a_queued_run_removes_it_from_the_queue(store):
    first, second = queued_runs(store, 2)
    message = jobs.cancel(store, first)
    assert "removed queued" in message
    assert store.get_run(first).state == RunState.CANCELLED
    assert jobs.queue_length(store) == 1
    assert claims.claim(store, "w1").run_id == second


def test_cancelling_a_queued_extractor_run_cancels_the_run_but_an_embed_job_of_a_train_run_does_not(store):
    extractor = store.create_run(TINY.replace(arch="resnet18", pretrained=True), RunState.QUEUED, kind="embed")
    jobs.submit_job(store, "embed", extractor)
    trained = store.create_run(TINY, RunState.DONE)
    jobs.submit_job(store, "embed", trained)
    jobs.cancel(store, extractor)
    jobs.cancel(store, trained)
    assert store.get_run(extractor).state == RunState.CANCELLED
    assert store.get_run(trained).state == RunState.DONE
    assert jobs.queue_length(store) == 0


def test_cancelling_a_running_run_only_sets_its_flag(store):
    [run_id] = queued_runs(store, 1)
    job = claims.claim(store, "w1")
    assert "stop after its current batch" in jobs.cancel(store, run_id)
    job = jobs.get_job(store, job.id)
    assert job.state == JobState.RUNNING and job.cancel_requested
    assert store.get_run(run_id).state == RunState.RUNNING


def test_cancelling_a_finished_run_says_there_is_nothing_to_cancel(store):
    [run_id] = queued_runs(store, 1)
    job = claims.claim(store, "w1")
    claims.finish(store, job, "w1", JobState.DONE)
    store.set_state(run_id, RunState.DONE)
    with pytest.raises(JobError, match="nothing to cancel"):
        jobs.cancel(store, run_id)


def test_retry_queues_the_same_config_as_a_new_run(store):
    [run_id] = queued_runs(store, 1)
    jobs.cancel(store, run_id)
    new_id = jobs.retry(store, run_id)
    assert new_id != run_id
    assert store.get_run(new_id).config == store.get_run(run_id).config
    assert store.get_run(new_id).state == RunState.QUEUED
    assert [j.run_id for j in jobs.active_jobs(store)] == [new_id]


def test_sweep_grid_is_every_combination_once():
    grid = sweeps.sweep_grid(TINY, lr=[0.1, 0.01, 0.1], batch_size=[16, 32], arch=["basic_nn", "tiny_cnn"])
    assert len(grid) == 2 * 2 * 2  # the repeated lr counts once
    assert {(c.lr, c.batch_size, c.arch) for c in grid} == {
        (lr, bs, a) for lr in (0.1, 0.01) for bs in (16, 32) for a in ("basic_nn", "tiny_cnn")
    }
    assert all(c.train_limit == 64 for c in grid)


def test_sweep_grid_names_the_sweepable_fields_for_an_unknown_one():
    with pytest.raises(ConfigError, match="sweepable fields: arch"):
        sweeps.sweep_grid(TINY, momentum=[0.9])
    with pytest.raises(ConfigError, match="empty"):
        sweeps.sweep_grid(TINY, lr=[])


def test_a_sweep_queues_every_config_under_one_sweep_id(store):
    sweep_id, run_ids = sweeps.submit_sweep(store, sweeps.sweep_grid(TINY, lr=[0.1, 0.01], seed=[0, 1]))
    assert len(run_ids) == 4 and jobs.queue_length(store) == 4
    assert {store.get_run(r).sweep_id for r in run_ids} == {sweep_id}


def test_a_sweep_with_one_bad_config_queues_nothing(store):
    with pytest.raises(ConfigError, match="sweep config 2 of 2"):
        sweeps.submit_sweep(store, sweeps.sweep_grid(TINY, batch_size=[32, 1000]))
    assert store.list_runs() == []


def test_reuse_returns_the_identical_finished_run_instead_of_queueing(finished_root, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(finished_root, root)
    store = Store(root)
    try:
        done = store.list_runs()[0]
        config = done.train_config()
        assert sweeps.find_finished(store, config) == done.id
        sweep_id, run_ids = sweeps.submit_sweep(store, [config, config.replace(seed=7)], reuse=True)
        assert run_ids[0] == done.id
        assert store.get_run(run_ids[1]).sweep_id == sweep_id
        assert jobs.queue_length(store) == 1
        assert sweeps.find_finished(store, config.replace(lr=0.5)) is None
    finally:
        store.close()


# ---------------------------------------------------------------- the command line


def test_sweep_dry_run_lists_the_grid_and_queues_nothing(tmp_path, capsys):
    root = tmp_path / "results"
    code = main(
        [
            "sweep",
            "--results",
            str(root),
            "--arch",
            "basic_nn,tiny_cnn",
            "--lr",
            "0.1,0.01,0.001",
            "--epochs",
            "1",
            "--train-limit",
            "64",
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert len(out) == 7 and out[-1] == "dry run: 6 run(s) would be queued"
    assert Store(root).list_runs() == []


def test_sweep_queues_the_grid_and_says_how_many(tmp_path, capsys):
    root = tmp_path / "results"
    code = main(
        [
            "sweep",
            "--results",
            str(root),
            "--batch-size",
            "16,32",
            "--seed",
            "1,2",
            "--arch",
            "basic_nn",
            "--epochs",
            "1",
            "--train-limit",
            "64",
        ]
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0 and last.startswith("queued 4 run(s) as sweep sweep-")
    store = Store(root)
    assert jobs.queue_length(store) == 4
    assert {(r.config["batch_size"], r.config["seed"]) for r in store.list_runs()} == {
        (16, 1),
        (16, 2),
        (32, 1),
        (32, 2),
    }


def test_sweep_with_a_value_that_is_not_a_number_fails_in_one_line(tmp_path, capsys):
    code = main(["sweep", "--results", str(tmp_path / "r"), "--lr", "0.1,fast"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: --lr: 'fast' is not a number"


def test_submit_prints_the_run_folder_last(tmp_path, capsys):
    root = tmp_path / "results"
    code = main(["submit", "--results", str(root), "--arch", "basic_nn", "--epochs", "1", "--train-limit", "64"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    store = Store(root)
    [run] = store.list_runs()
    assert code == 0 and last == str(run.path) and run.state == RunState.QUEUED


def test_submit_with_a_bad_config_exits_non_zero_and_queues_nothing(tmp_path, capsys):
    root = tmp_path / "results"
    code = main(["submit", "--results", str(root), "--arch", "vgg99"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: unknown arch 'vgg99'; valid: basic_nn")
    assert Store(root).list_runs() == []


def test_cancel_command_removes_a_queued_run(tmp_path, capsys):
    root = tmp_path / "results"
    store = Store(root)
    [run_id] = queued_runs(store, 1)
    assert main(["cancel", "--results", str(root), run_id]) == 0
    assert "removed queued train job" in capsys.readouterr().out
    assert store.get_run(run_id).state == RunState.CANCELLED
    assert main(["cancel", str(store.run_dir(run_id))]) == 2  # found by folder path; nothing left to cancel
    assert "nothing to cancel" in capsys.readouterr().err


def test_sweep_with_reuse_keeps_identical_finished_runs_and_says_which(finished_root, tmp_path, capsys):
    root = tmp_path / "results"
    shutil.copytree(finished_root, root)
    flags = [
        "sweep",
        "--results",
        str(root),
        "--arch",
        "basic_nn,simple_cnn",
        "--seed",
        "0,1",
        "--epochs",
        "2",
        "--train-limit",
        "600",
        "--val-split",
        "0.1",
        "--reuse",
    ]
    assert main(flags + ["--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert sum("reuses finished run" in line for line in out) == 2
    assert out[-1] == "dry run: 2 run(s) would be queued, 2 reused"

    assert main(flags) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert sum(line.startswith("reused ") for line in out) == 2
    assert re.fullmatch(r"queued 2 run\(s\) as sweep sweep-\S+, reused 2", out[-1])
    assert jobs.queue_length(Store(root)) == 2


def test_show_json_reports_the_runs_jobs_with_live_progress(tmp_path, capsys):
    root = tmp_path / "results"
    store = Store(root)
    [run_id] = queued_runs(store, 1)
    job = claims.claim(store, "w1", now=2000.0)
    claims.heartbeat(store.conn, job.id, "w1", jobs.Progress(epoch=2, batch=7, batches=10), now=2001.0)
    assert main(["show", "--json", "--results", str(root), run_id]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["state"] == "running"
    [shown] = info["jobs"]
    assert shown["state"] == "running" and shown["worker"] == "w1"
    assert shown["progress"] == {"epoch": 2, "batch": 7, "batches": 10} and shown["heartbeat"] == 2001.0
    assert main(["show", "--results", str(root), run_id]) == 0
    assert "job 1 (train): running on worker w1 at epoch 2, batch 7/10" in capsys.readouterr().out


def test_a_jobs_table_from_before_the_note_column_gets_it(tmp_path):
    root = tmp_path / "results"
    old = Store(root)
    old.conn.execute("DROP TABLE jobs")
    note_column = "    note TEXT,                              -- what a finished job says about its result\n"
    old.conn.executescript(store_schema.replace(note_column, ""))
    assert "note" not in {r[1] for r in old.conn.execute("PRAGMA table_info(jobs)")}
    old.close()
    store = Store(root)
    [run_id] = queued_runs(store, 1)
    assert claims.claim(store, "w1").note is None


def test_a_jobs_table_from_before_jobs_recorded_where_they_ran_gets_executor_and_node(tmp_path):
    root = tmp_path / "results"
    old = Store(root)
    old.conn.execute("DROP TABLE jobs")
    old.conn.executescript(
        "\n".join(
            line for line in store_schema.splitlines() if not line.lstrip().startswith(("executor TEXT", "node TEXT"))
        )
    )
    assert not {"executor", "node"} & {r[1] for r in old.conn.execute("PRAGMA table_info(jobs)")}
    old.close()
    store = Store(root)
    [run_id] = queued_runs(store, 1)
    job = claims.claim(store, "w1")
    assert (job.executor, job.node) == (None, None)
    claims.place(store, job.id, "w1", "ray", "1f226e4e" + "0" * 48)
    assert jobs.trained_where(store) == {run_id: "ray node 1f226e4e"}


def test_reuse_matches_a_data_root_spelled_relative_or_absolute_and_ignores_it_where_unused(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    mnist = TINY.replace(dataset="mnist", data_root="data")
    assert sweeps.reuse_key(mnist) == sweeps.reuse_key(mnist.replace(data_root=str(tmp_path / "data")))
    assert sweeps.reuse_key(mnist) != sweeps.reuse_key(mnist.replace(data_root=str(tmp_path / "other")))
    assert sweeps.reuse_key(TINY) == sweeps.reuse_key(
        TINY.replace(data_root="/anywhere")
    )  # mnist_sample reads no files
