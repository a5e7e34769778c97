"""Embeddings of stored runs: a trained run's own features, or a pretrained extractor run of its own.

A pretrained ResNet-18 feature extractor is a run (kind 'embed') whose embed job makes it: it goes
queued -> running -> done (or failed, cancelled) like a training run. Embedding a trained run leaves
its state alone. The computing itself is engine.ml.embed's.
"""

from __future__ import annotations

import torch

from engine.config import TrainConfig
from engine.errors import Cancelled, EmbeddingError, ModelError
from engine.ml.data import check_dataset_name
from engine.ml.embed import (
    DEFAULT_IMAGE_SIZE,
    Embedder,
    ProgressFn,
    StopFn,
    check_image_size,
    embedder_for,
    write_pretrained_settings,
)
from engine.ml.embed import compute_embeddings as compute_in_folder
from engine.ml.models import resnet18_weights_path
from engine.runs.records import RunKind, RunRecord, RunState
from engine.runs.store import Store


def is_pretrained_run(record: RunRecord) -> bool:
    return record.kind == RunKind.EMBED


def embedder_for_run(record: RunRecord, device: torch.device | None = None, download: bool = False) -> Embedder:
    """The model of a run, ready to embed its dataset's images."""
    config = record.train_config()  # a ConfigError for a run recorded by a script: it has no model
    if not is_pretrained_run(record) and not record.paths.model.exists():
        raise EmbeddingError(
            f"run {record.id} has no trained model yet (state {record.state.value}); embeddings "
            f"need a finished run (state done)"
        )
    return embedder_for(
        record.path, config, pretrained=is_pretrained_run(record), name=record.id, device=device, download=download
    )


def compute_embeddings(
    store: Store,
    run_id: str,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    device: torch.device | None = None,
    download: bool = False,
) -> dict:
    """Embed the train and test splits of run `run_id` and save them; returns the meta dict.

    A pretrained-extractor run goes running -> done (or failed, and the error is raised);
    a trained run keeps its state. Raises Cancelled when `should_stop` says so.
    """
    record = store.get_run(run_id)
    pretrained = is_pretrained_run(record)
    if pretrained:
        store.set_state(run_id, RunState.RUNNING)
    try:
        meta = compute_in_folder(record.path, embedder_for_run(record, device, download), progress, should_stop)
    except Cancelled:
        if pretrained:
            store.set_state(run_id, RunState.CANCELLED, "cancelled while computing embeddings")
        raise
    except Exception as exc:
        if pretrained:
            store.set_state(run_id, RunState.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    if pretrained:
        store.set_progress(run_id, 1, 0, 0)
        store.set_state(run_id, RunState.DONE)
    return meta


def create_pretrained_run(
    store: Store,
    dataset: str,
    data_root: str = "data",
    image_size: int = DEFAULT_IMAGE_SIZE,
    state: RunState = RunState.QUEUED,
    download: bool = False,
) -> str:
    """A run (kind 'embed') that embeds `dataset` with an ImageNet ResNet-18; returns its id.

    Checks what can fail early: the dataset name, the image size and the weights file.
    """
    check_dataset_name(dataset)
    check_image_size(image_size)
    weights = resnet18_weights_path()
    if not weights.is_file() and not download:  # else the job downloads them
        raise ModelError(
            f"ImageNet weights for resnet18 are not in the torch hub cache and downloads are "
            f"off: put torchvision's {weights.name} at {weights} (or set TORCH_HOME to a "
            f"folder holding hub/checkpoints/{weights.name})"
        )
    config = TrainConfig(dataset=dataset, data_root=data_root, arch="resnet18", pretrained=True, epochs=1)
    run_id = store.create_run(config, state, kind=RunKind.EMBED)
    write_pretrained_settings(store.run_dir(run_id), image_size, weights.name)
    return run_id
