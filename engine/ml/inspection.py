"""Look inside a model: the shape of an image after every layer, each layer's parameters, the first
convolution's filters and the feature maps of one image.

Everything here computes and returns plain data (numpy arrays, dataclasses); the Inspect page only
renders it. Maps and filters handed back for display are floats in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engine.ml.models import Classifier, ResNet18

# ---------------------------------------------------------------- shape trace and parameters


@dataclass
class TraceRow:
    step: int  # 0 is the input
    layer: str  # "Conv2d(1→16, 3x3, pad 1)"
    kind: str  # the module class name, "Input" or "Flatten"
    shape: tuple[int, ...]  # output shape of one example, without the batch dimension
    params: int  # trainable parameters of this layer alone
    formula: str  # how `params` comes about, "" when there are none

    @property
    def shape_text(self) -> str:
        return "x".join(str(d) for d in self.shape)


def _describe(module: nn.Module) -> tuple[str, str]:
    """A readable layer name and the arithmetic behind its parameter count."""
    if isinstance(module, nn.Conv2d):
        k = "x".join(str(v) for v in module.kernel_size)
        pad = module.padding if isinstance(module.padding, str) else module.padding[0]
        extra = f", pad {pad}" if pad else ""
        extra += f", stride {module.stride[0]}" if module.stride[0] != 1 else ""
        name = f"Conv2d({module.in_channels}→{module.out_channels}, {k}{extra})"
        bias = f" + {module.out_channels}" if module.bias is not None else ""
        kk = "×".join(str(v) for v in module.kernel_size)
        return name, f"{module.out_channels} × ({module.in_channels // module.groups}×{kk}){bias}"
    if isinstance(module, nn.Linear):
        bias = f" + {module.out_features}" if module.bias is not None else ""
        return (
            f"Linear({module.in_features}→{module.out_features})",
            f"{module.out_features} × {module.in_features}{bias}",
        )
    if isinstance(module, nn.MaxPool2d):
        size = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        return f"MaxPool2d({size}x{size})", ""
    if isinstance(module, nn.BatchNorm2d):
        return f"BatchNorm2d({module.num_features})", f"2 × {module.num_features}"
    if isinstance(module, nn.Dropout):
        return f"Dropout({module.p:g})", ""
    return type(module).__name__, ""


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)


def _leaves(module: nn.Module) -> list[nn.Module]:
    children = list(module.children())
    if not children:
        return [] if isinstance(module, nn.Identity) else [module]
    return [leaf for child in children for leaf in _leaves(child)]


@torch.no_grad()
def shape_trace(model: nn.Module, input_shape: tuple[int, int, int]) -> list[TraceRow]:
    """The shape of one (C, H, W) input after every layer, with each layer's parameter count.

    For the course's Classifier models the flatten between the convolutional body and
    the fully connected layers is shown as its own step, as in the course's trace.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape, device=device)
    rows = [TraceRow(0, "Input", "Input", tuple(input_shape), 0, "")]

    def add(module: nn.Module, out: torch.Tensor) -> None:
        name, formula = _describe(module)
        params = _own_params(module)
        rows.append(
            TraceRow(
                len(rows),
                name,
                type(module).__name__,
                tuple(out.shape[1:]),
                params,
                f"{formula} = {params:,}" if formula and params else "",
            )
        )

    try:
        if isinstance(model, Classifier):
            for layer in _leaves(model.body):
                x = layer(x)
                add(layer, x)
            x = x.flatten(1)
            rows.append(TraceRow(len(rows), "Flatten", "Flatten", tuple(x.shape[1:]), 0, ""))
            for layer in _leaves(model.neck) + [model.head]:
                x = layer(x)
                add(layer, x)
        else:  # any other module: record leaf modules in the order they run
            hooks = [leaf.register_forward_hook(lambda m, _i, out: add(m, out)) for leaf in _leaves(model)]
            try:
                model(x)
            finally:
                for h in hooks:
                    h.remove()
    finally:
        model.train(was_training)
    return rows


# ---------------------------------------------------------------- filters and feature maps


def _unit(a: np.ndarray) -> np.ndarray:
    """Scale an array to [0, 1] (a constant array becomes 0.5)."""
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-12:
        return np.full_like(a, 0.5, dtype=np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def first_conv(model: nn.Module) -> nn.Conv2d | None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    return None


@dataclass
class Filters:
    layer: str  # "Conv2d(1→16, 3x3, pad 1)"
    images: list[np.ndarray]  # one per filter, each scaled to [0, 1]: (k, k) or (k, k, 3)
    colour: bool  # True when each filter is shown as an RGB image (3 input channels)


def conv_filters(model: nn.Module) -> Filters | None:
    """The first convolution layer's filters as small images; None for a model without one.

    A filter over 3 input channels is shown in colour; over any other number of channels
    its channels are averaged into one grey image. Each filter is scaled on its own, so
    the pattern is visible whatever its magnitude.
    """
    conv = first_conv(model)
    if conv is None:
        return None
    w = conv.weight.detach().cpu().float().numpy()  # (out, in, k, k)
    colour = w.shape[1] == 3
    images = [_unit(f.transpose(1, 2, 0)) if colour else _unit(f.mean(axis=0)) for f in w]
    return Filters(_describe(conv)[0], images, colour)


@dataclass
class FeatureBlock:
    name: str  # "block 1: Conv2d(1→16, 3x3, pad 1) → ReLU → MaxPool2d(2x2)"
    shape: tuple[int, int, int]  # (C, H, W) of the block's output
    maps: np.ndarray  # (shown, H, W) float32, each map scaled to [0, 1]


def _conv_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, last module) of each convolutional block; a block runs from a Conv2d up to the next."""
    if isinstance(model, ResNet18):
        net = model.net
        return [
            (f"stage {i}: ResNet {name}", getattr(net, name))
            for i, name in enumerate(("layer1", "layer2", "layer3", "layer4"), start=1)
        ]
    if not isinstance(model, Classifier):
        return []
    blocks: list[list[nn.Module]] = []
    for layer in _leaves(model.body):
        if isinstance(layer, nn.Conv2d):
            blocks.append([layer])
        elif blocks:
            blocks[-1].append(layer)
    return [
        (f"block {i}: " + " → ".join(_describe(m)[0] for m in block), block[-1])
        for i, block in enumerate(blocks, start=1)
    ]


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor, max_maps: int = 32) -> list[FeatureBlock]:
    """The activations of one normalised input (C, H, W) after each convolutional block.

    Returns at most `max_maps` channels per block, each scaled to [0, 1]; an empty list
    for a model without convolutions.
    """
    if not isinstance(model, (Classifier, ResNet18)):
        return _traced_feature_maps(model, x, max_maps)  # your own model: blocks as its forward runs them
    blocks = _conv_blocks(model)
    if not blocks:
        return []
    outputs: dict[int, torch.Tensor] = {}
    _forward_once(
        model,
        x,
        [
            module.register_forward_hook(lambda m, _i, out, i=i: outputs.__setitem__(i, out))
            for i, (_, module) in enumerate(blocks)
        ],
    )
    result = []
    for i, (name, _) in enumerate(blocks):
        out = outputs[i][0].cpu().float().numpy()  # (C, H, W)
        maps = np.stack([_unit(m) for m in out[:max_maps]])
        result.append(FeatureBlock(name, tuple(out.shape), maps))
    return result


def _forward_once(model: nn.Module, x: torch.Tensor, hooks: list) -> None:
    """One image (C, H, W) or batch through the model in eval mode, so `hooks` record what they hook;
    the model's mode is restored and the hooks removed afterwards."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(x.unsqueeze(0).to(device) if x.dim() == 3 else x.to(device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()


@torch.no_grad()
def _traced_feature_maps(model: nn.Module, x: torch.Tensor, max_maps: int) -> list[FeatureBlock]:
    """Feature maps of any model: its leaf layers recorded in the order forward(x) calls them; a block
    runs from a Conv2d up to the next one (or to the first layer whose output is not a C x H x W map)."""
    calls: list[tuple[nn.Module, torch.Tensor]] = []

    def record(module: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        calls.append((module, out.clone() if isinstance(out, torch.Tensor) else out))  # later in-place ops

    _forward_once(model, x, [leaf.register_forward_hook(record) for leaf in _leaves(model)])
    blocks: list[list[tuple[nn.Module, torch.Tensor]]] = []
    open_block = False
    for module, out in calls:
        is_map = isinstance(out, torch.Tensor) and out.dim() == 4
        if isinstance(module, nn.Conv2d) and is_map:
            blocks.append([(module, out)])
            open_block = True
        elif open_block and is_map:
            blocks[-1].append((module, out))
        else:
            open_block = False
    result = []
    for i, block in enumerate(blocks, start=1):
        last = block[-1][1][0].cpu().float().numpy()  # (C, H, W)
        maps = np.stack([_unit(m) for m in last[:max_maps]])
        name = f"block {i}: " + " → ".join(_describe(m)[0] for m, _ in block)
        c, h, w = last.shape
        result.append(FeatureBlock(name, (c, h, w), maps))
    return result
