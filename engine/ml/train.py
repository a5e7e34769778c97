"""fit(): the training loop. It knows nothing about the queue or the dashboard.

It reads the data, trains, evaluates, appends one metrics line per epoch to the
run folder, checkpoints atomically after every epoch (resuming from that
checkpoint when one is there), stops a diverging run, and reports progress
through callbacks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import TrainConfig, check_batch_size, validate
from engine.errors import ConfigError, ModelError
from engine.files import RunPaths, append_metrics, write_metrics
from engine.ml.checkpoints import atomic_torch_save, load_checkpoint, load_weights, save_checkpoint, short_error
from engine.ml.data import Dataset, check_dataset_name, load_dataset, split_train
from engine.ml.dataset_info import dataset_info
from engine.ml.models import build_model, check_arch, ensure_resnet18_weights
from engine.ml.precision import autocast, is_convolutional, resolve_precision
from engine.ml.splits import Split, batches
from engine.ml.threads import limited_threads, macs_per_sample, threads_for_work
from engine.ml.user_models import check_unchanged
from engine.model_files import file_change

EVAL_BATCH = 1000
EVAL_PIXELS = 1 << 19  # input values per evaluation batch: large batches, bounded activation memory
EVAL_MIN_BATCH = 128
# On a GPU, reading the loss on the host after every batch makes the CPU wait for the GPU each time:
# there the divergence check is kept on the device and read every this many batches.
DIVERGENCE_CHECK_EVERY = 16
# A cross-entropy this large means class scores off by thousands: the run has diverged even while the
# loss is still finite (a too-high learning rate often climbs to 1e20 before it overflows to inf).
DIVERGED_LOSS = 1e4


class Outcome(str, Enum):
    DONE = "done"
    DIVERGED = "diverged"
    CANCELLED = "cancelled"


@dataclass
class FitResult:
    outcome: Outcome
    metrics: list[dict]
    message: str = ""


@dataclass
class Callbacks:
    on_batch: Callable[[int, int, int], None] | None = None  # (epoch, batch, batches), 1-based
    on_epoch: Callable[[dict], None] | None = None  # the metrics row just written
    should_stop: Callable[[], bool] | None = None  # polled after every batch; True cancels
    on_start: Callable[[list[dict]], None] | None = None  # the metrics rows kept from a checkpoint (resume)


def pick_device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


FUSABLE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def can_fuse(params: list[nn.Parameter]) -> bool:
    """Whether the optimizer's fused kernels take these parameters: dense floating-point tensors all on
    one CPU or CUDA device (your own model could hold anything else)."""
    devices = {p.device for p in params}
    return (
        len(devices) == 1
        and next(iter(devices)).type in ("cpu", "cuda")
        and all(p.dtype in FUSABLE_DTYPES and p.layout == torch.strided for p in params)
    )


def make_optimizer(config: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The config's optimizer, with its fused kernel where the parameters allow: one update of every
    parameter per step instead of a few small ops each (on a CPU, torch's default is a Python loop over
    the parameters, the larger part of a small model's step). The arithmetic is Adam's or SGD's own."""
    params = list(params)
    fused = can_fuse(params) or None  # None: torch's default implementation
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=fused
    )


def eval_batch_size(split: Split) -> int:
    """Images per evaluation batch: about EVAL_PIXELS input values (668 MNIST or 170 CIFAR-10 images), at
    least EVAL_MIN_BATCH. Larger batches are barely faster on a CPU, and their activations (a CIFAR-10
    convolution's output is 128 KB per image) stay allocated after the pass."""
    return max(EVAL_MIN_BATCH, min(4 * EVAL_BATCH, EVAL_PIXELS // max(1, split.x[0].numel() if len(split) else 1)))


def evaluate(model: nn.Module, split: Split, channels_last: bool = False) -> tuple[float, float]:
    """(mean loss, accuracy) over a split, in eval mode and fp32, under inference_mode in large batches.
    The sums stay on the device: one host read at the end, not two per batch."""
    was_training = model.training
    model.eval()
    device = split.x.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with torch.inference_mode():
        for x, y in batches(split, eval_batch_size(split)):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = model(x)
            loss_sum += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    n = max(1, len(split))
    return loss_sum.item() / n, correct.item() / n


class _Diverged(Exception):
    pass


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Split,
    batch_size: int,
    generator: torch.Generator,
    epoch: int,
    callbacks: Callbacks,
    precision: str = "fp32",
    channels_last: bool = False,
    check_every: int | None = None,
) -> tuple[float, float, bool]:
    """One pass over `split`; returns (mean loss, accuracy, cancelled).

    `precision` 'bf16' runs the forward pass under bf16 autocast; `channels_last` lays each batch out
    as the model's (channels_last) convolutions want it. The loss is checked for divergence every
    `check_every` batches (default: every batch on a CPU, DIVERGENCE_CHECK_EVERY elsewhere), and the
    message names the first batch where it went bad.
    """
    model.train()
    device = split.x.device
    n_batches = math.ceil(len(split) / batch_size)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    check_every = check_every or (1 if device.type == "cpu" else DIVERGENCE_CHECK_EVERY)
    first_bad = torch.zeros((), device=device, dtype=torch.long)  # batch (1-based) where the loss went bad
    bad_loss = torch.zeros((), device=device)
    seen = 0
    for i, (x, y) in enumerate(batches(split, batch_size, generator), start=1):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out = model(x)
            loss = F.cross_entropy(out, y)
        if check_every == 1:
            if not loss.detach() < DIVERGED_LOSS:  # also true for NaN and inf
                raise _Diverged(f"the loss became {loss.item():.4g} at epoch {epoch}, batch {i} of {n_batches}")
        else:
            newly = ~(loss.detach() < DIVERGED_LOSS) & (first_bad == 0)
            first_bad = torch.where(newly, i, first_bad)
            bad_loss = torch.where(newly, loss.detach().float(), bad_loss)
            if (i % check_every == 0 or i == n_batches) and first_bad.item():
                raise _Diverged(
                    f"the loss became {bad_loss.item():.4g} at epoch {epoch}, batch {first_bad.item()} of {n_batches}"
                )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (out.detach().argmax(1) == y).sum()
        seen += len(y)
        if callbacks.on_batch:
            callbacks.on_batch(epoch, i, n_batches)
        if callbacks.should_stop and callbacks.should_stop():
            return loss_sum.item() / seen, correct.item() / seen, True
    return loss_sum.item() / seen, correct.item() / seen, False


def check_config(config: TrainConfig) -> TrainConfig:
    """Every field checked, and the dataset and architecture names known; returns the config."""
    validate(config)
    check_dataset_name(config.dataset)
    check_arch(config.arch)
    return config


def prepare(
    config: TrainConfig, device: torch.device, download: bool = False
) -> tuple[Dataset, Split, Split | None, Split]:
    """Load the dataset and cut the splits this config trains, validates and tests on."""
    ds = load_dataset(config.dataset, config.data_root, download)
    train, val = split_train(ds, config.val_split, config.train_limit, config.seed)
    check_batch_size(config, len(train))
    return ds, train.to(device), (val.to(device) if val is not None else None), ds.test.to(device)


def fit(
    config: TrainConfig,
    run_dir: Path,
    callbacks: Callbacks | None = None,
    device: torch.device | None = None,
    download: bool = False,
) -> FitResult:
    """Train `config` into `run_dir`, resuming from its checkpoint.pt when there is one.

    `download`: a missing dataset (or, with `pretrained`, the ImageNet weights) may be downloaded.
    """
    callbacks = callbacks or Callbacks()
    check_config(config)
    paths = RunPaths(Path(run_dir))
    device = device or pick_device(config.device)
    if config.pretrained:
        ensure_resnet18_weights(download)
    ds, train, val, test = prepare(config, device, download)
    check_unchanged(config, resuming=paths.checkpoint.exists() or paths.checkpoint_prev.exists())  # your own model

    torch.manual_seed(config.seed)
    model = build_model(config.arch, ds.shape, ds.num_classes, pretrained=config.pretrained).to(device)
    precision = resolve_precision(config.precision, device)
    channels_last = is_convolutional(model)  # +12% for simple_cnn on a CPU, more with bf16 and on GPUs
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Tiny work per batch (an MLP at batch 64) runs fastest on one thread: no hand-offs between threads.
    threads = threads_for_work(macs_per_sample(model, ds.shape) * config.batch_size, torch.get_num_threads())
    optimizer = make_optimizer(config, model.parameters())
    metrics_path = paths.metrics

    start_epoch, rows, resume_note = load_checkpoint(paths, model, optimizer, device)
    # The checkpoint carries the rows of the epochs it holds, so the metrics file is rebuilt from
    # them: a crash between the checkpoint and the metrics line, in the middle of a line, or during
    # an epoch never repeats or loses an epoch.
    if rows or metrics_path.exists():
        write_metrics(metrics_path, rows)
    if callbacks.on_start:
        callbacks.on_start(list(rows))

    for epoch in range(start_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        with limited_threads(threads):
            try:
                train_loss, train_acc, cancelled = train_one_epoch(
                    model, optimizer, train, config.batch_size, generator, epoch, callbacks, precision, channels_last
                )
            except _Diverged as exc:
                message = f"{exc}: the learning rate ({config.lr:g}) is probably too high; try a smaller one"
                return FitResult(Outcome.DIVERGED, rows, message)
            if cancelled:
                return FitResult(
                    Outcome.CANCELLED, rows, f"cancelled during epoch {epoch}; {len(rows)} finished epoch(s) kept"
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds = time.perf_counter() - t0
            row: dict[str, object] = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc}
            if val is not None:
                row["val_loss"], row["val_acc"] = evaluate(model, val, channels_last)
            row["test_loss"], row["test_acc"] = evaluate(model, test, channels_last)
        row["seconds"] = time.perf_counter() - t0
        row["samples_per_s"] = len(train) / train_seconds if train_seconds > 0 else None
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["precision"] = precision  # what ran: with precision "auto" in the config, this says which
        rows.append(row)
        checkpoint = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "rng": torch.get_rng_state(),
            "metrics": rows,
        }
        if device.type == "cuda":  # dropout on the GPU draws from the GPU's generator
            checkpoint["cuda_rng"] = torch.cuda.get_rng_state(device)
        save_checkpoint(paths, checkpoint)
        append_metrics(metrics_path, row)
        if callbacks.on_epoch:
            callbacks.on_epoch(row)

    atomic_torch_save(paths.model, model.state_dict())
    paths.checkpoint_prev.unlink(missing_ok=True)  # a finished run needs only the newest
    return FitResult(Outcome.DONE, rows, resume_note)


def load_trained(
    run_dir: Path, config: TrainConfig, device: torch.device | None = None, download: bool = False
) -> tuple[nn.Module, Dataset]:
    """A finished run's model (eval mode) and its dataset."""
    device = device or pick_device("auto")
    ds = load_dataset(config.dataset, config.data_root, download)
    model = build_model(config.arch, ds.shape, ds.num_classes)
    weights = RunPaths(Path(run_dir)).model
    state = load_weights(weights, device)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        change = file_change(config)  # your own model's class no longer matches the weights it saved
        if change is not None:
            raise ModelError(f"{change}, and its weights no longer fit the class: {str(exc).splitlines()[0]}") from exc
        raise ModelError(
            f"{weights} does not hold the weights of a {config.arch} for "
            f"{config.dataset} ({short_error(exc)}); train the run again"
        ) from None
    return model.to(device).eval(), ds


def preflight(config: TrainConfig, download: bool = False) -> int:
    """Every check a run can fail before training starts; returns the training split's size.

    Raises ConfigError, DatasetError or ModelError with a message for the user. The dataset is never
    loaded: its shape, classes and split sizes come from its headers and labels (engine.ml.dataset_info),
    so the dashboard checking a form holds no images.
    """
    check_config(config)
    if config.device == "cuda":
        pick_device("cuda")
    if config.pretrained:
        ensure_resnet18_weights(download)
    info = dataset_info(config.dataset, config.data_root, download)
    size = info.cut_size(config.val_split, config.train_limit)
    check_batch_size(config, size)
    build_model(config.arch, info.shape, info.num_classes)  # ModelError when the images are too small for it
    return size
