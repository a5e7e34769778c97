"""dashboard.forms: what a person types on the Train page, parsed or refused in one line; model sizes;
the built-in datasets' facts known without loading them; folders kept under the data root."""

from __future__ import annotations

import pytest

from dashboard.forms import (
    KNOWN_SHAPES,
    SPLIT_SIZES,
    folder_under_root,
    grid_size,
    human_count,
    parameter_count,
    parse_float,
    parse_list,
)
from engine.errors import ConfigError
from engine.ml.data import DATASETS, load_dataset
from engine.ml.models import build_model, count_parameters
from tests.disk_layouts import write_image_folder


def test_a_number_is_parsed_with_spaces_and_exponents():
    assert parse_float(" 1e-3 ", "learning rate") == 0.001
    assert parse_float("3", "learning rate") == 3.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("fast", "learning rate must be a number such as 0.001 or 1e-3, got 'fast'"),
        ("nan", "learning rate must be a finite number, got 'nan'"),
        (" inf", "learning rate must be a finite number, got 'inf'"),
    ],
)
def test_a_word_or_a_non_finite_number_is_refused_naming_the_field(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_float(text, "learning rate")


def test_a_list_keeps_the_first_of_each_value_in_order_and_takes_semicolons():
    assert parse_list("128, 32; 128,, 64", "batch sizes", int) == [128, 32, 64]
    assert parse_list("1e-3, 0.001, 1e-2", "learning rates", float) == [0.001, 0.01]
    assert parse_list("adam, sgd", "optimizers", str) == ["adam", "sgd"]


def test_a_bad_list_says_which_part_is_wrong_and_what_is_allowed():
    with pytest.raises(ConfigError, match="batch sizes: 'lots' is not a whole number; give whole numbers"):
        parse_list("32, lots", "batch sizes", int)
    with pytest.raises(ConfigError, match="learning rates must be a number such as 0.001 or 1e-3, got 'x'"):
        parse_list("0.1, x", "learning rates", float)
    with pytest.raises(ConfigError, match="epochs: give at least one value"):
        parse_list(" , ;", "epochs", int)


def test_parameter_counts_are_the_engines_for_built_in_models():
    for arch in ("basic_nn", "simple_cnn"):
        assert parameter_count(arch, (1, 28, 28), 10) == count_parameters(build_model(arch, (1, 28, 28), 10))
    assert parameter_count("simple_cnn", (3, 32, 32), 2) != parameter_count("simple_cnn", (1, 28, 28), 10)


def test_your_own_models_parameters_are_counted_again_when_its_file_changes(tmp_path):
    model = tmp_path / "tiny.py"
    source = (
        "from torch import nn\n\n\nclass Tiny(nn.Module):\n    def __init__(self, num_classes):\n"
        "        super().__init__()\n        self.fc = nn.Linear({}, num_classes)\n\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n"
    )
    model.write_text(source.format(784))
    assert parameter_count(f"{model}:Tiny", (1, 28, 28), 10) == 784 * 10 + 10
    model.write_text(source.format(784) + "\n# the same layers, another file: counted again, the same\n")
    assert parameter_count(f"{model}:Tiny", (1, 28, 28), 10) == 7850
    model.write_text(
        source.format(784).replace(
            "nn.Linear(784, num_classes)", "nn.Sequential(nn.Linear(784, 4), nn.Linear(4, num_classes))"
        )
    )
    assert parameter_count(f"{model}:Tiny", (1, 28, 28), 10) == 784 * 4 + 4 + 4 * 10 + 10


def test_big_counts_read_short():
    assert [human_count(n) for n in (999, 101_770, 1_234_567)] == ["999", "101.8k", "1.23M"]


def test_a_grid_has_one_run_per_combination():
    assert grid_size(lr=[1e-3, 1e-2, 1e-1], batch=[32, 64], arch=["a", "b"]) == 12
    assert grid_size() == 0


def test_the_datasets_facts_known_without_loading_them_are_the_engines():
    assert set(KNOWN_SHAPES) == set(SPLIT_SIZES) == set(DATASETS)
    ds = load_dataset("mnist_sample")  # the one built-in dataset on every machine
    assert KNOWN_SHAPES["mnist_sample"] == (ds.shape, ds.num_classes)
    assert SPLIT_SIZES["mnist_sample"] == (len(ds.train), len(ds.test))


def test_a_folder_is_resolved_under_the_data_root_and_nothing_outside_it(tmp_path):
    root = tmp_path / "data"
    write_image_folder(root / "images")
    write_image_folder(tmp_path / "private")
    (root / "link").symlink_to(tmp_path / "private")
    assert folder_under_root(" images ", root) == (root / "images").resolve()
    assert folder_under_root(str(root / "images"), root) == (root / "images").resolve()
    assert folder_under_root(".", root) == root.resolve()
    for typed in (str(tmp_path / "private"), "../private", "link", "images/../../private"):
        with pytest.raises(ConfigError, match="the image folder must be inside the data root"):
            folder_under_root(typed, root)
