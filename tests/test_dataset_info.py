"""Dataset headers: the shape, classes and split sizes the loaders would give, without loading images."""

from __future__ import annotations

import gzip

import pytest

from engine.config import TrainConfig
from engine.errors import ConfigError, DatasetError
from engine.ml import data
from engine.ml import dataset_info as info_module
from engine.ml import train as train_module
from engine.ml.data import load_dataset, split_train
from engine.ml.dataset_info import dataset_info
from engine.ml.train import preflight
from tests.disk_layouts import MNIST_FILES, write_cifar10, write_image_folder, write_mnist_raw


def layouts(tmp_path):
    """(name, data root) of one small dataset in every on-disk layout."""
    write_mnist_raw(tmp_path / "idx", n_train=57, n_test=13)
    write_mnist_raw(tmp_path / "gz", folder="FashionMNIST", gz=True, n_train=41)
    write_cifar10(tmp_path / "cifar", per_batch=9, n_test=7)
    write_image_folder(tmp_path / "colour", per_class=3, size=(80, 40))
    write_image_folder(tmp_path / "grey", classes=("a", "b", "c"), per_class=2, size=(20, 24), mode="L")
    return [
        ("mnist", tmp_path / "idx"),
        ("fashion_mnist", tmp_path / "gz"),
        ("cifar10", tmp_path / "cifar"),
        (f"folder:{tmp_path / 'colour'}", tmp_path),
        (f"folder:{tmp_path / 'grey'}", tmp_path),
        ("mnist_sample", tmp_path),
    ]


def test_headers_give_the_shape_classes_and_sizes_the_loaders_give_for_every_layout(tmp_path):
    for name, root in layouts(tmp_path):
        info = dataset_info(name, root)
        ds = load_dataset(name, root)
        assert info.shape == ds.shape, name
        assert list(info.classes) == ds.classes, name
        assert list(info.train_counts) == data.torch.bincount(ds.train.y, minlength=len(ds.classes)).tolist(), name
        assert info.test_size == len(ds.test), name


@pytest.mark.parametrize(
    "val_split, limit", [(0.0, None), (0.1, None), (0.01, None), (0.5, 7), (0.2, 10_000), (0.0, 33)]
)
def test_the_training_size_cut_from_the_header_matches_split_train(tmp_path, val_split, limit):
    for name, root in layouts(tmp_path):
        train, _ = split_train(load_dataset(name, root), val_split, limit, seed=0)
        assert dataset_info(name, root).cut_size(val_split, limit) == len(train), (name, val_split, limit)


def test_checking_a_config_reads_headers_and_never_loads_the_images(tmp_path, monkeypatch):
    write_cifar10(tmp_path, per_batch=5, n_test=4)

    def no_loading(*args, **kwargs):
        raise AssertionError("the dataset was loaded")

    monkeypatch.setattr(data, "load_dataset", no_loading)
    monkeypatch.setattr(data, "load_raw", no_loading)
    monkeypatch.setattr(train_module, "load_dataset", no_loading)
    config = TrainConfig(dataset="cifar10", data_root=str(tmp_path), arch="cifar10_cnn", batch_size=25)
    assert preflight(config) == 25
    with pytest.raises(ConfigError, match="training set size \\(25\\)"):
        preflight(config.replace(batch_size=26))


def test_a_missing_or_damaged_dataset_gets_the_loaders_message(tmp_path):
    with pytest.raises(DatasetError, match="mnist_sample"):
        dataset_info("mnist", tmp_path)
    write_mnist_raw(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    images = raw / MNIST_FILES["train_x"]
    images.write_bytes(images.read_bytes()[:-5])  # truncated
    with pytest.raises(DatasetError, match="truncated"):
        dataset_info("mnist", tmp_path)
    images.unlink()
    (raw / (MNIST_FILES["train_x"] + ".gz")).write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 4))
    with pytest.raises(DatasetError, match="truncated header|train-images"):
        dataset_info("mnist", tmp_path)


def test_headers_are_cached_until_the_files_change(tmp_path):
    write_mnist_raw(tmp_path, n_train=30)
    first = dataset_info("mnist", tmp_path)
    assert dataset_info("mnist", tmp_path) is first
    write_mnist_raw(tmp_path, n_train=40)
    assert dataset_info("mnist", tmp_path).train_size == 40
    assert len(info_module._cache) <= info_module.CACHE_SIZE
