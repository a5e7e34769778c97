"""Datasets in memory: uint8 images and normalised batches, the cache (re-read when files change), folder
datasets, mnist_sample and the splits. The readers of each on-disk layout are tested in tests/test_readers.py."""

from __future__ import annotations

import sys

import pytest
import torch

from engine.errors import DatasetError
from engine.ml import splits
from engine.ml.data import load_dataset, load_raw, split_train
from engine.ml.splits import batches, stratified_first
from tests.disk_layouts import write_image_folder, write_mnist_raw
from tests.test_readers import assert_helpful

# ---------------------------------------------------------------- in memory


def test_load_dataset_keeps_uint8_images_and_normalises_inputs_with_the_training_statistics(tmp_path):
    write_mnist_raw(tmp_path, n_train=200)
    ds = load_dataset("mnist", tmp_path)
    assert ds.shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.train.x.dtype == torch.uint8 and ds.test.x.dtype == torch.uint8 and ds.train.y.dtype == torch.int64
    inputs = ds.train.inputs()
    assert inputs.dtype == torch.float32
    assert abs(inputs.mean().item()) < 1e-3 and abs(inputs.std().item() - 1) < 1e-2
    assert load_dataset("mnist", tmp_path) is ds  # cached: read from disk once per process


def test_channel_statistics_in_chunks_match_those_of_the_whole_float_tensor(monkeypatch):
    monkeypatch.setattr(splits, "STATS_CHUNK", 3 * 32 * 32 * 7)  # 7 images per step, a partial last one
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    mean, std = splits.channel_stats(images)
    as_float = images.float() / 255
    assert mean == pytest.approx(as_float.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert std == pytest.approx(as_float.std(dim=(0, 2, 3)).tolist(), abs=1e-6)


def test_batches_normalise_uint8_images_to_exactly_the_values_of_normalising_the_whole_split(sample):
    whole = sample.normalise(sample.train.x)  # what the split used to hold, as float32
    order_seen = []
    for x, y in batches(sample.train, 512, torch.Generator().manual_seed(0)):
        assert x.dtype == torch.float32
        order_seen.append((x, y))
    order = torch.randperm(len(sample.train), generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([x for x, _ in order_seen]), whole[order])
    assert torch.equal(sample.test.inputs(7), sample.normalise(sample.test.x[7:8])[0])
    assert torch.equal(sample.test.inputs(slice(0, 300)), sample.normalise(sample.test.x)[:300])


# ---------------------------------------------------------------- folder:PATH


def test_image_folder_loads_classes_from_subfolders(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    train_x, train_y, test_x, test_y, classes = load_raw(f"folder:{root}", "unused")
    assert classes == ["cat", "dog"]
    assert train_x.shape == (6, 3, 32, 32) and test_x.shape == (6, 3, 32, 32)  # (N, C, H, W), the fixed size
    assert train_y.tolist() == [0, 0, 0, 1, 1, 1]
    ds = load_dataset(f"folder:{root}")
    assert ds.shape == (3, 32, 32) and ds.classes == ["cat", "dog"]


def test_greyscale_image_folder_gives_one_channel(tmp_path):
    root = write_image_folder(tmp_path / "digits", classes=("a", "b", "c"), mode="L", size=(28, 28))
    train_x, *_, classes = load_raw(f"folder:{root}", "unused")
    assert train_x.shape == (9, 1, 32, 32) and classes == ["a", "b", "c"]


def test_image_folder_without_a_test_split_or_with_a_broken_image_is_explained(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    (root / "train" / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DatasetError) as info:
        load_raw(f"folder:{root}", "unused")
    assert_helpful(info.value, "1.png", "unreadable image", "PATH/train/<class>")
    for f in (root / "test").rglob("*.png"):
        f.unlink()
    (root / "train" / "dog" / "1.png").unlink()
    with pytest.raises(DatasetError) as info:
        load_raw(f"folder:{root}", "unused")
    assert_helpful(info.value, str(root / "test"), "no images found")


def test_image_folder_is_reread_after_its_files_change(tmp_path):
    root = write_image_folder(tmp_path / "pets", per_class=2)
    assert len(load_dataset(f"folder:{root}").train) == 4
    import shutil

    shutil.copy(root / "train" / "cat" / "0.png", root / "train" / "cat" / "9.png")
    assert len(load_dataset(f"folder:{root}").train) == 5


def test_mnist_files_replaced_under_the_same_root_are_read_again(tmp_path):
    write_mnist_raw(tmp_path, n_train=60)
    assert len(load_dataset("mnist", tmp_path).train) == 60
    write_mnist_raw(tmp_path, n_train=80)
    assert len(load_dataset("mnist", tmp_path).train) == 80


# ---------------------------------------------------------------- mnist_sample and the splits


@pytest.fixture(scope="module")
def sample():
    return load_dataset("mnist_sample")


def test_mnist_sample_is_4000_train_and_1000_test_stratified(sample):
    assert len(sample.train) == 4000 and len(sample.test) == 1000
    assert sample.shape == (1, 28, 28) and sample.num_classes == 10
    assert torch.bincount(sample.train.y).tolist() == [400] * 10
    assert torch.bincount(sample.test.y).tolist() == [100] * 10


def test_validation_split_is_seeded_stratified_and_disjoint(sample):
    train_a, val_a = split_train(sample, 0.1, None, seed=3)
    train_b, val_b = split_train(sample, 0.1, None, seed=3)
    _, val_c = split_train(sample, 0.1, None, seed=4)
    assert torch.equal(val_a.images(), val_b.images()) and torch.equal(train_a.y, train_b.y)
    assert not torch.equal(val_a.images(), val_c.images())
    assert torch.bincount(val_a.y).tolist() == [40] * 10
    assert len(train_a) + len(val_a) == 4000
    # Disjoint: no validation image is also a training image.
    flat_train = {tuple(r) for r in train_a.images().flatten(1)[:, 300:340].tolist()}
    assert not any(tuple(r) in flat_train for r in val_a.images().flatten(1)[:, 300:340].tolist())
    assert val_a.x is sample.train.x and train_a.x is sample.train.x  # rows of the dataset, not copies


def test_train_limit_takes_a_stratified_subset(sample):
    train, val = split_train(sample, 0.0, 50, seed=0)
    assert val is None and len(train) == 50
    assert torch.bincount(train.y, minlength=10).tolist() == [5] * 10
    train, _ = split_train(sample, 0.0, 23, seed=0)
    counts = torch.bincount(train.y, minlength=10)
    assert len(train) == 23 and counts.min() == 2 and counts.max() == 3


def test_stratified_first_takes_classes_round_robin_in_file_order():
    y = torch.tensor([0, 0, 1, 2, 1, 0, 2, 2, 1, 0])
    assert stratified_first(y, 5).tolist() == [0, 1, 2, 3, 4]  # 0,2,3 (first of each), then 1,4
    assert stratified_first(y, 7).tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert stratified_first(y, 100).tolist() == list(range(10))


def test_a_tiny_validation_fraction_still_holds_out_one_image_per_class(sample):
    train, val = split_train(sample, 0.001, None, seed=0)
    assert torch.bincount(val.y).tolist() == [1] * 10 and len(train) == 3990


def test_batches_cover_a_seeded_permutation_once(sample):
    split = sample.test
    seen = [y for _, y in batches(split, 64, torch.Generator().manual_seed(1))]
    assert [len(y) for y in seen][-1] == 1000 % 64
    assert sorted(torch.cat(seen).tolist()) == sorted(split.y.tolist())
    again = torch.cat([y for _, y in batches(split, 64, torch.Generator().manual_seed(1))])
    assert torch.equal(torch.cat(seen), again)
    assert not torch.equal(torch.cat(seen), split.y)  # shuffled


def test_unknown_dataset_lists_the_valid_names():
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="mnist_sample, mnist, fashion_mnist, cifar10, or folder:PATH"):
        load_raw("imagenet", ".")


def test_a_split_of_a_split_gives_the_same_images_labels_and_batches_as_a_copied_one(sample):
    train, val = split_train(sample, 0.2, 500, seed=5)
    inner = train.subset(torch.arange(0, 500, 7))
    copied = splits.Split(inner.images().clone(), inner.y.clone(), inner.mean, inner.std)
    assert len(inner) == len(copied) == len(range(0, 500, 7))
    assert torch.equal(inner.images(), copied.x) and torch.equal(inner.inputs(3), copied.inputs(3))
    for (a, ya), (b, yb) in zip(
        batches(inner, 16, torch.Generator().manual_seed(2)), batches(copied, 16, torch.Generator().manual_seed(2))
    ):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    assert torch.equal(torch.cat([x for x, _ in batches(val, 100)]), val.inputs())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
