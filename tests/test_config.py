"""TrainConfig: defaults, round trips, and an error per bad field that names the field and what is allowed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from engine.config import TrainConfig, check_batch_size, validate
from engine.errors import ConfigError
from engine.ml.train import check_config


def test_defaults_train_simple_cnn_on_mnist_sample_for_five_epochs():
    config = validate(TrainConfig())
    assert (config.dataset, config.arch, config.epochs, config.optimizer) == ("mnist_sample", "simple_cnn", 5, "adam")
    assert config.val_split == 0.0 and config.train_limit is None and config.device == "auto"


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().lr = 1.0


def test_config_survives_a_json_round_trip():
    config = TrainConfig(arch="basic_nn", lr=0.01, optimizer="sgd", val_split=0.2, train_limit=100, seed=7)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.replace(lr=0.5).lr == 0.5 and config.lr == 0.01


def test_from_dict_rejects_unknown_keys_and_lists_the_valid_fields():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"arch": "basic_nn", "learning_rate": 0.1, "bs": 3})
    message = str(info.value)
    assert "bs, learning_rate" in message and "batch_size" in message and "lr" in message


def test_from_dict_fills_missing_keys_with_defaults():
    assert TrainConfig.from_dict({"epochs": 2}) == TrainConfig(epochs=2)


def test_a_config_json_from_before_precision_existed_still_loads_with_auto():
    old = TrainConfig().to_dict()
    del old["precision"]
    assert TrainConfig.from_dict(old).precision == "auto"
    assert TrainConfig(precision="bf16").to_dict()["precision"] == "bf16"


BAD = [
    # (field, value, words the message must contain)
    ("dataset", "imagenet", ["dataset", "'imagenet'", "mnist_sample", "fashion_mnist", "cifar10", "folder:PATH"]),
    ("dataset", "folder:", ["dataset", "folder:PATH"]),
    ("arch", "vgg16", ["arch", "'vgg16'", "basic_nn", "simple_cnn_bn", "resnet18"]),
    ("optimizer", "rmsprop", ["optimizer", "'rmsprop'", "adam, sgd, adamw"]),
    ("device", "tpu", ["device", "auto, cpu, cuda"]),
    ("precision", "fp16", ["precision", "'fp16'", "auto, fp32, bf16"]),
    ("epochs", 0, ["epochs", "from 1 to 1000", "got 0"]),
    ("epochs", 1001, ["epochs", "from 1 to 1000"]),
    ("epochs", 2.5, ["epochs", "an integer"]),
    ("epochs", True, ["epochs", "an integer"]),
    ("batch_size", 0, ["batch_size", "at least 1"]),
    ("batch_size", "64", ["batch_size", "an integer"]),
    ("lr", 0.0, ["lr", "finite number > 0"]),
    ("lr", -0.1, ["lr", "finite number > 0"]),
    ("lr", float("nan"), ["lr", "finite number > 0", "nan"]),
    ("lr", float("inf"), ["lr", "finite number > 0"]),
    ("lr", "fast", ["lr", "a number"]),
    ("momentum", 1.0, ["momentum", "[0, 1)"]),
    ("momentum", -0.5, ["momentum", "[0, 1)"]),
    ("weight_decay", -1e-4, ["weight_decay", ">= 0"]),
    ("weight_decay", float("inf"), ["weight_decay", ">= 0"]),
    ("val_split", 0.6, ["val_split", "[0, 0.5]"]),
    ("val_split", -0.1, ["val_split", "[0, 0.5]"]),
    ("seed", 1.5, ["seed", "an integer"]),
    ("seed", -1, ["seed", "from 0 to 4294967295"]),
    ("seed", 10**20, ["seed", "from 0 to 4294967295"]),  # would overflow torch's generator
    ("train_limit", 0, ["train_limit", "at least 1"]),
    ("pretrained", True, ["pretrained", "resnet18"]),
]


@pytest.mark.parametrize("field,value,words", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_bad_field_is_rejected_naming_the_field_and_what_is_allowed(field, value, words):
    with pytest.raises(ConfigError) as info:
        check_config(TrainConfig(**{field: value}))  # every field, and the dataset and arch names
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


def test_good_edge_values_pass():
    validate(TrainConfig(epochs=1, batch_size=1, lr=1e-8, momentum=0.0, val_split=0.5, train_limit=1))
    validate(TrainConfig(epochs=1000, optimizer="sgd", momentum=0.99, weight_decay=0.1, seed=2**32 - 1))
    check_config(TrainConfig(arch="resnet18", pretrained=True, dataset="folder:~/pets"))


def test_field_checks_need_no_registry_so_the_config_module_stays_free_of_torch():
    validate(TrainConfig(arch="not-checked-here", dataset="nor-this"))  # names are check_config's
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import sys, engine.config; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "False", out.stderr


def test_batch_size_larger_than_the_training_split_names_the_size():
    check_batch_size(TrainConfig(batch_size=500), 500)
    with pytest.raises(ConfigError, match=r"batch_size must be from 1 to the training set size \(500\), got 501"):
        check_batch_size(TrainConfig(batch_size=501), 500)
