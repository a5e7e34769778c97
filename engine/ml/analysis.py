"""What a trained model says: its predictions on the test set (confusion matrix, per-class accuracy,
mistakes), and its top classes for an uploaded image converted like the training data.

Everything here computes and returns plain data (numpy arrays, dataclasses); the Inspect page only
renders it. Images handed back for display are floats in [0, 1], (H, W) for one channel and (H, W, 3)
for colour. Uploads are checked and decoded with bounded memory in engine.ml.images; the layers,
filters and feature maps of a model are in engine.ml.inspection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from engine.ml.data import Dataset
from engine.ml.images import bounded, flatten_alpha
from engine.ml.splits import Split, batches

if TYPE_CHECKING:  # Pillow is imported where an image is prepared
    from PIL.Image import Image

EVAL_BATCH = 1000


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
    return Predictions(
        split.y.cpu().numpy().astype(np.int64),
        torch.cat(preds).numpy().astype(np.int64),
        torch.cat(confs).numpy().astype(np.float32),
    )


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
    return [
        Mistake(
            int(i),
            int(preds.y_true[i]),
            int(preds.y_pred[i]),
            classes[preds.y_true[i]],
            classes[preds.y_pred[i]],
            float(preds.confidence[i]),
        )
        for i in wrong
    ]


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
    return TestReport(
        preds.accuracy,
        cm,
        per_class_accuracy(cm, ds.classes),
        misclassified(preds, ds.classes, limit),
        int((preds.y_true != preds.y_pred).sum()),
        len(preds.y_true),
    )


def display_image(ds: Dataset, x: torch.Tensor) -> np.ndarray:
    """An image (C, H, W) in [0, 1] for display: (H, W) grey or (H, W, 3) colour. Takes a dataset's
    uint8 image as stored (ds.test.x[i]) or a normalised model input."""
    if x.dtype == torch.uint8:
        img = (x.float() / 255.0).cpu().numpy()
    else:
        img = ds.denormalise(x.unsqueeze(0).float().cpu())[0].numpy()
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


# ---------------------------------------------------------------- uploaded images


@dataclass
class PreparedImage:
    x: torch.Tensor  # (C, H, W) float32, normalised exactly like the training data
    display: np.ndarray  # what the model sees, in [0, 1]: (H, W) or (H, W, 3)
    inverted: bool  # True when the colours were inverted to match the dataset (dark background)
    note: str  # the conversion in words, for the page


def prepare_image(image: Image, ds: Dataset, invert: bool | None = None, centre: bool | None = None) -> PreparedImage:
    """Convert a PIL image to the model's input: channels, size and the dataset's normalisation.

    The image is padded to the model's aspect ratio with its own border colour (so nothing
    is cut off or stretched) and resized. `invert=None` inverts a grey image automatically
    when the dataset has dark backgrounds (like MNIST) and the image a light one.
    `centre=None` does what MNIST's makers did for grey, dark-background datasets: crop to
    the strokes and fit them in a 20x20 box in the middle of the 28x28 image.
    """
    from PIL import Image, ImageOps

    c, h, w = ds.shape
    width, height = image.info.get("original_size", image.size)
    original = f"{width}x{height} {image.mode}"
    image = flatten_alpha(bounded(image))  # at most WORKING_SIDE per side before any crop or pad; 8-bit
    image = image.convert("RGB" if c == 3 else "L")
    arr = np.asarray(image, dtype=np.float32) / 255.0
    border = np.concatenate([arr[0].reshape(-1), arr[-1].reshape(-1), arr[:, 0].reshape(-1), arr[:, -1].reshape(-1)])
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
    note = (
        f"{original} → {''.join(f'{s}, ' for s in steps)}{'RGB' if c == 3 else 'greyscale'} "
        f"{w}x{h}, normalised with the {ds.name} training mean and std"
    )
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
