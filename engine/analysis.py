"""Look inside a trained model: shapes, parameters, filters, feature maps, mistakes, predictions.

Everything here computes and returns plain data (numpy arrays, dataclasses); the
Inspect page only renders it. Images handed back for display are floats in [0, 1],
(H, W) for one channel and (H, W, 3) for colour.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engine.data import Dataset, Split, batches
from engine.models import Classifier, ResNet18

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # 10 MB
MAX_UPLOAD_PIXELS = 25_000_000  # width x height; a 5000 x 5000 photo is the largest accepted
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
EVAL_BATCH = 1000
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SiLU)


class UploadError(ValueError):
    """An uploaded file cannot be used as an image; the message says why and what is allowed."""


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
        return (f"Linear({module.in_features}→{module.out_features})",
                f"{module.out_features} × {module.in_features}{bias}")
    if isinstance(module, nn.MaxPool2d):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        return f"MaxPool2d({k}x{k})", ""
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
        rows.append(TraceRow(len(rows), name, type(module).__name__, tuple(out.shape[1:]), params,
                             f"{formula} = {params:,}" if formula and params else ""))

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
        return [(f"stage {i}: ResNet {name}", getattr(net, name))
                for i, name in enumerate(("layer1", "layer2", "layer3", "layer4"), start=1)]
    if not isinstance(model, Classifier):
        return []
    blocks: list[list[nn.Module]] = []
    for layer in _leaves(model.body):
        if isinstance(layer, nn.Conv2d):
            blocks.append([layer])
        elif blocks:
            blocks[-1].append(layer)
    return [(f"block {i}: " + " → ".join(_describe(m)[0] for m in block), block[-1])
            for i, block in enumerate(blocks, start=1)]


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor, max_maps: int = 32) -> list[FeatureBlock]:
    """The activations of one normalised input (C, H, W) after each convolutional block.

    Returns at most `max_maps` channels per block, each scaled to [0, 1]; an empty list
    for a model without convolutions.
    """
    blocks = _conv_blocks(model)
    if not blocks:
        return []
    outputs: dict[int, torch.Tensor] = {}
    hooks = [module.register_forward_hook(lambda m, _i, out, i=i: outputs.__setitem__(i, out))
             for i, (_, module) in enumerate(blocks)]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(x.unsqueeze(0).to(device) if x.dim() == 3 else x.to(device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    result = []
    for i, (name, _) in enumerate(blocks):
        out = outputs[i][0].cpu().float().numpy()  # (C, H, W)
        maps = np.stack([_unit(m) for m in out[:max_maps]])
        result.append(FeatureBlock(name, tuple(out.shape), maps))
    return result


# ---------------------------------------------------------------- test-set analysis


@dataclass
class Predictions:
    y_true: np.ndarray  # (N,) int64
    y_pred: np.ndarray  # (N,) int64
    confidence: np.ndarray  # (N,) float32: the softmax probability of the predicted class

    @property
    def accuracy(self) -> float:
        return float((self.y_true == self.y_pred).mean()) if len(self.y_true) else 0.0


@torch.no_grad()
def predict_split(model: nn.Module, split: Split) -> Predictions:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    preds, confs = [], []
    try:
        for x, _ in batches(split, EVAL_BATCH):
            probs = torch.softmax(model(x.to(device)), dim=1)
            conf, pred = probs.max(dim=1)
            preds.append(pred.cpu())
            confs.append(conf.cpu())
    finally:
        model.train(was_training)
    if not preds:
        return Predictions(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    return Predictions(split.y.cpu().numpy().astype(np.int64), torch.cat(preds).numpy().astype(np.int64),
                       torch.cat(confs).numpy().astype(np.float32))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


@dataclass
class ClassAccuracy:
    index: int
    name: str
    correct: int
    total: int
    most_confused_with: str  # the class this one is most often mistaken for, "" if never wrong

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None


def per_class_accuracy(cm: np.ndarray, classes: list[str]) -> list[ClassAccuracy]:
    result = []
    for i, name in enumerate(classes):
        row = cm[i].copy()
        correct = int(row[i])
        row[i] = 0
        confused = classes[int(row.argmax())] if row.sum() > 0 else ""
        result.append(ClassAccuracy(i, name, correct, int(cm[i].sum()), confused))
    return result


@dataclass
class Mistake:
    index: int  # position in the test split
    true: int
    pred: int
    true_name: str
    pred_name: str
    confidence: float  # probability the model gave its (wrong) prediction


def misclassified(preds: Predictions, classes: list[str], limit: int = 48) -> list[Mistake]:
    """The test images the model got wrong, most confident mistakes first."""
    wrong = np.flatnonzero(preds.y_true != preds.y_pred)
    wrong = wrong[np.argsort(-preds.confidence[wrong], kind="stable")][:limit]
    return [Mistake(int(i), int(preds.y_true[i]), int(preds.y_pred[i]), classes[preds.y_true[i]],
                    classes[preds.y_pred[i]], float(preds.confidence[i])) for i in wrong]


@dataclass
class TestReport:
    accuracy: float
    confusion: np.ndarray
    per_class: list[ClassAccuracy]
    mistakes: list[Mistake]
    wrong: int  # all misclassified test images (the gallery shows at most `limit`)
    total: int


def analyse_test_set(model: nn.Module, ds: Dataset, limit: int = 48) -> TestReport:
    preds = predict_split(model, ds.test)
    cm = confusion_matrix(preds.y_true, preds.y_pred, ds.num_classes)
    return TestReport(preds.accuracy, cm, per_class_accuracy(cm, ds.classes),
                      misclassified(preds, ds.classes, limit), int((preds.y_true != preds.y_pred).sum()),
                      len(preds.y_true))


def display_image(ds: Dataset, x: torch.Tensor) -> np.ndarray:
    """An image (C, H, W) in [0, 1] for display: (H, W) grey or (H, W, 3) colour. Takes a dataset's
    uint8 image as stored (ds.test.x[i]) or a normalised model input."""
    if x.dtype == torch.uint8:
        img = (x.float() / 255.0).cpu().numpy()
    else:
        img = ds.denormalise(x.unsqueeze(0).float().cpu())[0].numpy()
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


# ---------------------------------------------------------------- uploaded images


def open_upload(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS):
    """Check an uploaded file and return it as a loaded PIL image; UploadError says what was wrong.

    Checks, in order: the size in bytes, that Pillow recognises a real image format from
    `UPLOAD_FORMATS` and that it verifies, and that its pixel count is below `max_pixels`
    before any pixel is decoded (a decompression bomb never gets expanded).
    """
    from PIL import Image, UnidentifiedImageError

    allowed = ", ".join(UPLOAD_FORMATS)
    if not data:
        raise UploadError("the file is empty; upload an image (" + allowed + ")")
    if len(data) > max_bytes:
        raise UploadError(f"the file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                fmt, (w, h) = probe.format, probe.size
                if w * h > max_pixels:
                    raise UploadError(
                        f"the image is {w} x {h} = {w * h:,} pixels; the limit is {max_pixels:,} pixels "
                        f"(it may be a decompression bomb); resize it and try again")
                probe.verify()  # structure and checksums, without decoding the pixels
            if fmt not in UPLOAD_FORMATS:
                raise UploadError(f"{fmt} files are not accepted; allowed formats: {allowed}")
            image = Image.open(io.BytesIO(data))
            image.load()
        except UploadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UploadError(f"the image claims more pixels than the limit of {max_pixels:,} and may be a "
                              f"decompression bomb (Pillow: {exc}); resize it and try again") from None
        except UnidentifiedImageError:
            raise UploadError("this is not an image Pillow can read; allowed formats: " + allowed) from None
        except Exception as exc:  # truncated or corrupt files raise OSError, SyntaxError, ValueError...
            raise UploadError(f"the image file is damaged or incomplete ({type(exc).__name__}: {exc}); "
                              f"allowed formats: {allowed}") from None
    return image


@dataclass
class PreparedImage:
    x: torch.Tensor  # (C, H, W) float32, normalised exactly like the training data
    display: np.ndarray  # what the model sees, in [0, 1]: (H, W) or (H, W, 3)
    inverted: bool  # True when the colours were inverted to match the dataset (dark background)
    note: str  # the conversion in words, for the page


def prepare_image(image, ds: Dataset, invert: bool | None = None, centre: bool | None = None) -> PreparedImage:
    """Convert a PIL image to the model's input: channels, size and the dataset's normalisation.

    The image is padded to the model's aspect ratio with its own border colour (so nothing
    is cut off or stretched) and resized. `invert=None` inverts a grey image automatically
    when the dataset has dark backgrounds (like MNIST) and the image a light one.
    `centre=None` does what MNIST's makers did for grey, dark-background datasets: crop to
    the strokes and fit them in a 20x20 box in the middle of the 28x28 image.
    """
    from PIL import Image, ImageOps

    c, h, w = ds.shape
    original = f"{image.width}x{image.height} {image.mode}"
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)  # transparent parts become white
    image = image.convert("RGB" if c == 3 else "L")
    arr = np.asarray(image, dtype=np.float32) / 255.0
    border = np.concatenate([arr[0].reshape(-1), arr[-1].reshape(-1), arr[:, 0].reshape(-1),
                             arr[:, -1].reshape(-1)])
    if invert is None:
        invert = c == 1 and float(np.mean(ds.mean)) < 0.5 and float(border.mean()) > 0.5
    if invert:
        image = ImageOps.invert(image)
        border = 1.0 - border
    fill = tuple(int(round(255 * v)) for v in (border.reshape(-1, 3).mean(0) if c == 3 else [border.mean()]))
    dark_digits = c == 1 and float(np.mean(ds.mean)) < 0.5
    centred = False
    if centre if centre is not None else dark_digits and float(border.mean()) < 0.5:
        threshold = int(255 * min(0.9, float(border.mean()) + 0.1))
        strokes = image.point(lambda v: 255 if v > threshold else 0).getbbox()
        if strokes and centre is None and not _small_or_off_centre(strokes, image.size):
            strokes = None  # already framed like MNIST: leave it as it is
        if strokes:  # (left, top, right, bottom) of everything brighter than the background
            image = image.crop(strokes)
            side = max(image.size)
            image = ImageOps.pad(image, (side, side), color=fill[0])
            inner = max(1, round(min(w, h) * 20 / 28))
            patch = image.resize((inner, inner), Image.Resampling.LANCZOS)
            mass = np.asarray(patch, dtype=np.float64) - fill[0]
            mass = np.clip(mass, 0, None)
            total = mass.sum() or 1.0
            cy = (mass.sum(axis=1) * np.arange(inner)).sum() / total  # centre of mass, as MNIST was made
            cx = (mass.sum(axis=0) * np.arange(inner)).sum() / total
            left = int(np.clip(round((w - 1) / 2 - cx), 0, w - inner))
            top = int(np.clip(round((h - 1) / 2 - cy), 0, h - inner))
            canvas = Image.new("L", (w, h), fill[0])
            canvas.paste(patch, (left, top))
            image, centred = canvas, True
    image = ImageOps.pad(image, (w, h), method=Image.Resampling.LANCZOS, color=fill if c == 3 else fill[0])
    a = np.array(image, dtype=np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    if a.shape[0] != c:  # a model with neither 1 nor 3 channels: repeat the grey image
        a = np.repeat(a[:1], c, axis=0)
    raw = torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(0)  # (1, C, H, W) uint8
    x = ds.normalise(raw)[0]
    steps = (["inverted"] if invert else []) + (["cropped to the strokes and centred like MNIST"] if centred else [])
    note = (f"{original} → {''.join(f'{s}, ' for s in steps)}{'RGB' if c == 3 else 'greyscale'} "
            f"{w}x{h}, normalised with the {ds.name} training mean and std")
    return PreparedImage(x, display_image(ds, x), bool(invert), note)


def _small_or_off_centre(box: tuple[int, int, int, int], size: tuple[int, int]) -> bool:
    """True when the strokes fill less than 60% of the (squared) picture or sit away from its middle."""
    left, top, right, bottom = box
    width, height = size
    side = max(width, height)
    off = max(abs((left + right) / 2 - width / 2), abs((top + bottom) / 2 - height / 2))
    return max(right - left, bottom - top) < 0.6 * side or off > 0.15 * side


@dataclass
class ClassProbability:
    index: int
    name: str
    probability: float


@torch.no_grad()
def top_k(model: nn.Module, x: torch.Tensor, classes: list[str], k: int = 3) -> list[ClassProbability]:
    """The k most probable classes for one normalised input (C, H, W), most probable first."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        probs = torch.softmax(model(x.unsqueeze(0).to(device)), dim=1)[0].cpu()
    finally:
        model.train(was_training)
    values, index = probs.topk(min(k, len(classes)))
    return [ClassProbability(int(i), classes[int(i)], float(v)) for v, i in zip(values, index)]
