"""The model zoo: every architecture from the course, one registry, shape-agnostic.

Each model is built for an input shape (C, H, W) and a number of classes; the
flattened size is derived by running a dummy input through the convolutional
body, never hard-coded. `features(x)` returns the embedding (the input of the
last linear layer) and `forward(x)` the class scores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.config import is_user_arch
from engine.errors import ConfigError, ModelError
from engine.ml.readers import download_timeout
from engine.ml.user_models import build_user_model
from engine.model_files import locate

Shape = tuple[int, int, int]  # an input's (channels, height, width)


def _flat_size(body: nn.Module, shape: Shape) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, *shape)).flatten(1).shape[1])


class Classifier(nn.Module):
    """body -> flatten -> neck (the embedding) -> head (class scores)."""

    def __init__(self, body: nn.Module, neck: nn.Module, head: nn.Linear):
        super().__init__()
        self.body, self.neck, self.head = body, neck, head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.body(x).flatten(1))  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, classes)


def basic_nn(shape: Shape, classes: int) -> Classifier:
    c, h, w = shape
    neck = nn.Sequential(nn.Linear(c * h * w, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
    return Classifier(nn.Identity(), neck, nn.Linear(64, classes))


def simple_cnn(shape: Shape, classes: int) -> Classifier:
    body = nn.Sequential(
        nn.Conv2d(shape[0], 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    neck = nn.Sequential(nn.Linear(_flat_size(body, shape), 128), nn.ReLU())
    return Classifier(body, neck, nn.Linear(128, classes))


def simple_cnn_bn(shape: Shape, classes: int) -> Classifier:
    body = nn.Sequential(
        nn.Conv2d(shape[0], 32, 5),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.45),
        nn.Conv2d(32, 64, 5),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.35),
    )
    neck = nn.Sequential(nn.Linear(_flat_size(body, shape), 512), nn.ReLU())
    return Classifier(body, neck, nn.Linear(512, classes))


def cnn_dropout(shape: Shape, classes: int) -> Classifier:
    body = nn.Sequential(
        nn.Conv2d(shape[0], 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    neck = nn.Sequential(nn.Linear(_flat_size(body, shape), 128), nn.ReLU(), nn.Dropout(0.5))
    return Classifier(body, neck, nn.Linear(128, classes))


def tiny_cnn(shape: Shape, classes: int) -> Classifier:
    body = nn.Sequential(nn.Conv2d(shape[0], 3, 3, padding=1), nn.ReLU())
    return Classifier(body, nn.Identity(), nn.Linear(_flat_size(body, shape), classes))


def cifar10_cnn(shape: Shape, classes: int) -> Classifier:
    body = nn.Sequential(
        nn.Conv2d(shape[0], 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    neck = nn.Sequential(nn.Linear(_flat_size(body, shape), 256), nn.ReLU())
    return Classifier(body, neck, nn.Linear(256, classes))


def neural_net(shape: Shape, classes: int) -> Classifier:
    body = nn.Sequential(
        nn.Conv2d(shape[0], 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    neck = nn.Sequential(nn.Linear(_flat_size(body, shape), 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
    return Classifier(body, neck, nn.Linear(128, classes))


RESNET18_WEIGHTS_FILE = "resnet18-f37072fd.pth"  # the file torchvision's IMAGENET1K_V1 weights use


def resnet18_weights_path() -> Path:
    """Where torchvision keeps the ImageNet weights: $TORCH_HOME/hub/checkpoints/ (via torch.hub)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_WEIGHTS_FILE


def _weights_error(reason: str) -> ModelError:
    return ModelError(
        f"ImageNet weights for resnet18 could not be loaded ({reason}). "
        f"Put torchvision's {RESNET18_WEIGHTS_FILE} at {resnet18_weights_path()} "
        f"(the torch hub cache is {torch.hub.get_dir()}; TORCH_HOME moves it), or train without --pretrained."
    )


def ensure_resnet18_weights(download: bool = False) -> Path:
    """The ImageNet weights file in the torch hub cache, downloaded through torchvision's weights API
    when it is missing and `download` allows it; a ModelError when it cannot be had."""
    from torchvision.models import ResNet18_Weights

    path = resnet18_weights_path()
    if path.is_file():
        return path
    if not download:
        raise _weights_error("not in the torch hub cache, and downloads are off (offline)")
    weights = ResNet18_Weights.IMAGENET1K_V1
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with download_timeout():
            # Downloads to a temporary file, checks the hash in the name, then moves it into place.
            torch.hub.download_url_to_file(weights.url, str(path), hash_prefix="f37072fd", progress=False)
    except Exception as exc:
        raise _weights_error(f"not in the torch hub cache and the download failed: {exc}") from exc
    return path


def load_resnet18_imagenet(download: bool = False) -> nn.Module:
    """torchvision's ResNet-18 with ImageNet weights, read with weights_only=True."""
    from torchvision.models import resnet18 as tv_resnet18

    path = ensure_resnet18_weights(download)
    net = tv_resnet18()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as exc:  # truncated file, not a state dict, wrong architecture
        raise _weights_error(
            f"{path} is unreadable or not ResNet-18 weights: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    return net


class ResNet18(nn.Module):
    """torchvision's ResNet-18, adapted to the input channels and, for small images, the size."""

    def __init__(self, shape: Shape, classes: int, pretrained: bool = False):
        super().__init__()
        from torchvision.models import resnet18 as tv_resnet18

        net: Any = load_resnet18_imagenet() if pretrained else tv_resnet18()  # its layers are plain attributes
        c, h, w = shape
        if c != 3:
            old = net.conv1
            conv = nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False)
            with torch.no_grad():  # grey input: the sum of the RGB filters sees the same signal
                conv.weight.copy_(old.weight.sum(dim=1, keepdim=True).repeat(1, c, 1, 1) / c)
            net.conv1 = conv
        if min(h, w) < 64:
            net.maxpool = nn.Identity()  # keep some resolution on 28x28 and 32x32 images
        net.fc = nn.Identity()
        self.net = net
        self.head = nn.Linear(512, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 512) after global average pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def resnet18(shape: Shape, classes: int, pretrained: bool = False) -> ResNet18:
    return ResNet18(shape, classes, pretrained)


MODELS: dict[str, tuple[Callable[..., nn.Module], str]] = {  # name -> (factory(shape, classes), description)
    "basic_nn": (basic_nn, "MLP: flatten, 128, ReLU, 64, ReLU, classes"),
    "simple_cnn": (simple_cnn, "2 conv blocks (16, 32 filters, 3x3) + max-pool, fc 128"),
    "simple_cnn_bn": (simple_cnn_bn, "2 conv blocks (32, 64 filters, 5x5) with batch norm and dropout, fc 512"),
    "cnn_dropout": (cnn_dropout, "2 conv blocks (32, 64 filters) + max-pool, fc 128 with dropout 0.5"),
    "tiny_cnn": (tiny_cnn, "one conv layer with 3 filters, then one fully connected layer"),
    "cifar10_cnn": (cifar10_cnn, "3 conv blocks (32, 64, 128 filters) + max-pool, fc 256"),
    "neural_net": (neural_net, "3 conv blocks (16 5x5, 32, 64 filters) + max-pool, fc 256, 128"),
    "resnet18": (resnet18, "torchvision ResNet-18 (11M parameters), optionally ImageNet-pretrained"),
}


def check_arch(arch: str) -> None:
    """An unknown architecture is a ConfigError listing the valid ones (here and nowhere else); your
    own model's "FILE.py:Class" must name an existing file."""
    if is_user_arch(arch):
        locate(arch)
        return
    if arch not in MODELS:
        raise ConfigError(
            f"unknown arch {arch!r}; valid: {', '.join(MODELS)}, or FILE.py:ClassName for your own nn.Module"
        )


def build_model(arch: str, shape: Shape, classes: int, pretrained: bool = False) -> nn.Module:
    """A fresh model for images of `shape` (C, H, W); `pretrained` (resnet18 only, checked by
    engine.config.validate) starts from the ImageNet weights already in the torch hub cache."""
    check_arch(arch)
    shape = (shape[0], shape[1], shape[2])  # a tuple even when read from JSON as a list
    if is_user_arch(arch):
        return build_user_model(arch, shape, classes)
    factory = MODELS[arch][0]
    try:
        if arch == "resnet18":
            return factory(shape, classes, pretrained=pretrained)
        return factory(shape, classes)
    except ModelError:
        raise
    except RuntimeError as exc:  # a kernel larger than the (pooled) image, when the flat size is derived
        size = "x".join(str(d) for d in shape)
        raise ModelError(
            f"arch {arch!r} cannot take {size} images ({str(exc).splitlines()[0]}); "
            f"use larger images or another arch (basic_nn takes any size)"
        ) from exc


def describe(arch: str) -> str:
    if is_user_arch(arch):
        found = locate(arch)
        return f"your own model: class {found.class_name} from {found.path}"
    return MODELS[arch][1]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
