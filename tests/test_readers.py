"""Each dataset's files read from disk in their exact layout, written by tests/disk_layouts.py: IDX files
(plain and gzipped, damaged), the CIFAR-10 pickles (truncated, or one that would run code), and torchvision's
download when they are missing."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from engine.errors import DatasetError
from engine.ml.data import load_dataset, load_raw
from engine.ml.readers import CIFAR10_CLASSES, FASHION_CLASSES
from tests.disk_layouts import MNIST_FILES, idx_bytes, write_cifar10, write_mnist_raw


def assert_helpful(exc: DatasetError, *parts: str) -> None:
    message = str(exc)
    for part in (*parts, "mnist_sample"):
        assert part in message, f"{part!r} not in: {message}"


# ---------------------------------------------------------------- MNIST family


def test_mnist_loads_from_extracted_idx_files_in_torchvision_layout(tmp_path):
    arrays = write_mnist_raw(tmp_path)
    train_x, train_y, test_x, test_y, classes = load_raw("mnist", tmp_path)
    assert train_x.shape == (60, 1, 28, 28) and train_x.dtype == np.uint8
    np.testing.assert_array_equal(train_x[:, 0], arrays["train_x"])
    np.testing.assert_array_equal(train_y, arrays["train_y"])
    np.testing.assert_array_equal(test_x[:, 0], arrays["test_x"])
    np.testing.assert_array_equal(test_y, arrays["test_y"])
    assert classes == [str(d) for d in range(10)]


def test_fashion_mnist_loads_from_gzipped_idx_files(tmp_path):
    arrays = write_mnist_raw(tmp_path, folder="FashionMNIST", gz=True)
    train_x, train_y, test_x, test_y, classes = load_raw("fashion_mnist", tmp_path)
    np.testing.assert_array_equal(train_x[:, 0], arrays["train_x"])
    np.testing.assert_array_equal(test_y, arrays["test_y"])
    assert classes == FASHION_CLASSES


@pytest.mark.parametrize("damage", ["truncated", "truncated_gz", "corrupt_gz", "bad_magic", "label_out_of_range"])
def test_damaged_mnist_files_name_the_dataset_the_path_and_what_was_expected(tmp_path, damage):
    write_mnist_raw(tmp_path, gz=damage.endswith("_gz"))
    raw = tmp_path / "MNIST" / "raw"
    if damage == "truncated":
        f = raw / MNIST_FILES["train_x"]
        f.write_bytes(f.read_bytes()[:-100])
        detail = "truncated"
    elif damage == "truncated_gz":
        f = raw / (MNIST_FILES["test_x"] + ".gz")
        f.write_bytes(f.read_bytes()[:40])
        detail = "t10k-images-idx3-ubyte"
    elif damage == "corrupt_gz":  # a damaged deflate stream raises zlib.error, not an OSError
        f = raw / (MNIST_FILES["test_x"] + ".gz")
        good = f.read_bytes()
        f.write_bytes(good[:10] + b"\xff" * 20 + good[30:])
        detail = "t10k-images-idx3-ubyte"
    elif damage == "bad_magic":
        (raw / MNIST_FILES["train_y"]).write_bytes(b"<html>not found</html>")
        detail = "magic"
    else:
        labels = np.full(60, 42, dtype=np.uint8)
        (raw / MNIST_FILES["train_y"]).write_bytes(idx_bytes(labels))
        detail = "labels"
    with pytest.raises(DatasetError) as info:
        load_raw("mnist", tmp_path)
    assert_helpful(info.value, "'mnist'", str(raw), "IDX", detail)


def test_missing_mnist_offline_fails_fast_with_where_to_put_the_files(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_raw("mnist", tmp_path / "nothing")
    assert_helpful(
        info.value,
        "'mnist'",
        str(tmp_path / "nothing" / "MNIST" / "raw"),
        "train-images-idx3-ubyte",
        "downloads are off",
    )


def test_missing_dataset_is_fetched_through_torchvision_and_a_failed_download_is_explained(
    tmp_path, monkeypatch, capsys
):
    import torchvision

    attempts = []

    class NoNetwork:
        def __init__(self, root, train, download):
            attempts.append((root, train, download))
            print("Downloading http://example/train-images-idx3-ubyte.gz")  # torchvision's chatter
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nName or service not known")

    monkeypatch.setattr(torchvision.datasets, "MNIST", NoNetwork)
    with pytest.raises(DatasetError) as info:
        load_raw("mnist", tmp_path, download=True)
    assert attempts == [(str(tmp_path), True, True)]
    assert_helpful(info.value, "download failed", "Name or service not known", str(tmp_path / "MNIST" / "raw"))
    assert capsys.readouterr().out == ""  # stdout stays clean for the CLI


# ---------------------------------------------------------------- CIFAR-10


def test_cifar10_loads_the_official_python_pickles_with_latin1_keys(tmp_path):
    arrays = write_cifar10(tmp_path)
    meta = pickle.loads((tmp_path / "cifar-10-batches-py" / "batches.meta").read_bytes(), encoding="latin1")
    assert "label_names" in meta  # the writer produced Python 2 strings, as the official files have
    train_x, train_y, test_x, test_y, classes = load_raw("cifar10", tmp_path)
    assert train_x.shape == (100, 3, 32, 32) and test_x.shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(train_x, arrays["train_x"])
    np.testing.assert_array_equal(train_y, arrays["train_y"])
    np.testing.assert_array_equal(test_x, arrays["test_x"])
    np.testing.assert_array_equal(test_y, arrays["test_y"])
    assert classes == CIFAR10_CLASSES
    ds = load_dataset("cifar10", tmp_path)
    assert ds.shape == (3, 32, 32) and len(ds.mean) == 3


def test_truncated_cifar10_batch_names_the_file_and_the_expected_pickles(tmp_path):
    write_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    f = base / "test_batch"
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(DatasetError) as info:
        load_raw("cifar10", tmp_path)
    assert_helpful(info.value, "'cifar10'", str(base), "test_batch", "pickles")


def test_cifar10_pickle_that_would_run_code_is_refused(tmp_path):
    write_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (base / "data_batch_3").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(DatasetError) as info:
        load_raw("cifar10", tmp_path)
    assert_helpful(info.value, "data_batch_3", "refusing to load builtins.print")


def test_missing_cifar10_names_the_folder_it_looked_in(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_raw("cifar10", tmp_path)
    assert_helpful(info.value, "'cifar10'", str(tmp_path / "cifar-10-batches-py"), "data_batch_1")
