"""The results root: atomic files, the append-only metrics file, and the SQLite run registry."""

from __future__ import annotations

import json
import os

import pytest

from engine.config import TrainConfig
from engine.errors import InvalidRunId, ResultsError, RunNotFound
from engine.files import append_metrics, atomic_write_bytes, atomic_write_json, read_metrics
from engine.runs.database import DB_NAME
from engine.runs.records import RunState, new_run_id, valid_run_id
from engine.runs.store import Store
from tests.read_only import read_only_folder

# ---------------------------------------------------------------- files


def test_metrics_reader_skips_a_partial_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_metrics(path, {"epoch": 1, "test_acc": 0.5})
    append_metrics(path, {"epoch": 2, "test_acc": 0.75})
    with open(path, "a") as f:
        f.write('{"epoch": 3, "test_a')  # a writer caught mid-line
    assert read_metrics(path) == [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.75}]


def test_metrics_are_appended_one_complete_line_per_row(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for epoch in (1, 2, 3):
        append_metrics(path, {"epoch": epoch, "seconds": 0.1 * epoch})
    lines = path.read_text().split("\n")
    assert lines[-1] == "" and len(lines) == 4
    assert [json.loads(l)["epoch"] for l in lines[:-1]] == [1, 2, 3]


def test_missing_metrics_file_reads_as_no_rows(tmp_path):
    assert read_metrics(tmp_path / "nope.jsonl") == []


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "config.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(path.parent) == ["config.json"]


def test_failed_atomic_write_keeps_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    atomic_write_bytes(path, b"old weights")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new weights that never land")
    assert path.read_bytes() == b"old weights"
    assert os.listdir(tmp_path) == ["model.pt"]  # the temporary file is cleaned up


# ---------------------------------------------------------------- the registry


def test_database_is_in_wal_mode(store):
    assert (store.root / DB_NAME).exists()
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_created_run_has_a_folder_with_its_config_and_a_queued_record(store):
    config = TrainConfig(arch="basic_nn", epochs=3, lr=0.01)
    run_id = store.create_run(config, now=1_700_000_000.0)
    run = store.get_run(run_id)
    assert run.state == RunState.QUEUED and run.path == store.runs_dir / run_id
    assert json.loads((run.path / "config.json").read_text()) == config.to_dict()
    assert run.train_config() == config
    assert (run.epochs, run.epoch, run.final_test_acc, run.progress) == (3, 0, None, 0.0)


def test_epoch_summaries_and_progress_are_kept_in_the_registry(store):
    run_id = store.create_run(TrainConfig(epochs=4), RunState.RUNNING)
    store.set_progress(run_id, epoch=0, batch=5, batches=10)
    assert store.get_run(run_id).progress == pytest.approx(0.125)
    rows = [
        {"epoch": 1, "test_acc": 0.6, "test_loss": 1.2, "seconds": 2.0},
        {"epoch": 2, "test_acc": 0.8, "test_loss": 0.7, "seconds": 4.0},
        {"epoch": 3, "test_acc": 0.7, "test_loss": 0.9, "seconds": 3.0},
    ]
    for row in rows:
        store.record_epoch(run_id, row)
    run = store.get_run(run_id)
    assert (run.epoch, run.batch, run.final_test_acc, run.best_test_acc, run.final_test_loss) == (3, 0, 0.7, 0.8, 0.9)
    assert run.sec_per_epoch == pytest.approx(3.0)
    assert run.progress == pytest.approx(0.75)
    store.reset_summary(run_id, rows[:1])  # after a resume that keeps only epoch 1
    run = store.get_run(run_id)
    assert (run.epoch, run.final_test_acc, run.best_test_acc, run.sec_per_epoch) == (1, 0.6, 0.6, 2.0)
    store.set_state(run_id, RunState.DONE)
    assert store.get_run(run_id).progress == 1.0


def test_runs_are_listed_in_creation_order_and_filtered_by_state(store):
    a = store.create_run(TrainConfig(), now=1_700_000_000.0)
    b = store.create_run(TrainConfig(), now=1_700_000_100.0)
    store.set_state(a, RunState.FAILED, "ValueError: boom")
    assert [r.id for r in store.list_runs()] == [a, b]
    failed = store.list_runs([RunState.FAILED])
    assert [r.id for r in failed] == [a] and failed[0].error == "ValueError: boom"
    assert store.list_runs([RunState.DONE]) == []


def test_run_is_found_by_id_or_by_folder_path(store):
    run_id = store.create_run(TrainConfig())
    assert store.resolve(run_id).id == run_id
    assert store.resolve(str(store.run_dir(run_id))).id == run_id
    assert store.resolve(str(store.run_dir(run_id)) + os.sep).id == run_id
    with pytest.raises(RunNotFound, match="no run 'nope'.*python -m engine list"):
        store.resolve("nope")


def test_two_stores_on_one_root_see_each_others_writes(tmp_path):
    first, second = Store(tmp_path), Store(tmp_path)
    run_id = first.create_run(TrainConfig())
    second.set_state(run_id, RunState.RUNNING)
    assert first.get_run(run_id).state == RunState.RUNNING
    first.close()
    second.close()


def test_deleting_a_run_removes_its_record_and_folder(store):
    run_id = store.create_run(TrainConfig())
    store.delete_run(run_id)
    assert not store.run_dir(run_id).exists()
    with pytest.raises(RunNotFound):
        store.get_run(run_id)


def test_a_corrupt_middle_line_of_metrics_is_reported_not_silently_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epo\x00ch": 2, garbage\n{"epoch": 3}\n{"epoch": 4, "tr')
    damaged: list[int] = []
    assert [r["epoch"] for r in read_metrics(path, damaged)] == [1, 3]
    assert damaged == [2]  # the partial last line is still being written: not damage


# ---------------------------------------------------------------- run ids: validated wherever read


def insert_row(store: Store, run_id: str, state: str = "done") -> None:
    store.conn.execute(
        "INSERT INTO runs (id, created, updated, state, dataset, arch, config, epochs)"
        " VALUES (?, 0, 0, ?, 'mnist_sample', 'basic_nn', ?, 1)",
        (run_id, state, json.dumps(TrainConfig().to_dict())),
    )


def test_a_row_with_a_path_for_an_id_is_never_used_as_a_path(store, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    insert_row(store, "../../victim")
    assert store.list_runs() == [] and store.invalid_rows() == [("../../victim", "done")]
    with pytest.raises(InvalidRunId, match="not a valid run id"):
        store.run_dir("../../victim")
    with pytest.raises(InvalidRunId):
        store.get_run("../../victim")
    store.delete_run("../../victim")  # removes the row, and nothing on disk
    assert (victim / "precious.txt").read_text() == "keep me"
    assert store.invalid_rows() == []
    assert not valid_run_id("..") and not valid_run_id("a/b") and not valid_run_id("") and valid_run_id(new_run_id())


def test_deleting_a_run_whose_folder_is_a_link_removes_the_link_not_its_target(store, tmp_path):
    run_id = store.create_run(TrainConfig())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    import shutil

    shutil.rmtree(store.run_dir(run_id))
    store.run_dir(run_id).symlink_to(outside)
    store.delete_run(run_id)
    assert not store.run_dir(run_id).exists() and (outside / "keep.txt").exists()


def test_a_run_is_found_by_a_unique_prefix_and_an_ambiguous_one_lists_the_candidates(store):
    a = store.create_run(TrainConfig(), now=1_700_000_000.0)
    b = store.create_run(TrainConfig(), now=1_700_000_000.5)
    c = store.create_run(TrainConfig(), now=1_800_000_000.0)
    assert store.resolve(c[:9]).id == c  # the only run of that day
    with pytest.raises(RunNotFound, match=f"'{a[:16]}' is ambiguous: 2 runs start with it .*{a}, {b}.*give more"):
        store.resolve(a[:16])
    assert store.resolve(a[:17] + a[17:]).id == a
    assert store.resolve(b[:-2]).id == b
    with pytest.raises(InvalidRunId):
        store.resolve("../..")


# ---------------------------------------------------------------- a read-only results root


def test_a_read_only_store_reads_everything_and_refuses_every_write(tmp_path):
    writer = Store(tmp_path / "results")
    run_id = writer.create_run(TrainConfig())
    writer.close()
    with read_only_folder(tmp_path / "results"):
        with pytest.raises(ResultsError, match="cannot use .* as the results root"):
            Store(tmp_path / "results")
        reader = Store(tmp_path / "results", read_only=True)
        assert [r.id for r in reader.list_runs()] == [run_id]
        with pytest.raises(ResultsError, match="read-only"):
            reader.create_run(TrainConfig())
        with pytest.raises(ResultsError, match="read-only"):
            reader.delete_run(run_id)
        import sqlite3

        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.set_state(run_id, RunState.FAILED)
        reader.close()
    assert Store(tmp_path / "results").get_run(run_id).state == RunState.QUEUED


def test_a_read_only_store_of_a_root_without_a_database_says_so(tmp_path):
    with pytest.raises(ResultsError, match="holds no Lensboard database"):
        Store(tmp_path, read_only=True)
