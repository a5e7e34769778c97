"""The pure table builders and form parsers behind the pages, tested without Streamlit."""

from __future__ import annotations

import dataclasses
import math

import pytest
from scipy import stats

from dashboard.forms import grid_size, human_count, parameter_count, parse_float, parse_list
from dashboard.tables import (
    SummarySpec,
    ValueRule,
    any_active,
    change_signature,
    compare_summary,
    configs_frame,
    default_selection,
    ema,
    filter_runs,
    group_curve,
    group_table,
    metrics_long,
    metrics_wide,
    run_groups,
    runs_display,
    runs_frame,
    summary_table,
    varying_hyperparams,
)
from engine.config import ConfigError, TrainConfig
from engine.files import append_metrics
from engine.runs.records import RunState


def epoch_row(epoch, train_loss, test_loss, test_acc, *, val_loss=None, seconds=1.0):
    row = {"epoch": epoch, "train_loss": train_loss, "train_acc": 1 - train_loss / 3, "test_loss": test_loss,
           "test_acc": test_acc, "seconds": seconds}
    if val_loss is not None:
        row["val_loss"], row["val_acc"] = val_loss, 1 - val_loss / 3
    return row


def make_runs(store, specs, now=1_700_000_000.0):
    """specs: (arch, lr, state, [metrics rows]); returns the run ids in order."""
    ids = []
    for i, (arch, lr, state, rows) in enumerate(specs):
        run_id = store.create_run(TrainConfig(arch=arch, lr=lr, epochs=max(len(rows), 1)), now=now + i)
        for row in rows:
            store.record_epoch(run_id, row)
        store.set_state(run_id, RunState(state))
        ids.append(run_id)
    return ids


def test_runs_frame_lists_newest_first_with_summary_columns_and_progress(store):
    old, new = make_runs(store, [("basic_nn", 1e-3, "done", [epoch_row(1, 1.0, 0.9, 0.7)]),
                                 ("simple_cnn", 1e-2, "queued", [])])
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
    make_runs(store, [("basic_nn", 1e-3, "done", []), ("simple_cnn", 1e-3, "failed", []),
                      ("simple_cnn", 1e-2, "done", [])])
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
    ids = make_runs(store, [("basic_nn", 1e-3, "done", []), ("basic_nn", 1e-2, "done", []),
                            ("simple_cnn", 1e-3, "done", []), ("simple_cnn", 1e-3, "failed", []),
                            ("tiny_cnn", 1e-3, "running", [])])
    df = runs_frame(store.list_runs())
    assert default_selection(df, "mnist_sample") == [ids[1], ids[2]]
    assert default_selection(df, "cifar10") == []
    assert default_selection(df) == [ids[1], ids[2]]


def test_metrics_long_has_one_row_per_split_and_cumulative_elapsed_time():
    rows = [epoch_row(1, 1.0, 0.9, 0.6, val_loss=0.95, seconds=2.0),
            epoch_row(2, 0.5, 0.6, 0.8, val_loss=0.65, seconds=3.0)]
    long = metrics_long({"a": rows, "b": [epoch_row(1, 2.0, 1.9, 0.3)], "empty": []})
    assert set(long["split"]) == {"train", "val", "test"}
    assert len(long[long["run"] == "a"]) == 6 and len(long[long["run"] == "b"]) == 2
    a_test = long[(long["run"] == "a") & (long["split"] == "test")]
    assert list(a_test["elapsed"]) == [2.0, 5.0] and list(a_test["acc"]) == [0.6, 0.8]
    assert metrics_long({}).empty


def test_metrics_wide_restores_one_row_per_run_and_epoch_for_the_csv():
    rows = [epoch_row(1, 1.0, 0.9, 0.6, seconds=2.0), epoch_row(2, 0.5, 0.6, 0.8, seconds=3.0)]
    wide = metrics_wide(metrics_long({"a": rows}))
    assert list(wide["epoch"]) == [1, 2]
    assert list(wide["test_acc"]) == [0.6, 0.8] and list(wide["seconds"]) == [2.0, 3.0]
    assert {"train_loss", "test_loss"} <= set(wide.columns)


@pytest.fixture
def two_runs(store):
    a, b = make_runs(store, [("basic_nn", 1e-3, "done", []), ("simple_cnn", 1e-2, "done", [])])
    long = metrics_long({
        a: [epoch_row(1, 1.0, 0.9, 0.60, seconds=1), epoch_row(2, 0.6, 0.7, 0.75, seconds=1),
            epoch_row(3, 0.4, 0.8, 0.70, seconds=1)],
        b: [epoch_row(1, 0.8, 0.5, 0.80, seconds=4), epoch_row(2, 0.4, 0.45, 0.85, seconds=4)],
    })
    return a, b, long, runs_frame(store.list_runs())


def test_summary_table_final_value_and_difference_to_the_baseline_in_points(two_runs):
    a, b, long, runs = two_runs
    table = summary_table(long, runs, SummarySpec(metric="acc", split="test", baseline=a)).set_index("run")
    assert table.loc[a, "value"] == pytest.approx(70.0) and table.loc[b, "value"] == pytest.approx(85.0)
    assert table.loc[b, "vs baseline"] == pytest.approx(15.0) and table.loc[a, "vs baseline"] == 0
    assert table.loc[a, "s / epoch"] == pytest.approx(1.0) and table.loc[b, "s / epoch"] == pytest.approx(4.0)
    assert table.attrs["diff_unit"] == "percentage points"
    assert "final test accuracy" in table.attrs["value_name"]


def test_summary_table_best_rule_takes_max_accuracy_and_min_loss(two_runs):
    a, b, long, runs = two_runs
    acc = summary_table(long, runs, SummarySpec(metric="acc", rule=ValueRule.BEST)).set_index("run")
    assert acc.loc[a, "value"] == pytest.approx(75.0) and acc.loc[a, "from epoch"] == 2
    loss = summary_table(long, runs, SummarySpec(metric="loss", rule=ValueRule.BEST)).set_index("run")
    assert loss.loc[a, "value"] == pytest.approx(0.7) and loss.loc[a, "from epoch"] == 2
    assert math.isnan(loss.loc[a, "vs baseline"])  # no baseline chosen


def test_summary_table_at_epoch_k_is_missing_for_runs_that_stopped_before_k(two_runs):
    a, b, long, runs = two_runs
    table = summary_table(long, runs, SummarySpec(metric="loss", split="train", rule=ValueRule.AT_EPOCH,
                                                  epoch=3, baseline=b)).set_index("run")
    assert table.loc[a, "value"] == pytest.approx(0.4)
    assert math.isnan(table.loc[b, "value"])
    assert "at epoch 3" in table.attrs["value_name"]


def test_varying_hyperparams_names_what_a_sweep_changed(two_runs):
    _, _, _, runs = two_runs
    assert varying_hyperparams(runs) == ["arch", "lr"]
    assert varying_hyperparams(runs.iloc[:1]) == []


def test_configs_frame_numbers_the_runs_of_a_grid():
    grid = [TrainConfig(lr=lr, batch_size=bs) for lr in (1e-3, 1e-2) for bs in (32, 64)]
    df = configs_frame(grid)
    assert len(df) == 4 and list(df.index) == [1, 2, 3, 4]
    assert list(df["batch_size"]) == [32, 64, 32, 64]


def test_parse_list_reads_comma_separated_values_and_explains_mistakes():
    assert parse_list("1e-3, 1e-2, 1e-3", "learning rates", float) == [1e-3, 1e-2]
    assert parse_list(" 32;128 ", "batch sizes", int) == [32, 128]
    with pytest.raises(ConfigError, match="batch sizes: '3.5' is not a whole number"):
        parse_list("32, 3.5", "batch sizes", int)
    with pytest.raises(ConfigError, match="at least one value"):
        parse_list(" , ", "seeds", int)
    with pytest.raises(ConfigError, match="learning rate must be a number"):
        parse_float("fast", "learning rate")
    with pytest.raises(ConfigError, match="finite"):
        parse_float("inf", "learning rate")


def test_parameter_count_depends_on_the_image_shape():
    mnist = parameter_count("basic_nn", (1, 28, 28), 10)
    assert mnist == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert parameter_count("basic_nn", (3, 32, 32), 10) > mnist
    assert human_count(mnist) == "109.4k" and human_count(11_200_000) == "11.20M" and human_count(42) == "42"


def test_grid_size_is_the_product_of_the_list_lengths():
    assert grid_size(lr=[1, 2, 3], batch_size=[1, 2], arch=["a", "b"]) == 12
    assert grid_size() == 0


# ---------------------------------------------------------------- groups of seeds


def seeded(store, specs, now=1_700_000_000.0):
    """specs: (arch, seed, final test accuracy); done runs with two epochs each; returns the run ids."""
    ids = []
    for i, (arch, seed, acc) in enumerate(specs):
        run_id = store.create_run(TrainConfig(arch=arch, seed=seed, epochs=2), now=now + i)
        for row in (epoch_row(1, 1.0, 0.9, acc - 0.1), epoch_row(2, 0.5, 0.6, acc)):
            store.record_epoch(run_id, row)
            append_metrics(store.paths(run_id).metrics, row)
        store.set_state(run_id, RunState.DONE)
        ids.append(run_id)
    return ids


def test_default_selection_brings_the_other_seeds_of_the_latest_run_of_each_arch(store):
    ids = seeded(store, [("basic_nn", 0, 0.90), ("basic_nn", 1, 0.91), ("simple_cnn", 0, 0.95),
                         ("simple_cnn", 1, 0.96)])
    other = make_runs(store, [("simple_cnn", 1e-2, "done", [])], now=1_600_000_000.0)  # an older lr: not a sibling
    df = runs_frame(store.list_runs())
    assert default_selection(df) == ids
    assert other[0] not in default_selection(df)


def test_run_groups_put_seeds_together_or_group_by_a_hyperparameter_or_by_sweep(store):
    a0, a1, b0 = seeded(store, [("basic_nn", 0, 0.90), ("basic_nn", 1, 0.91), ("simple_cnn", 0, 0.95)])
    configs = {r.id: r.config for r in store.list_runs()}
    assert run_groups(configs, "config") == [("basic_nn", [a0, a1]), ("simple_cnn", [b0])]
    assert run_groups(configs, "epochs") == [("group 1 · seeds 0, 0, 1", [a0, a1, b0])]
    assert run_groups(configs, "arch") == run_groups(configs, "config")
    by_sweep = run_groups(configs, "sweep", {a0: "sweep-20261130-1a2b", a1: "sweep-20261130-1a2b", b0: None})
    assert by_sweep == [("basic_nn · sweep 20261130-1a2b", [a0, a1]), (f"simple_cnn · sweep none ({b0[-4:]})", [b0])]
    for wrong in ("none", "seed"):  # grouping by seed would split the very runs a group is made of
        with pytest.raises(ValueError, match="group by must be one of config"):
            run_groups(configs, wrong)


def test_a_group_curve_is_the_mean_std_min_and_max_of_its_runs_at_each_epoch():
    long = metrics_long({"a": [epoch_row(1, 1.0, 0.9, 0.5), epoch_row(2, 0.5, 0.6, 0.7)],
                         "b": [epoch_row(1, 1.0, 0.9, 0.7)]})  # b is still at its first epoch
    curve = group_curve(long, ["a", "b"], "test", "acc")
    assert list(curve["epoch"]) == [1, 2] and list(curve["n"]) == [2, 1]
    assert list(curve["mean"]) == pytest.approx([0.6, 0.7])
    assert curve.loc[0, "std"] == pytest.approx(math.sqrt(0.02)) and math.isnan(curve.loc[1, "std"])
    assert (curve.loc[0, "low"], curve.loc[0, "high"]) == pytest.approx((0.5, 0.7))
    assert list(ema([1.0, 0.0], 0.5)) == pytest.approx([1.0, 1 / 3])  # debiased: weights 1 and 0.5
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\)"):
        ema([1.0], 1.0)


def test_the_group_table_has_mean_std_n_and_the_test_against_the_best_group(store):
    ids = seeded(store, [("basic_nn", 0, 0.912), ("basic_nn", 1, 0.921), ("basic_nn", 2, 0.905),
                         ("simple_cnn", 0, 0.962), ("simple_cnn", 1, 0.958), ("simple_cnn", 2, 0.969)])
    records = store.list_runs()
    long = metrics_long({r.id: store.metrics(r.id) for r in records})
    spec = SummarySpec(metric="acc")
    summary = summary_table(long, runs_frame(records), spec)
    groups = run_groups({r.id: r.config for r in records}, "config")
    comparison = compare_summary(summary, groups, spec)
    assert [g.values for g in comparison.groups] == [pytest.approx((0.912, 0.921, 0.905)),
                                                      pytest.approx((0.962, 0.958, 0.969))]
    table = group_table(comparison, spec).set_index("group")
    assert table.loc["basic_nn", "n"] == 3 and table.loc["basic_nn", "seeds"] == "seeds 0-2"
    assert table.loc["basic_nn", "mean"] == pytest.approx(91.2667, abs=1e-4)
    assert table.loc["basic_nn", "std"] == pytest.approx(100 * stats.tstd([0.912, 0.921, 0.905]))
    assert table.loc["basic_nn", "p vs best"] == pytest.approx(
        stats.ttest_ind([0.912, 0.921, 0.905], [0.962, 0.958, 0.969], equal_var=False).pvalue)
    assert table.loc["basic_nn", "call"] == "real" and table.loc["simple_cnn", "call"] == "best"
    assert table.loc["basic_nn", "vs best"] == pytest.approx(-5.0333, abs=1e-4)
    assert set(ids) == {r for g in comparison.groups for r in g.runs}


def test_a_tracked_run_shows_its_name_and_own_settings_and_your_own_model_a_short_name(store):
    from engine import track

    user = store.create_run(TrainConfig(arch="/home/me/models/mynet.py:MyNet", arch_sha256="ab" * 32))
    with track.run(config={"lr": 0.01, "batch_size": 32, "dropout": 0.25, "hidden": [128, 64]},
                   results=store.root, name="my bn net") as run:
        run.log(epoch=1, train_loss=1.0, test_acc=0.5)
    df = runs_frame(store.list_runs()).set_index("id")
    assert df.loc[user, "arch"] == "mynet.py:MyNet" and df.loc[user, "label"].startswith("mynet.py:MyNet · lr 0.001")
    assert df.loc[user, "settings"] == ""  # every key of an engine run is a TrainConfig field
    tracked = df.loc[run.id]
    assert tracked["label"] == f"my bn net · lr 0.01 · bs 32 · {run.id[-4:]}" and tracked["state"] == "done"
    assert tracked["settings"] == "dropout=0.25, hidden=[128, 64]" and tracked["dataset"] == "unknown"
    shown = runs_display(df.reset_index()).set_index("id")
    assert shown.loc[run.id, "epochs"] == "1" and shown.loc[run.id, "other settings"] == tracked["settings"]


def test_a_split_logged_with_only_its_accuracy_still_has_a_curve():
    long = metrics_long({"a": [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.6, "train_loss": 1.0}]})
    test = long[long["split"] == "test"]
    assert list(test["acc"]) == [0.5, 0.6] and test["loss"].isna().all()
    assert list(long[long["split"] == "train"]["loss"]) == [1.0]


def test_values_a_script_logged_besides_loss_and_accuracy_are_found_by_name():
    from dashboard.tables import extra_metric_frame, extra_metric_names

    metrics = {"a": [epoch_row(1, 1.0, 0.9, 0.6) | {"grad_norm": 3.0, "note": "x", "lr": 0.1},
                     epoch_row(2, 0.5, 0.6, 0.8) | {"grad_norm": 2.0}],
               "b": [epoch_row(1, 1.0, 0.9, 0.6)]}
    assert extra_metric_names(metrics) == ["grad_norm"]
    frame = extra_metric_frame(metrics, "grad_norm")
    assert frame.to_dict("list") == {"run": ["a", "a"], "epoch": [1, 2], "value": [3.0, 2.0]}


def test_a_grid_of_your_own_model_shows_its_short_name():
    df = configs_frame([TrainConfig(arch="/home/me/mynet.py:MyNet"), TrainConfig(arch="basic_nn")])
    assert list(df["arch"]) == ["mynet.py:MyNet", "basic_nn"]


def test_parameter_count_of_your_own_model_follows_edits_to_its_file(tmp_path):
    path = tmp_path / "net.py"
    source = ("from torch import nn\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n"
              "        super().__init__()\n        self.fc = nn.Linear(784, num_classes)\n"
              "    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
    path.write_text(source)
    assert parameter_count(f"{path}:Net", (1, 28, 28), 10) == 7850
    path.write_text(source.replace("num_classes)\n", "num_classes, bias=False)\n"))
    assert parameter_count(f"{path}:Net", (1, 28, 28), 10) == 7840


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
    assert change_signature([dataclasses.replace(a, batch=3), b], progress=True) != change_signature([a, b],
                                                                                                    progress=True)
