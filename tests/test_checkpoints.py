"""Checkpoints and weights files on their own: the previous checkpoint kept, the newest that loads used,
damage said in one line. (Resuming a whole run through fit() is tested in test_train.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.errors import ModelError
from engine.files import RunPaths
from engine.ml.checkpoints import atomic_torch_save, load_checkpoint, load_weights, save_checkpoint

CPU = torch.device("cpu")


def model_and_optimizer(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> dict:
    rows = [{"epoch": e, "test_acc": e / 10} for e in range(1, epoch + 1)]
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "rng": torch.get_rng_state(),
        "metrics": rows,
    }


@pytest.fixture
def paths(tmp_path) -> RunPaths:
    paths = RunPaths(tmp_path / "run")
    paths.dir.mkdir()
    return paths


def test_a_new_checkpoint_keeps_the_one_it_replaces_as_prev(paths):
    model, optimizer = model_and_optimizer(0)
    save_checkpoint(paths, checkpoint(model, optimizer, 1))
    save_checkpoint(paths, checkpoint(model, optimizer, 2))
    assert torch.load(paths.checkpoint, weights_only=True)["epoch"] == 2
    assert torch.load(paths.checkpoint_prev, weights_only=True)["epoch"] == 1


def test_loading_restores_the_weights_and_says_where_to_start(paths):
    saved, saved_opt = model_and_optimizer(0)
    save_checkpoint(paths, checkpoint(saved, saved_opt, 3))
    model, optimizer = model_and_optimizer(1)
    start, rows, note = load_checkpoint(paths, model, optimizer, CPU)
    assert (start, [r["epoch"] for r in rows], note) == (4, [1, 2, 3], "")
    assert torch.equal(model.weight, saved.weight)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_and_is_removed(paths):
    model, optimizer = model_and_optimizer(0)
    save_checkpoint(paths, checkpoint(model, optimizer, 1))
    save_checkpoint(paths, checkpoint(model, optimizer, 2))
    paths.checkpoint.write_bytes(paths.checkpoint.read_bytes()[:100])  # a torn write
    start, rows, note = load_checkpoint(paths, *model_and_optimizer(1), CPU)
    assert start == 2 and len(rows) == 1
    assert "checkpoint.pt could not be read" in note and "resumed from checkpoint.prev.pt after epoch 1" in note
    assert not paths.checkpoint.exists()


def test_when_nothing_loads_training_starts_over_with_the_model_left_as_it_was(paths):
    paths.checkpoint.write_bytes(b"not a checkpoint")
    model, optimizer = model_and_optimizer(1)
    before = model.weight.detach().clone()
    start, rows, note = load_checkpoint(paths, model, optimizer, CPU)
    assert (start, rows) == (1, []) and "training started again from epoch 1" in note
    assert torch.equal(model.weight, before)


def test_temporary_files_of_cut_short_writes_are_cleaned_up(paths):
    leftover = paths.dir / f".{paths.checkpoint.name}.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    assert load_checkpoint(paths, *model_and_optimizer(0), CPU) == (1, [], "")
    assert not leftover.exists()


def test_a_damaged_weights_file_is_one_model_error_saying_how_to_retrain(paths):
    atomic_torch_save(paths.model, nn.Linear(3, 2).state_dict())
    assert set(load_weights(paths.model, CPU)) == {"weight", "bias"}
    paths.model.write_bytes(paths.model.read_bytes()[:50])
    with pytest.raises(ModelError, match=r"damaged or incomplete.*python -m engine retry run"):
        load_weights(paths.model, CPU)
