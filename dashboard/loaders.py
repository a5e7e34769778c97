"""The cached loaders of a finished run's model, and of what the Inspect page computes with it.

A model is loaded once per run and model file: every cache here is keyed by the run id, its folder and
the modification time of its `model.pt` (so a run trained again is loaded again), and what is computed
from the model (the test-set report, the layer trace, filters, feature maps, the answer for an upload)
is cached under the same key. The work itself is engine.ml's; the pages call these with a RunRecord and
only render what comes back. A model that cannot be loaded is a LensboardError with a message for the
person: the router shows it in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch
from PIL import Image
from torch import nn

from dashboard.inspect_figures import enlarge
from engine.config import TrainConfig
from engine.errors import LensboardError, ModelError, UploadError
from engine.ml import analysis, inspection
from engine.ml.data import Dataset
from engine.ml.embed import Embedder
from engine.ml.images import open_upload
from engine.ml.models import count_parameters
from engine.ml.train import load_trained
from engine.runs.embedding import embedder_for_run, is_pretrained_run
from engine.runs.records import RunRecord

GALLERY = 48  # misclassified test images kept for the Inspect page's gallery
CPU = torch.device("cpu")


@dataclass(frozen=True)
class ModelKey:
    """What the caches are keyed by: a run's model file as it is now."""

    run_id: str
    run_dir: str  # two results roots may hold copies of one run
    model_mtime_ns: int  # a new model.pt (the run trained again) is a new key
    config_json: str  # the run's config, sorted: what the model is rebuilt from


def model_key(record: RunRecord) -> ModelKey:
    """The key of the run's model file; ModelError when the run has none (deleted, or never finished)."""
    path = record.paths.model
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise ModelError(
            f"run {record.id} has no model file ({path} is missing: deleted, or the run never "
            "finished); train it again to look inside it"
        ) from None
    return ModelKey(record.id, str(record.path), mtime, json.dumps(record.config, sort_keys=True))


@st.cache_resource(max_entries=4, show_spinner="Loading the model and its dataset…")
def _model(run_id: str, run_dir: str, model_mtime_ns: int, config_json: str) -> tuple[nn.Module, Dataset]:
    config = TrainConfig.from_dict(json.loads(config_json))
    try:
        return load_trained(Path(run_dir), config, CPU)
    except FileNotFoundError:  # removed between the key and the load
        raise ModelError(f"run {run_id} has no model file any more (it was deleted); train it again") from None


def model(record: RunRecord) -> tuple[nn.Module, Dataset]:
    """The run's trained model (eval mode, on the CPU) and its dataset, loaded once."""
    return _model(*_args(model_key(record)))


def _args(key: ModelKey) -> tuple[str, str, int, str]:
    return key.run_id, key.run_dir, key.model_mtime_ns, key.config_json


@st.cache_data(max_entries=16, show_spinner="Classifying the test set…")
def _test_report(run_id: str, run_dir: str, model_mtime_ns: int, config_json: str) -> analysis.TestReport:
    net, ds = _model(run_id, run_dir, model_mtime_ns, config_json)
    return analysis.analyse_test_set(net, ds, limit=GALLERY)


def test_report(record: RunRecord) -> analysis.TestReport:
    """The whole test set classified: accuracy, confusion matrix, per class, the most confident mistakes."""
    return _test_report(*_args(model_key(record)))


@st.cache_data(max_entries=16, show_spinner=False)
def _gallery(
    run_id: str, run_dir: str, model_mtime_ns: int, config_json: str, indices: tuple[int, ...], size: int
) -> list[np.ndarray]:
    _, ds = _model(run_id, run_dir, model_mtime_ns, config_json)
    return [enlarge(analysis.display_image(ds, ds.test.x[i]), size) for i in indices]


def gallery_images(record: RunRecord, indices: tuple[int, ...], size: int = 84) -> list[np.ndarray]:
    """These test images as they look to a person (uint8, enlarged to about `size` pixels)."""
    return _gallery(*_args(model_key(record)), tuple(int(i) for i in indices), int(size))


@st.cache_data(max_entries=16, show_spinner=False)
def _layers(run_id: str, run_dir: str, model_mtime_ns: int, config_json: str) -> tuple[list[inspection.TraceRow], int]:
    net, ds = _model(run_id, run_dir, model_mtime_ns, config_json)
    return inspection.shape_trace(net, ds.shape), count_parameters(net)


def layers(record: RunRecord) -> tuple[list[inspection.TraceRow], int]:
    """The shape of one image after every layer, and the model's trainable parameters."""
    return _layers(*_args(model_key(record)))


@st.cache_data(max_entries=16, show_spinner=False)
def _filters(run_id: str, run_dir: str, model_mtime_ns: int, config_json: str) -> inspection.Filters | None:
    net, _ = _model(run_id, run_dir, model_mtime_ns, config_json)
    return inspection.conv_filters(net)


def filters(record: RunRecord) -> inspection.Filters | None:
    """The first convolution's filters as images; None for a model without convolutions."""
    return _filters(*_args(model_key(record)))


@dataclass(frozen=True)
class FeatureMaps:
    image: np.ndarray  # the test image as a person sees it, in [0, 1]
    true_name: str
    top: analysis.ClassProbability  # what the model says
    blocks: list[inspection.FeatureBlock]  # the activations after each convolutional block


@st.cache_data(max_entries=64, show_spinner="Computing feature maps…")
def _feature_maps(run_id: str, run_dir: str, model_mtime_ns: int, config_json: str, index: int) -> FeatureMaps:
    net, ds = _model(run_id, run_dir, model_mtime_ns, config_json)
    x = ds.test.inputs(index)  # the normalised model input
    return FeatureMaps(
        analysis.display_image(ds, x),
        ds.classes[int(ds.test.y[index])],
        analysis.top_k(net, x, ds.classes, k=1)[0],
        inspection.feature_maps(net, x),
    )


def feature_maps(record: RunRecord, index: int) -> FeatureMaps:
    """Test image `index`, the model's answer for it and its feature maps after each convolutional block."""
    return _feature_maps(*_args(model_key(record)), int(index))


@dataclass(frozen=True)
class UploadAnswer:
    image: Image.Image  # the upload as decoded (bounded); info["original_size"] is its size in the file
    prepared: analysis.PreparedImage  # what the model sees
    top: list[analysis.ClassProbability]  # the most probable classes, most probable first


@st.cache_data(max_entries=8, show_spinner=False)
def _classify_upload(
    run_id: str, run_dir: str, model_mtime_ns: int, config_json: str, data: bytes, invert: bool | None, k: int
) -> UploadAnswer:
    net, ds = _model(run_id, run_dir, model_mtime_ns, config_json)
    image = open_upload(data)
    try:
        prepared = analysis.prepare_image(image, ds, invert=invert)
    except LensboardError:
        raise
    except Exception as exc:  # an image Pillow opened but cannot convert: say so, never a traceback
        raise UploadError(
            f"this image could not be converted to the model's input ({type(exc).__name__}: "
            f"{exc}); try saving it as PNG or JPEG"
        ) from None
    return UploadAnswer(image, prepared, analysis.top_k(net, prepared.x, ds.classes, k=k))


def classify_upload(record: RunRecord, data: bytes, invert: bool | None = None, k: int = 3) -> UploadAnswer:
    """An uploaded image file converted like the run's training data, and the model's top `k` classes.

    UploadError (a LensboardError) when the file cannot be used; see engine.ml.images."""
    return _classify_upload(*_args(model_key(record)), data, invert, int(k))


@st.cache_resource(max_entries=4, show_spinner=False)
def _embedder(run_id: str, run_dir: str, model_mtime_ns: int, _record: RunRecord) -> Embedder:
    return embedder_for_run(_record, CPU)


def embedder(record: RunRecord) -> Embedder:
    """The run's model ready to embed one image (an upload on the Search page), loaded once per model file.

    A pretrained-extractor run has no model file of its own: its key is its folder alone."""
    if is_pretrained_run(record):
        return _embedder(record.id, str(record.path), 0, record)
    key = model_key(record)
    return _embedder(key.run_id, key.run_dir, key.model_mtime_ns, record)
