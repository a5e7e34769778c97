"""The model zoo: every key on grey 28x28 and colour 32x32 input, and pretrained ResNet-18 weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.errors import ConfigError, ModelError
from engine.ml.models import (
    MODELS,
    RESNET18_WEIGHTS_FILE,
    build_model,
    count_parameters,
    ensure_resnet18_weights,
    resnet18_weights_path,
)

SHAPES = [(1, 28, 28), (3, 32, 32)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape", SHAPES, ids=["grey28", "colour32"])
@pytest.mark.parametrize("arch", list(MODELS))
def test_every_model_gives_class_scores_and_an_embedding_on_both_input_shapes(arch, shape):
    torch.manual_seed(0)
    model = build_model(arch, shape, classes=7).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        scores = model(x)
        feats = model.features(x)
        assert scores.shape == (3, 7)
        assert feats.ndim == 2 and feats.shape[0] == 3
        assert feats.shape[1] == model.head.in_features  # the embedding is the input of the last linear layer
        torch.testing.assert_close(model.head(feats), scores)


def test_flattened_size_is_derived_from_the_input_shape():
    grey = build_model("simple_cnn", (1, 28, 28), 10)
    colour = build_model("simple_cnn", (3, 32, 32), 10)
    assert grey.neck[0].in_features == 32 * 7 * 7
    assert colour.neck[0].in_features == 32 * 8 * 8
    assert colour.body[0].in_channels == 3
    assert build_model("basic_nn", (1, 28, 28), 10).neck[0].in_features == 784


def test_architectures_follow_the_course_layer_sizes():
    layers = lambda m, kind: [l for l in m.modules() if isinstance(l, kind)]  # noqa: E731
    bn = build_model("simple_cnn_bn", (1, 28, 28), 10)
    assert [c.out_channels for c in layers(bn, nn.Conv2d)] == [32, 64]
    assert [c.kernel_size for c in layers(bn, nn.Conv2d)] == [(5, 5), (5, 5)]
    assert [d.p for d in layers(bn, nn.Dropout)] == [0.45, 0.35] and len(layers(bn, nn.BatchNorm2d)) == 2
    assert [l.out_features for l in layers(bn, nn.Linear)] == [512, 10]
    drop = build_model("cnn_dropout", (1, 28, 28), 10)
    assert [l.out_features for l in layers(drop, nn.Linear)] == [128, 10] and layers(drop, nn.Dropout)[0].p == 0.5
    tiny = build_model("tiny_cnn", (1, 28, 28), 10)
    assert [c.out_channels for c in layers(tiny, nn.Conv2d)] == [3] and len(layers(tiny, nn.Linear)) == 1
    cifar = build_model("cifar10_cnn", (3, 32, 32), 10)
    assert [c.out_channels for c in layers(cifar, nn.Conv2d)] == [32, 64, 128]
    assert [l.out_features for l in layers(cifar, nn.Linear)] == [256, 10]
    net = build_model("neural_net", (1, 28, 28), 10)
    assert [(c.out_channels, c.kernel_size) for c in layers(net, nn.Conv2d)] == [
        (16, (5, 5)),
        (32, (3, 3)),
        (64, (3, 3)),
    ]
    assert [l.out_features for l in layers(net, nn.Linear)] == [256, 128, 10]
    mlp = build_model("basic_nn", (1, 28, 28), 10)
    assert [l.out_features for l in layers(mlp, nn.Linear)] == [128, 64, 10]
    assert 11_000_000 < count_parameters(build_model("resnet18", (3, 32, 32), 10)) < 11_300_000


def test_unknown_arch_lists_the_valid_keys():
    with pytest.raises(ConfigError, match="unknown arch 'vgg'.*basic_nn, simple_cnn"):
        build_model("vgg", (1, 28, 28), 10)


def test_images_too_small_for_an_architecture_are_a_model_error_naming_it_and_the_size():
    with pytest.raises(ModelError, match=r"arch 'simple_cnn_bn' cannot take 1x8x8 images.*basic_nn"):
        build_model("simple_cnn_bn", (1, 8, 8), 2)
    assert build_model("basic_nn", (1, 8, 8), 2)(torch.zeros(1, 1, 8, 8)).shape == (1, 2)


# ---------------------------------------------------------------- pretrained ResNet-18


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME; torch.hub.get_dir() follows it (downloads are off unless asked for)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert resnet18_weights_path() == tmp_path / "torch" / "hub" / "checkpoints" / RESNET18_WEIGHTS_FILE
    return tmp_path / "torch"


def write_imagenet_weights(path) -> dict:
    """A state dict of torchvision's resnet18(), saved where the IMAGENET1K_V1 weights live."""
    from torchvision.models import resnet18

    torch.manual_seed(123)
    state = resnet18().state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_pretrained_resnet18_loads_the_weights_file_from_the_torch_hub_cache(torch_home):
    state = write_imagenet_weights(resnet18_weights_path())
    colour = build_model("resnet18", (3, 32, 32), 10, pretrained=True)
    torch.testing.assert_close(colour.net.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    torch.testing.assert_close(colour.net.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(colour.net.bn1.running_var, state["bn1.running_var"])
    # Grey input: one input channel that sees what the three RGB filters see on a grey image.
    grey = build_model("resnet18", (1, 28, 28), 10, pretrained=True)
    torch.testing.assert_close(grey.net.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(grey.net.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])
    # Without --pretrained the weights are a fresh random start.
    fresh = build_model("resnet18", (3, 32, 32), 10)
    assert not torch.equal(fresh.net.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])


def test_missing_pretrained_weights_are_an_error_never_a_random_start(torch_home):
    with pytest.raises(ModelError) as info:
        build_model("resnet18", (3, 32, 32), 10, pretrained=True)
    message = str(info.value)
    assert str(resnet18_weights_path()) in message and "without --pretrained" in message


def test_failed_weights_download_is_an_error_naming_the_cache_path(torch_home, monkeypatch):
    calls = []

    def no_network(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ModelError, match="download failed: Name or service not known") as info:
        ensure_resnet18_weights(download=True)
    assert calls == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert str(resnet18_weights_path()) in str(info.value)


def test_corrupt_pretrained_weights_file_is_an_error(torch_home):
    path = resnet18_weights_path()
    path.parent.mkdir(parents=True)
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)  # not ResNet-18 weights
    with pytest.raises(ModelError, match="not ResNet-18 weights"):
        build_model("resnet18", (3, 32, 32), 10, pretrained=True)
    path.write_bytes(b"truncated")
    with pytest.raises(ModelError, match="unreadable"):
        build_model("resnet18", (3, 32, 32), 10, pretrained=True)
