"""The Runs table's pure builders (dashboard/runs_table.py), tested without Streamlit."""

from __future__ import annotations

import dataclasses

import pytest

from dashboard.runs_table import (
    any_active,
    change_signature,
    configs_frame,
    default_selection,
    filter_runs,
    runs_display,
    runs_frame,
)
from engine.config import TrainConfig
from engine.runs.records import RunState
from tests.table_runs import epoch_row, make_runs, seeded


def test_runs_frame_lists_newest_first_with_summary_columns_and_progress(store):
    old, new = make_runs(
        store, [("basic_nn", 1e-3, "done", [epoch_row(1, 1.0, 0.9, 0.7)]), ("simple_cnn", 1e-2, "queued", [])]
    )
    df = runs_frame(store.list_runs())
    assert list(df["id"]) == [new, old]
    done = df.set_index("id").loc[old]
    assert done["state"] == "done" and done["progress"] == 1.0
    assert done["final_test_acc"] == pytest.approx(0.7) and done["lr"] == pytest.approx(1e-3)
    assert "basic_nn" in done["label"] and old[-4:] in done["label"]
    assert df.set_index("id").loc[new, "progress"] == 0.0


def test_runs_frame_of_no_runs_is_empty_with_every_column(store):
    df = runs_frame([])
    assert df.empty and {"id", "state", "progress", "label"} <= set(df.columns)
    assert not any_active(df)


def test_filters_combine_and_empty_filters_keep_everything(store):
    make_runs(
        store, [("basic_nn", 1e-3, "done", []), ("simple_cnn", 1e-3, "failed", []), ("simple_cnn", 1e-2, "done", [])]
    )
    df = runs_frame(store.list_runs())
    assert len(filter_runs(df)) == 3
    assert list(filter_runs(df, states=["done"], archs=["simple_cnn"])["lr"]) == [1e-2]
    assert filter_runs(df, datasets=["cifar10"]).empty


def test_any_active_is_true_only_while_something_is_queued_or_running(store):
    a, b = make_runs(store, [("basic_nn", 1e-3, "done", []), ("basic_nn", 1e-3, "running", [])])
    assert any_active(runs_frame(store.list_runs()))
    store.set_state(b, RunState.CANCELLED)
    assert not any_active(runs_frame(store.list_runs()))


def test_runs_display_shows_percentages_and_epoch_counts(store):
    make_runs(store, [("basic_nn", 1e-3, "done", [epoch_row(1, 1.0, 0.9, 0.705)])])
    shown = runs_display(runs_frame(store.list_runs()))
    assert shown.loc[0, "final test acc %"] == pytest.approx(70.5)
    assert shown.loc[0, "epochs"] == "1/1" and shown.loc[0, "progress"] == 100.0
    assert shown.loc[0, "state"] == "done"


def test_runs_display_rounds_a_searched_learning_rate_to_three_digits(store):
    make_runs(store, [("basic_nn", 0.012635598137381661, "done", [])])
    assert runs_display(runs_frame(store.list_runs())).loc[0, "lr"] == 0.0126


def test_runs_display_says_where_each_run_trained_when_told(store):
    a, b = make_runs(store, [("basic_nn", 1e-3, "done", []), ("basic_nn", 1e-2, "queued", [])])
    shown = runs_display(runs_frame(store.list_runs()), {a: "ray node 1f226e4e"}).set_index("id")
    assert shown.loc[a, "trained on"] == "ray node 1f226e4e" and shown.loc[b, "trained on"] == ""
    assert "trained on" not in runs_display(runs_frame(store.list_runs())).columns


def test_default_selection_is_the_latest_done_run_of_each_arch_on_the_dataset(store):
    ids = make_runs(
        store,
        [
            ("basic_nn", 1e-3, "done", []),
            ("basic_nn", 1e-2, "done", []),
            ("simple_cnn", 1e-3, "done", []),
            ("simple_cnn", 1e-3, "failed", []),
            ("tiny_cnn", 1e-3, "running", []),
        ],
    )
    df = runs_frame(store.list_runs())
    assert default_selection(df, "mnist_sample") == [ids[1], ids[2]]
    assert default_selection(df, "cifar10") == []
    assert default_selection(df) == [ids[1], ids[2]]


def test_configs_frame_numbers_the_runs_of_a_grid():
    grid = [TrainConfig(lr=lr, batch_size=bs) for lr in (1e-3, 1e-2) for bs in (32, 64)]
    df = configs_frame(grid)
    assert len(df) == 4 and list(df.index) == [1, 2, 3, 4]
    assert list(df["batch_size"]) == [32, 64, 32, 64]


def test_default_selection_brings_the_other_seeds_of_the_latest_run_of_each_arch(store):
    ids = seeded(
        store, [("basic_nn", 0, 0.90), ("basic_nn", 1, 0.91), ("simple_cnn", 0, 0.95), ("simple_cnn", 1, 0.96)]
    )
    other = make_runs(store, [("simple_cnn", 1e-2, "done", [])], now=1_600_000_000.0)  # an older lr: not a sibling
    df = runs_frame(store.list_runs())
    assert default_selection(df) == ids
    assert other[0] not in default_selection(df)


def test_a_tracked_run_shows_its_name_and_own_settings_and_your_own_model_a_short_name(store):
    from engine import track

    user = store.create_run(TrainConfig(arch="/home/me/models/mynet.py:MyNet", arch_sha256="ab" * 32))
    with track.run(
        config={"lr": 0.01, "batch_size": 32, "dropout": 0.25, "hidden": [128, 64]},
        results=store.root,
        name="my bn net",
    ) as run:
        run.log(epoch=1, train_loss=1.0, test_acc=0.5)
    df = runs_frame(store.list_runs()).set_index("id")
    assert df.loc[user, "arch"] == "mynet.py:MyNet" and df.loc[user, "label"].startswith("mynet.py:MyNet · lr 0.001")
    assert df.loc[user, "settings"] == ""  # every key of an engine run is a TrainConfig field
    tracked = df.loc[run.id]
    assert tracked["label"] == f"my bn net · lr 0.01 · bs 32 · {run.id[-4:]}" and tracked["state"] == "done"
    assert tracked["settings"] == "dropout=0.25, hidden=[128, 64]" and tracked["dataset"] == "unknown"
    shown = runs_display(df.reset_index()).set_index("id")
    assert shown.loc[run.id, "epochs"] == "1" and shown.loc[run.id, "other settings"] == tracked["settings"]


def test_a_grid_of_your_own_model_shows_its_short_name():
    df = configs_frame([TrainConfig(arch="/home/me/mynet.py:MyNet"), TrainConfig(arch="basic_nn")])
    assert list(df["arch"]) == ["mynet.py:MyNet", "basic_nn"]


def test_the_change_signature_moves_with_an_epoch_a_state_or_a_grown_metrics_file_and_nothing_else(store):
    run_id = store.create_run(TrainConfig(epochs=5))
    r = store.get_run(run_id)
    files = {run_id: (100, 1)}
    same = change_signature([r], files)
    assert change_signature([r], dict(files)) == same
    assert change_signature([dataclasses.replace(r, batch=7, batches=60, updated=r.updated + 1)], files) == same
    assert change_signature([dataclasses.replace(r, epoch=1)], files) != same
    assert change_signature([dataclasses.replace(r, state=RunState.DONE)], files) != same
    assert change_signature([dataclasses.replace(r, error="diverged")], files) != same
    assert change_signature([r], {run_id: (180, 2)}) != same  # a line was appended
    assert change_signature([r], {run_id: None}) != same  # the file is gone
    assert change_signature([], files) != same  # the run was deleted


def test_the_change_signature_with_progress_moves_with_every_batch_and_ignores_the_order_of_runs(store):
    a, b = (store.get_run(store.create_run(TrainConfig(epochs=5, seed=s))) for s in (0, 1))
    assert change_signature([a, b], progress=True) == change_signature([b, a], progress=True)
    assert change_signature([dataclasses.replace(a, batch=3), b], progress=True) != change_signature(
        [a, b], progress=True
    )
