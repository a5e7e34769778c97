"""Record your own training loop as a Lensboard run, live: three lines in any script.

    from engine import track

    with track.run(config={"arch": "my_cnn", "lr": 1e-3, "batch_size": 64, "epochs": 5}) as run:
        for epoch in range(1, 6):
            ...  # your own training
            run.log(epoch=epoch, train_loss=loss, test_acc=acc)

The run (kind 'tracked') is in the same results root as everything else (`results=`, else
$LENSBOARD_RESULTS, else ./results): it shows on Runs and Compare while it trains, state
`running`, then `done`; an exception inside the block leaves it `failed` with the message (and
`traceback.txt`), Ctrl+C `cancelled`, and a killed process `interrupted` (the worker and the
next tracked script notice the dead process through `foreground.json`, as for a killed `train`
command). Each `log` appends one flushed line to `metrics.jsonl` and updates the registry's
summary columns; bad input raises TrackError before anything is written, so nothing already
logged is lost. `run.dir` is the run folder, for the script's own files.

Writes go through SQLite in WAL mode with a busy timeout, like the worker's and the dashboard's,
so scripts, workers and the dashboard can share one results root. This module never imports torch:
pass plain numbers (`loss.item()`; a one-element tensor is read with `.item()` too).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NoReturn

from engine.config import TrainConfig
from engine.errors import LensboardError
from engine.files import append_metrics, atomic_write_text
from engine.runs.procs import interrupt_orphaned_scripts, mark_foreground
from engine.runs.records import RunState
from engine.runs.store import Store
from engine.settings import Settings

# The metrics Lensboard knows (the rest are kept too); accuracies are fractions in [0, 1].
KNOWN_METRICS = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "seconds",
    "samples_per_s",
    "lr",
)
ACCURACIES = ("train_acc", "val_acc", "test_acc")
UNKNOWN = "unknown"  # the dataset of a run whose config does not say


class TrackError(LensboardError, ValueError):
    """Bad input to the tracking API; the message says what is allowed. Nothing logged before is lost."""


# ---------------------------------------------------------------- checking what the script passes


def _typed_fields() -> dict[str, type]:
    """TrainConfig's fields and the type of a value (its default's); a tracked config that uses one of
    these names must give it that type, so Runs and Compare can show it beside engine runs."""
    types = {f.name: type(f.default) for f in dataclasses.fields(TrainConfig) if f.default is not None}
    types["train_limit"] = int
    types.pop("arch_sha256", None)
    return types


def _plain(key: str, value: Any) -> Any:
    """A JSON-safe copy of one config value: str, bool, None, a finite number, or a list of those."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise TrackError(f"config[{key!r}] must be a finite number, got {value!r}")
        return float(value)
    if isinstance(value, (list, tuple)) and not any(isinstance(v, (list, tuple, dict)) for v in value):
        return [_plain(f"{key}[{i}]", v) for i, v in enumerate(value)]
    return _not_plain(key, value)


def _not_plain(key: str, value: Any) -> NoReturn:
    raise TrackError(
        f"config[{key!r}] is a {type(value).__name__}; config values must be plain: str, int, float, "
        f"bool, None, or a flat list of those"
    )


def check_config(config: Any, name: str | None = None) -> dict:
    """The config as it will be stored; TrackError when it is not a dict of plain values, or when a field
    Lensboard knows (lr, epochs, batch_size, ...) has the wrong type."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise TrackError(
            f"config must be a dict of plain values, e.g. {{'lr': 0.001, 'epochs': 5}}; got a {type(config).__name__}"
        )
    out = {}
    for key, value in config.items():
        if not isinstance(key, str) or not key:
            raise TrackError(f"config keys must be non-empty strings, got {key!r}")
        out[key] = _plain(key, value)
    for key, kind in _typed_fields().items():
        if key not in out or (out[key] is None and key == "train_limit"):
            continue
        value = out[key]
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise TrackError(
                f"config[{key!r}] must be {_kind_name(kind)} (Lensboard shows it beside its own "
                f"runs' {key}), got {value!r}"
            )
    if isinstance(out.get("epochs"), int) and out["epochs"] < 1:
        raise TrackError(f"config['epochs'] is how many epochs the script will run, at least 1; got {out['epochs']}")
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise TrackError(f"name must be a non-empty string, got {name!r}")
        if "name" in out and out["name"] != name:
            raise TrackError(f"config['name'] is {out['name']!r} and name= is {name!r}; give the name once")
        out["name"] = name.strip()
    return out


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "True or False"}.get(kind, kind.__name__)


def _number(name: str, value: Any) -> float | int:
    """A metric value as a plain number; one-element tensors and numpy scalars are read with .item()."""
    if not isinstance(value, numbers.Real) and hasattr(value, "item"):
        try:
            value = value.item()
        except (ValueError, RuntimeError, TypeError):
            pass  # a tensor with several elements: not one number
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TrackError(
            f"{name} must be a number (a float such as loss.item()), got {type(value).__name__} {value!r:.60}"
        )
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def check_row(metrics: dict, last_epoch: int | None) -> dict:
    """One epoch's metrics row as it will be written; TrackError names what is wrong."""
    if "epoch" not in metrics:
        raise TrackError("log() needs epoch=N (the epoch these values are from) besides the metrics")
    epoch = metrics["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise TrackError(f"epoch must be a whole number >= 0, got {epoch!r}")
    epoch = int(epoch)
    if last_epoch is not None and epoch <= last_epoch:
        raise TrackError(
            f"epoch {epoch} is not after the last logged epoch {last_epoch}; log each epoch once, in increasing order"
        )
    row: dict[str, float] = {"epoch": epoch}
    for key, value in metrics.items():
        if key == "epoch":
            continue
        number = _number(key, value)
        if key in ACCURACIES and not (0 <= number <= 1 or math.isnan(number)):
            hint = f" ({number:g} looks like a percentage: divide it by 100)" if 1 < number <= 100 else ""
            raise TrackError(f"{key} must be a fraction in [0, 1]{hint}, got {number!r}")
        row[key] = number
    if len(row) == 1:
        raise TrackError(f"log(epoch={epoch}) has no metric; give at least one, e.g. train_loss=..., test_acc=...")
    return row


# ---------------------------------------------------------------- a tracked run


class Run:
    """One tracked run: log its epochs with `log(...)`; use it as a context manager (`with track.run(...)`),
    or call `finish()` yourself."""

    def __init__(self, store: Store, run_id: str, config: dict, started: float):
        self.store = store
        self.id = run_id
        self.config = config
        self.dir: Path = store.run_dir(run_id)  # the run folder: put the script's own files here
        self.paths = store.paths(run_id)
        self.rows: list[dict] = []
        self.ended = False
        self._last_time = started
        self._gone = False

    @property
    def _last_epoch(self) -> int | None:
        return self.rows[-1]["epoch"] if self.rows else None

    def log(self, **metrics: Any) -> dict:
        """Record one epoch: `epoch` (required, increasing) and any metrics; returns the row written.

        The metrics Lensboard knows are train_loss, train_acc, val_loss, val_acc, test_loss, test_acc
        (accuracies as fractions in [0, 1]), seconds, samples_per_s and lr; other names are kept and can be
        plotted too. `seconds` defaults to the wall time since the previous log (or the start).
        """
        if self.ended:
            raise TrackError(f"run {self.id} has ended; log inside the `with track.run(...)` block")
        row = check_row(metrics, self._last_epoch)
        now = time.monotonic()
        row.setdefault("seconds", now - self._last_time)
        if not self.store.has_run(self.id):
            if not self._gone:
                warnings.warn(
                    f"run {self.id} was deleted from Lensboard while this script ran; its further "
                    f"epochs are not recorded",
                    stacklevel=2,
                )
                self._gone = True
            return row
        path = self.paths.metrics
        size = path.stat().st_size if path.exists() else 0
        try:
            append_metrics(path, row)
        except OSError:
            with open(path, "a") as f:  # never leave half a line for the next one to be glued to
                f.truncate(size)
            raise
        self.rows.append(row)
        self._last_time = now
        self._write_summary()
        return row

    def _write_summary(self) -> None:
        accs = [
            r["test_acc"]
            for r in self.rows
            if isinstance(r.get("test_acc"), float | int) and not math.isnan(r["test_acc"])
        ]
        losses = [r["test_loss"] for r in self.rows if "test_loss" in r]
        seconds = [r["seconds"] for r in self.rows if isinstance(r.get("seconds"), float | int)]
        self.store.set_summary(
            self.id,
            epoch=self.rows[-1]["epoch"],
            final_test_acc=accs[-1] if accs else None,
            best_test_acc=max(accs) if accs else None,
            final_test_loss=losses[-1] if losses else None,
            sec_per_epoch=sum(seconds) / len(seconds) if seconds else None,
        )

    def finish(self, state: RunState = RunState.DONE, message: str | None = None) -> None:
        """End the run (done, unless told otherwise); later logs are refused."""
        if self.ended:
            return
        self.ended = True
        if self.store.has_run(self.id):
            self.store.set_state(self.id, state, message)
        self.paths.foreground.unlink(missing_ok=True)  # after the state: a killed process is noticed
        self.store.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        kept = f"{len(self.rows)} logged epoch(s) kept"
        if exc_type is None:
            self.finish(RunState.DONE)
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish(RunState.CANCELLED, f"stopped with Ctrl+C; {kept}")
        elif isinstance(exc, SystemExit) and exc.code in (0, None):
            self.finish(RunState.DONE)
        else:
            if self.dir.is_dir():
                atomic_write_text(self.paths.traceback, "".join(traceback.format_exception(exc_type, exc, tb)))
            what = (
                f"the script exited with code {exc.code}"
                if isinstance(exc, SystemExit)
                else f"{exc_type.__name__}: {exc}"
            )
            self.finish(RunState.FAILED, f"{what}; {kept}")
        return False  # the exception goes on to the script


def run(config: dict | None = None, results: str | os.PathLike | None = None, name: str | None = None) -> Run:
    """Start recording a run of your own training loop; use it as `with track.run(config={...}) as run:`.

    config: the hyperparameters, a dict of plain values (unknown keys are kept and shown). Known names
        (arch, dataset, lr, batch_size, epochs, optimizer, seed, ...) appear in Lensboard's columns.
    results: the results root (default $LENSBOARD_RESULTS, else ./results).
    name: a name for the run, kept as config["name"]; the run's arch column is config["arch"], else
        this name, else the script's file name.
    """
    values = check_config(config, name)
    store = Store(Settings.from_env(results=results).results)
    try:
        interrupt_orphaned_scripts(store)
        script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] not in ("", "-c") else ""
        arch = values.get("arch") or values.get("name") or script or "script"
        run_id = store.create_tracked_run(
            values, dataset=str(values.get("dataset") or UNKNOWN), arch=str(arch), epochs=int(values.get("epochs") or 0)
        )
        mark_foreground(store.run_dir(run_id))  # a killed script leaves the run interrupted, not running
    except BaseException:
        store.close()
        raise
    return Run(store, run_id, values, time.monotonic())
