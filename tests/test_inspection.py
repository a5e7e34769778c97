"""engine.ml.inspection: the shape trace and parameters, the first convolution's filters, feature maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.ml import inspection
from engine.ml.models import build_model, count_parameters
from engine.ml.train import load_trained
from engine.runs.store import Store


@pytest.fixture(scope="module")
def trained(finished_root):
    """(model, dataset) of the finished simple_cnn run."""
    store = Store(finished_root)
    record = next(r for r in store.list_runs() if r.arch == "simple_cnn")
    model, ds = load_trained(record.path, record.train_config(), torch.device("cpu"))
    store.close()
    return model, ds


# ---------------------------------------------------------------- shapes and parameters


def test_simple_cnn_trace_matches_the_course_on_1x28x28():
    model = build_model("simple_cnn", (1, 28, 28), 10)
    rows = inspection.shape_trace(model, (1, 28, 28))
    shapes = [r.shape_text for r in rows if r.kind not in ("ReLU", "Input")]
    assert shapes == ["16x28x28", "16x14x14", "32x14x14", "32x7x7", "1568", "128", "10"]
    assert [r.kind for r in rows if r.kind not in ("ReLU",)] == [
        "Input",
        "Conv2d",
        "MaxPool2d",
        "Conv2d",
        "MaxPool2d",
        "Flatten",
        "Linear",
        "Linear",
    ]


def test_trace_parameters_per_layer_add_up_to_the_model_total():
    model = build_model("simple_cnn", (1, 28, 28), 10)
    rows = inspection.shape_trace(model, (1, 28, 28))
    by_layer = {r.layer: r.params for r in rows if r.params}
    assert by_layer == {
        "Conv2d(1→16, 3x3, pad 1)": 160,
        "Conv2d(16→32, 3x3, pad 1)": 4640,
        "Linear(1568→128)": 200832,
        "Linear(128→10)": 1290,
    }
    assert sum(r.params for r in rows) == count_parameters(model) == 206922
    conv = next(r for r in rows if r.kind == "Conv2d")
    assert conv.formula == "16 × (1×3×3) + 16 = 160"


@pytest.mark.parametrize(
    "arch, shape",
    [
        ("basic_nn", (1, 28, 28)),
        ("cifar10_cnn", (3, 32, 32)),
        ("simple_cnn_bn", (1, 28, 28)),
        ("resnet18", (3, 32, 32)),
    ],
)
def test_every_architecture_traces_to_class_scores_with_all_its_parameters(arch, shape):
    model = build_model(arch, shape, 10)
    rows = inspection.shape_trace(model, shape)
    assert rows[0].shape == shape and rows[-1].shape == (10,)
    assert sum(r.params for r in rows) == count_parameters(model)
    assert model.training  # the trace leaves the mode as it found it


# ---------------------------------------------------------------- filters and feature maps


def test_first_conv_filters_are_small_images_in_unit_range():
    model = build_model("simple_cnn", (1, 28, 28), 10)
    filters = inspection.conv_filters(model)
    assert filters.layer == "Conv2d(1→16, 3x3, pad 1)" and not filters.colour
    assert len(filters.images) == 16 and filters.images[0].shape == (3, 3)
    assert all(f.min() >= 0 and f.max() <= 1 for f in filters.images)
    weights = model.body[0].weight[0, 0].detach().numpy()
    assert np.argmax(filters.images[0]) == np.argmax(weights)  # scaling keeps the pattern


def test_colour_filters_are_rgb_and_an_mlp_has_none():
    colour = inspection.conv_filters(build_model("cifar10_cnn", (3, 32, 32), 10))
    assert colour.colour and colour.images[0].shape == (3, 3, 3)
    assert inspection.conv_filters(build_model("basic_nn", (1, 28, 28), 10)) is None
    assert inspection.feature_maps(build_model("basic_nn", (1, 28, 28), 10), torch.zeros(1, 28, 28)) == []


def test_feature_maps_come_after_each_conv_block(trained):
    model, ds = trained
    blocks = inspection.feature_maps(model, ds.test.inputs(0), max_maps=8)
    assert [b.shape for b in blocks] == [(16, 14, 14), (32, 7, 7)]
    assert blocks[0].name.startswith("block 1: Conv2d(1→16") and blocks[0].name.endswith("MaxPool2d(2x2)")
    assert blocks[1].maps.shape == (8, 7, 7)
    assert blocks[0].maps.min() >= 0 and blocks[0].maps.max() <= 1
    # the maps are the real activations: block 1 equals the body's first three layers, rescaled
    direct = model.body[:3](ds.test.inputs(slice(0, 1)))[0, 0].detach().numpy()
    np.testing.assert_allclose(blocks[0].maps[0], (direct - direct.min()) / (direct.max() - direct.min()), atol=1e-5)
