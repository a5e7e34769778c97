"""A run's checkpoints and weights files: written atomically, read back with `weights_only=True`.

`checkpoint.pt` is replaced atomically after every epoch and the one it replaces is kept as
`checkpoint.prev.pt`, so a resume takes the newest checkpoint that still loads; a damaged one is said
in the run's note. A damaged `model.pt` is one ModelError line.
"""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import torch
from torch import nn

from engine.errors import ModelError
from engine.files import RunPaths, atomic_write_bytes


def atomic_torch_save(path: Path, obj: object) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(paths: RunPaths, checkpoint: dict) -> None:
    """Write checkpoint.pt atomically, keeping the one it replaces as checkpoint.prev.pt: whatever
    happens to the newest file (a torn write, a full disk, a bad sector), a resume has another."""
    if paths.checkpoint.exists():
        os.replace(paths.checkpoint, paths.checkpoint_prev)
    atomic_torch_save(paths.checkpoint, checkpoint)


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0].split('. ')[0][:160]}" if text else type(exc).__name__


def load_checkpoint(
    paths: RunPaths, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[int, list[dict], str]:
    """Restore the newest checkpoint that loads into `model` and `optimizer`.

    Returns (the epoch to start from, the metrics rows the checkpoint carries, a note for the run
    that is empty unless a checkpoint was damaged: which one, and where training resumed from).
    A damaged checkpoint file is removed; so are temporary files of interrupted writes.
    """
    for leftover in paths.interrupted_writes():
        leftover.unlink(missing_ok=True)
    candidates = [p for p in (paths.checkpoint, paths.checkpoint_prev) if p.exists()]
    if not candidates:
        return 1, [], ""
    fresh = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), torch.get_rng_state())
    damaged = []
    for path in candidates:
        try:
            ckpt = torch.load(path, map_location=device, weights_only=True)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            torch.set_rng_state(ckpt["rng"].cpu())
            if device.type == "cuda" and "cuda_rng" in ckpt:
                torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu(), device)
            epoch, rows = int(ckpt["epoch"]), list(ckpt.get("metrics", []))
        except Exception as exc:  # truncated, corrupt, or not ours: anything torch.load or a key can raise
            damaged.append(f"{path.name} could not be read ({short_error(exc)})")
            path.unlink(missing_ok=True)
            model.load_state_dict(fresh[0])
            optimizer.load_state_dict(fresh[1])
            torch.set_rng_state(fresh[2])
            continue
        note = f"{'; '.join(damaged)}: resumed from {path.name} after epoch {epoch}" if damaged else ""
        return epoch + 1, rows, note
    return 1, [], f"{'; '.join(damaged)}: no checkpoint could be read, so training started again from epoch 1"


def load_weights(path: Path, device: torch.device) -> dict:
    """A weights file (model.pt); ModelError in one line when it is damaged or incomplete."""
    path = Path(path)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ModelError(
            f"{path} cannot be read ({short_error(exc)}): the file is damaged or incomplete; "
            f"train the run again (`python -m engine retry {path.parent.name}`)"
        ) from None
