"""fit(): learning, determinism, divergence, cancel and resume, and the registry summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from engine.config import TrainConfig
from engine.errors import ConfigError
from engine.files import read_metrics
from engine.ml.precision import resolve_precision
from engine.ml.splits import Split
from engine.ml.train import (
    Callbacks,
    Outcome,
    _Diverged,
    evaluate,
    fit,
    load_trained,
    pick_device,
    preflight,
    train_one_epoch,
)
from engine.runs.records import RunState
from engine.runs.runner import run_training
from engine.runs.store import Store
from tests.disk_layouts import write_mnist_raw

TIMING = ("seconds", "samples_per_s")  # wall-clock fields: the only ones allowed to differ between runs


pytestmark = pytest.mark.usefixtures("one_thread")

# Measured on finished_root's runs (mnist_sample, 600 training images, 2 epochs, seed 0): basic_nn
# reaches 0.74 test accuracy and simple_cnn 0.755 (seeds 1 and 2: 0.71-0.76). Chance is 0.10.
FLOORS = {"basic_nn": 0.65, "simple_cnn": 0.65}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Config fields for a tiny MNIST-layout dataset (96 train, 40 test images): the mechanics of fit
    (determinism, divergence, resume) need no real digits, and this keeps each fit well under a second."""
    root = tmp_path_factory.mktemp("tiny-data")
    write_mnist_raw(root, n_train=96, n_test=40)
    return dict(dataset="mnist", data_root=str(root), batch_size=32, seed=0)


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.parametrize("arch", sorted(FLOORS))
def test_fit_on_mnist_sample_reaches_the_measured_accuracy_floor(finished_root, arch):
    store = Store(finished_root)
    (run,) = [r for r in store.list_runs() if r.arch == arch]
    rows = store.metrics(run.id)
    assert run.state == RunState.DONE and [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["test_acc"] >= FLOORS[arch]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]  # it learns
    assert run.final_test_acc == rows[-1]["test_acc"]
    store.close()


def test_metrics_rows_carry_every_promised_field(finished_root):
    store = Store(finished_root)
    for run in store.list_runs():
        for row in store.metrics(run.id):
            assert set(row) == {
                "epoch",
                "train_loss",
                "train_acc",
                "val_loss",
                "val_acc",
                "test_loss",
                "test_acc",
                "seconds",
                "samples_per_s",
                "lr",
                "precision",
            }
            assert all(0 <= row[k] <= 1 for k in ("train_acc", "val_acc", "test_acc"))
            assert row["seconds"] > 0 and row["samples_per_s"] > 0 and row["lr"] == 1e-3
    store.close()


def test_finished_run_leaves_a_final_model_that_reproduces_its_test_accuracy(finished_root):
    store = Store(finished_root)
    run = [r for r in store.list_runs() if r.arch == "simple_cnn"][0]
    model, ds = load_trained(run.path, run.train_config(), torch.device("cpu"))
    assert not model.training
    loss, acc = evaluate(model, ds.test)
    assert acc == pytest.approx(run.final_test_acc) and loss == pytest.approx(run.final_test_loss)
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl", "model.pt"]
    store.close()


def test_same_seed_gives_the_same_metrics_and_another_seed_does_not(tmp_path, tiny):
    config = TrainConfig(arch="simple_cnn_bn", epochs=2, val_split=0.1, **tiny)
    a = fit(config, tmp_path / "a")
    b = fit(config, tmp_path / "b")
    c = fit(config.replace(seed=1), tmp_path / "c")
    assert a.outcome == b.outcome == Outcome.DONE
    assert without_timing(a.metrics) == without_timing(b.metrics)
    assert without_timing(a.metrics) != without_timing(c.metrics)
    sa = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_huge_learning_rate_stops_the_run_as_diverged_naming_epoch_batch_and_lr(store, tiny):
    config = TrainConfig(arch="basic_nn", epochs=3, optimizer="sgd", lr=1e6, **tiny)
    run_id = store.create_run(config)
    state, message = run_training(store, run_id)
    assert state == RunState.DIVERGED
    assert re.search(r"the loss became \S+ at epoch \d+, batch \d+ of \d+", message)
    assert "learning rate (1e+06)" in message and "too high" in message
    run = store.get_run(run_id)
    assert run.state == RunState.DIVERGED and run.error == message
    assert not (run.path / "model.pt").exists() and store.metrics(run_id) == []


def cancel_at(epoch: int) -> tuple[Callbacks, list]:
    """Callbacks that cancel at the first batch of `epoch`, as a user's Cancel or a Ctrl+C would."""
    seen = []

    def on_batch(e, batch, batches):
        seen.append((e, batch, batches))

    return Callbacks(on_batch=on_batch, should_stop=lambda: seen[-1][0] >= epoch), seen


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny):
    """Three epochs of a model with dropout and batch norm (so the resumed random state and the
    running statistics matter) in one go."""
    config = TrainConfig(arch="simple_cnn_bn", epochs=3, val_split=0.1, **tiny)
    run_dir = tmp_path_factory.mktemp("straight")
    result = fit(config, run_dir)
    assert result.outcome == Outcome.DONE
    return config, run_dir, result


def test_resume_after_a_cancel_neither_repeats_nor_loses_an_epoch(uninterrupted, tmp_path):
    config, straight_dir, straight = uninterrupted
    callbacks, seen = cancel_at(epoch=3)
    first = fit(config, tmp_path, callbacks)
    assert first.outcome == Outcome.CANCELLED and "cancelled during epoch 3" in first.message
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert seen[-1][:2] == (3, 1) and not (tmp_path / "model.pt").exists()

    epochs_trained = []
    second = fit(config, tmp_path, Callbacks(on_epoch=lambda row: epochs_trained.append(row["epoch"])))
    assert second.outcome == Outcome.DONE and epochs_trained == [3]
    assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert without_timing(read_metrics(tmp_path / "metrics.jsonl")) == without_timing(straight.metrics)
    resumed = torch.load(tmp_path / "model.pt", weights_only=True)
    reference = torch.load(straight_dir / "model.pt", weights_only=True)
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_resume_after_a_crash_between_checkpoint_and_metrics_line_restores_the_lost_line(uninterrupted, tmp_path):
    config, _, straight = uninterrupted
    callbacks, _ = cancel_at(epoch=3)
    fit(config, tmp_path, callbacks)
    # The process died after checkpointing epoch 2 but while writing its metrics line.
    metrics = tmp_path / "metrics.jsonl"
    first_line = metrics.read_text().split("\n")[0]
    metrics.write_text(first_line + "\n" + '{"epoch": 2, "train_lo')
    assert [r["epoch"] for r in read_metrics(metrics)] == [1]
    kept = []
    result = fit(config, tmp_path, Callbacks(on_start=kept.extend))
    assert [r["epoch"] for r in kept] == [1, 2]  # what the checkpoint holds
    assert result.outcome == Outcome.DONE
    assert without_timing(read_metrics(metrics)) == without_timing(straight.metrics)
    assert metrics.read_text().count("\n") == 3


def test_resumed_run_keeps_the_registry_summary_consistent(store, tiny):
    config = TrainConfig(arch="basic_nn", epochs=3, **tiny)
    run_id = store.create_run(config)
    stop_at = {"epoch": 2}
    progress = []

    def on_batch(epoch, batch, batches):
        progress.append(epoch)

    state, message = run_training(
        store, run_id, on_batch=on_batch, should_stop=lambda: progress[-1] >= stop_at["epoch"]
    )
    assert state == RunState.CANCELLED and "1 finished epoch(s) kept" in message
    assert store.get_run(run_id).epoch == 1
    state, _ = run_training(store, run_id)  # what the worker does when it picks the run up again
    run = store.get_run(run_id)
    rows = store.metrics(run_id)
    assert state == RunState.DONE and run.error is None and [r["epoch"] for r in rows] == [1, 2, 3]
    assert (run.epoch, run.final_test_acc, run.final_test_loss) == (3, rows[-1]["test_acc"], rows[-1]["test_loss"])
    assert run.best_test_acc == max(r["test_acc"] for r in rows)
    assert run.sec_per_epoch == pytest.approx(sum(r["seconds"] for r in rows) / 3)


def test_progress_callbacks_report_every_batch_and_every_epoch(tmp_path, tiny):
    config = TrainConfig(arch="tiny_cnn", epochs=2, **tiny)
    batches, rows = [], []
    result = fit(config, tmp_path, Callbacks(on_batch=lambda *a: batches.append(a), on_epoch=rows.append))
    assert batches == [(e, b, 3) for e in (1, 2) for b in (1, 2, 3)]
    assert rows == result.metrics and [r["epoch"] for r in rows] == [1, 2]
    assert "val_loss" not in rows[0]  # no validation split asked for


def test_failing_run_is_marked_failed_with_its_traceback_saved(store, tmp_path):
    config = TrainConfig(dataset=f"folder:{tmp_path / 'no-such-folder'}", epochs=1)
    run_id = store.create_run(config)
    state, message = run_training(store, run_id)
    assert state == RunState.FAILED and message.startswith("DatasetError: dataset 'folder:")
    run = store.get_run(run_id)
    assert run.error == message and "Traceback" in (run.path / "traceback.txt").read_text()


def test_preflight_checks_the_batch_size_against_the_limited_training_split():
    assert preflight(TrainConfig(train_limit=100, batch_size=100)) == 100
    with pytest.raises(ConfigError, match=r"training set size \(100\), got 101"):
        preflight(TrainConfig(train_limit=100, batch_size=101))


def test_preflight_rejects_images_too_small_for_the_architecture(tmp_path, monkeypatch):
    from PIL import Image

    from engine.errors import ModelError
    from engine.ml import folders

    monkeypatch.setattr(folders, "FOLDER_IMAGE_SIDE", 8)  # folder images are 32x32 unless told otherwise

    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / split / label).mkdir(parents=True)
            Image.new("L", (8, 8)).save(tmp_path / split / label / "0.png")
    with pytest.raises(ModelError, match="cannot take 1x8x8 images"):
        preflight(TrainConfig(dataset=f"folder:{tmp_path}", arch="simple_cnn_bn", batch_size=1))
    assert preflight(TrainConfig(dataset=f"folder:{tmp_path}", arch="basic_nn", batch_size=1)) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_asking_for_cuda_without_a_gpu_is_a_config_error():
    with pytest.raises(ConfigError, match="no CUDA GPU is available; use 'auto' or 'cpu'"):
        pick_device("cuda")
    assert pick_device("auto") == torch.device("cpu")


def test_config_json_is_not_rewritten_by_training(finished_root):
    store = Store(finished_root)
    for run in store.list_runs():
        assert json.loads((Path(run.path) / "config.json").read_text()) == run.config
    store.close()


def test_a_run_deleted_while_it_trains_leaves_no_orphan_folder_behind(store, tiny):
    config = TrainConfig(arch="basic_nn", epochs=2, **tiny)
    run_id = store.create_run(config)

    def on_batch(epoch, batch, batches):  # the dashboard's delete, before the worker sees the cancel flag
        if store.has_run(run_id):
            store.delete_run(run_id)

    run_training(store, run_id, on_batch=on_batch)  # its checkpoint writes would recreate the folder
    assert not store.has_run(run_id)
    assert not store.run_dir(run_id).exists()


# ---------------------------------------------------------------- damaged checkpoints and weights


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_checkpoint_resumes_from_the_previous_one_and_the_run_says_so(uninterrupted, tmp_path):
    config, straight_dir, straight = uninterrupted
    callbacks, _ = cancel_at(epoch=3)
    fit(config, tmp_path, callbacks)  # epochs 1 and 2 are checkpointed
    assert (tmp_path / "checkpoint.prev.pt").is_file()  # epoch 1, kept when epoch 2 replaced it
    truncate(tmp_path / "checkpoint.pt")  # once: "OSError: [Errno 22] Invalid argument", and retry started over
    (tmp_path / ".checkpoint.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")  # a write a crash interrupted
    trained = []
    result = fit(config, tmp_path, Callbacks(on_epoch=lambda row: trained.append(row["epoch"])))
    assert result.outcome == Outcome.DONE and trained == [2, 3]  # epoch 2 again, from the previous checkpoint
    assert "checkpoint.pt could not be read" in result.message
    assert "resumed from checkpoint.prev.pt after epoch 1" in result.message
    assert without_timing(read_metrics(tmp_path / "metrics.jsonl")) == without_timing(straight.metrics)
    resumed = torch.load(tmp_path / "model.pt", weights_only=True)
    reference = torch.load(straight_dir / "model.pt", weights_only=True)
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    assert not list(tmp_path.glob(".*.tmp"))


def test_when_no_checkpoint_loads_the_run_starts_over_and_says_why(uninterrupted, store):
    config, _, straight = uninterrupted
    run_id = store.create_run(config)
    callbacks, _ = cancel_at(epoch=3)
    fit(config, store.run_dir(run_id), callbacks)
    truncate(store.run_dir(run_id) / "checkpoint.pt")
    (store.run_dir(run_id) / "checkpoint.prev.pt").write_bytes(b"")
    state, message = run_training(store, run_id)
    assert state == RunState.DONE
    assert "no checkpoint could be read, so training started again from epoch 1" in message
    assert store.get_run(run_id).error == message  # the run's note on the Runs page and in `show`
    assert without_timing(store.metrics(run_id)) == without_timing(straight.metrics)


def test_a_truncated_model_file_is_one_clear_error(finished_root, tmp_path):
    import shutil

    from engine.errors import ModelError

    store = Store(finished_root)
    run = store.list_runs()[0]
    store.close()
    shutil.copytree(run.path, tmp_path / run.id)
    truncate(tmp_path / run.id / "model.pt")
    with pytest.raises(ModelError, match=r"model.pt cannot be read .*damaged or incomplete; train the run again"):
        load_trained(tmp_path / run.id, run.train_config())


@pytest.mark.parametrize("asked", ["fp32", "bf16", "auto"])
def test_the_precision_asked_for_is_in_config_json_and_the_one_that_ran_in_every_metrics_row(store, asked):
    run_id = store.create_run(TrainConfig(arch="simple_cnn", epochs=1, train_limit=200, precision=asked))
    state, message = run_training(store, run_id)
    assert state == RunState.DONE, message
    assert json.loads((store.run_dir(run_id) / "config.json").read_text())["precision"] == asked
    ran = resolve_precision(asked, torch.device("cpu"))
    assert [row["precision"] for row in store.metrics(run_id)] == [ran]


def test_evaluation_in_large_batches_equals_a_plain_loop_one_image_at_a_time(finished_root):
    store = Store(finished_root)
    run = [r for r in store.list_runs() if r.arch == "simple_cnn"][0]
    model, ds = load_trained(run.path, run.train_config(), torch.device("cpu"))
    test = ds.test.subset(torch.arange(300))
    losses, hits = [], 0
    with torch.no_grad():
        for i in range(len(test)):
            out = model(test.inputs(slice(i, i + 1)))
            losses.append(torch.nn.functional.cross_entropy(out, test.y[i : i + 1]).item())
            hits += int(out.argmax(1).item() == test.y[i].item())
    loss, acc = evaluate(model, test)
    assert acc == hits / len(test) and loss == pytest.approx(sum(losses) / len(test), rel=1e-5)
    assert evaluate(model.to(memory_format=torch.channels_last), test, channels_last=True)[1] == acc
    store.close()


def test_a_divergence_check_read_every_few_batches_still_names_the_first_bad_batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.randn(40, 1, 2, 2)
    x[17] = float("nan")  # the batch it lands in follows from the seeded order
    split = Split(x, torch.zeros(40, dtype=torch.long))
    order = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    first_bad = int((order == 17).nonzero()) // 4 + 1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(_Diverged, match=f"at epoch 1, batch {first_bad} of 10"):
        train_one_epoch(model, optimizer, split, 4, torch.Generator().manual_seed(1), 1, Callbacks(), check_every=4)
