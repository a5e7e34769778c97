"""The dispatcher's end of one remote trial: the run folder written here, exactly as fit() writes it.

`RemoteTrial.fit` has the signature of engine.ml.train.fit, so run_training and the train handler
(with any hooks it has) run unchanged in the dispatcher while the epochs are trained on a Ray node
(engine.runs.ray_trial). It sends the node the run's config and the head's copies of the run's last
checkpoints, and for each message the trial streams back it does here what fit does locally: a
resume rewrites metrics.jsonl from the checkpoint's rows, a finished epoch moves checkpoint.pt to
checkpoint.prev.pt, writes the new one (atomically) and then appends its metrics line, the end writes
model.pt. So every epoch lands once,
whatever dies when: the dispatcher between two writes (a resume rebuilds the metrics from the
checkpoint), or the node (the job is requeued and its retry starts from the checkpoint here).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import TrainConfig, is_user_arch
from engine.errors import ClusterError
from engine.files import RunPaths, append_metrics, atomic_write_bytes, write_metrics
from engine.ml.train import Callbacks, FitResult, Outcome
from engine.runs.executor import JobContext
from engine.runs.jobs import Job
from engine.runs.ray_trial import BATCH, END, EPOCH, ERROR, NODE, START

WAIT_EVERY = 0.2  # seconds between looks at the job's stop flag while waiting for the trial's next message
MAX_ATTEMPTS = 4  # a job whose node is lost on its 4th attempt fails instead of going back on the queue


@dataclass(frozen=True)
class TrialSpec:
    """What one trial asks the cluster for."""

    cpus: float = 1.0  # CPUs reserved for it; its torch threads follow (at least 1)
    gpus: float = 0.0  # GPUs reserved for it (0: a CPU trial)
    batch_delay: float = 0.0  # seconds it sleeps after each batch (slows runs down for tests and demos)

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus))


class RemoteTraceback(Exception):
    """The traceback of an error raised on a node, chained under it so traceback.txt shows where it happened."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]).rstrip()


class RemoteTrial:
    """One train job's trial on the cluster; `fit` is what ctx.fit is while the job runs under Ray."""

    def __init__(
        self, remote: Any, flags: Any, job: Job, ctx: JobContext, spec: TrialSpec, on_node: Callable[[str, str], None]
    ):
        self.remote, self.flags, self.job, self.ctx, self.spec = remote, flags, job, ctx, spec
        self.on_node = on_node  # (node id hex, host) once the trial runs somewhere
        self.node: str | None = None
        self.key = f"job-{job.id}-attempt-{job.attempts}"  # names its stop flag

    def fit(
        self,
        config: TrainConfig,
        run_dir: Path,
        callbacks: Callbacks | None = None,
        device: Any = None,
        download: bool = False,
    ) -> FitResult:
        import ray  # heavy and optional: only a `worker --ray` process gets here

        callbacks = callbacks or Callbacks()
        paths = RunPaths(Path(run_dir))
        checkpoints = {p.name: p.read_bytes() for p in (paths.checkpoint, paths.checkpoint_prev) if p.exists()}
        stream = self.remote.options(
            num_cpus=self.spec.cpus,
            num_gpus=self.spec.gpus,
            name=f"trial-{self.job.run_id}-job-{self.job.id}",
            max_retries=0,
        ).remote(
            config.to_dict(),
            checkpoints,
            model_file(config),
            download=download,
            batch_delay=self.spec.batch_delay,
            threads=self.spec.threads,
            flags=self.flags,
            key=self.key,
        )
        rows: list[dict] = []
        ended = False  # the trial said how it ended (or it is gone): nothing left to stop
        try:
            for message in self._messages(stream, callbacks):
                kind = message["kind"]
                if kind == NODE:
                    self.node = message["node"]
                    self.on_node(message["node"], message["host"])
                elif kind == START:
                    rows = list(message["rows"])
                    for path in (paths.checkpoint, paths.checkpoint_prev):
                        if path.name not in message["kept"]:  # damaged: fit removed it there, so here too
                            path.unlink(missing_ok=True)
                    if rows or paths.metrics.exists():
                        write_metrics(paths.metrics, rows)
                    if callbacks.on_start:
                        callbacks.on_start(list(rows))
                elif kind == BATCH:
                    if callbacks.on_batch:
                        callbacks.on_batch(message["epoch"], message["batch"], message["batches"])
                elif kind == EPOCH:
                    row = message["row"]
                    assert row["epoch"] == len(rows) + 1, f"epoch {row['epoch']} after {len(rows)} epoch(s)"
                    if paths.checkpoint.exists():  # kept as checkpoint.prev.pt, as fit's save_checkpoint does
                        os.replace(paths.checkpoint, paths.checkpoint_prev)
                    atomic_write_bytes(paths.checkpoint, message["checkpoint"])  # then the line, as fit does
                    append_metrics(paths.metrics, row)
                    rows.append(row)
                    if callbacks.on_epoch:
                        callbacks.on_epoch(row)
                elif kind == END:
                    ended = True
                    if message["model"] is not None:
                        atomic_write_bytes(paths.model, message["model"])
                        paths.checkpoint_prev.unlink(missing_ok=True)  # a finished run needs only the newest
                    return FitResult(Outcome(message["outcome"]), rows, message["message"])
                elif kind == ERROR:
                    ended = True
                    raise message["error"] from RemoteTraceback(message["traceback"])
        except ray.exceptions.TaskCancelledError:  # stopped before it reached a node
            ended = True
            return FitResult(Outcome.CANCELLED, rows, f"cancelled before it started; {len(rows)} epoch(s) kept")
        except ray.exceptions.RayTaskError as exc:  # the task itself raised (e.g. the engine cannot load there)
            ended = True
            cause = exc.cause if isinstance(exc.cause, Exception) else RuntimeError(str(exc))
            raise cause from RemoteTraceback(str(exc))
        except ray.exceptions.RayError as exc:  # its node or worker process was lost
            ended = True
            return self._lost(exc, rows)
        finally:
            if not ended:  # something failed here (the run folder deleted, a full disk): stop it there too
                ray.cancel(stream)
            self.flags.forget.remote(self.key)
        raise ClusterError(f"the trial of job {self.job.id} ended without a result")

    def _messages(self, stream: Any, callbacks: Callbacks) -> Iterator[dict]:
        """The trial's messages in order; meanwhile a stop asked here (cancel, shutdown) is passed on."""
        import ray

        asked = False
        while True:
            if not asked and callbacks.should_stop and callbacks.should_stop():
                asked = True
                if self.node is None:
                    ray.cancel(stream)  # still waiting for a node: it never starts
                else:
                    self.flags.stop.remote(self.key)  # it stops after its current batch
            ready, _ = ray.wait([stream], timeout=WAIT_EVERY)
            if not ready:
                continue
            try:
                ref = next(stream)
            except StopIteration:
                return
            yield ray.get(ref)

    def _lost(self, exc: Exception, rows: list[dict]) -> FitResult:
        where = f"its Ray node {self.node}" if self.node else "its Ray worker"
        what = f"{where} was lost ({type(exc).__name__})"
        if self.job.attempts >= MAX_ATTEMPTS:
            raise ClusterError(
                f"{what} on attempt {self.job.attempts}; giving up after {MAX_ATTEMPTS} attempts "
                f"({len(rows)} epoch(s) kept): check the cluster's nodes and `ray status`"
            )
        self.ctx.requeue = f"{what}; requeued to resume from its last checkpoint ({len(rows)} epoch(s) done)"
        return FitResult(Outcome.CANCELLED, rows, self.ctx.requeue)


def model_file(config: TrainConfig) -> tuple[str, bytes] | None:
    """(file name, source) of your own model's file, which a node without this filesystem needs."""
    if not is_user_arch(config.arch):
        return None
    path = Path(config.arch.rpartition(":")[0])
    return path.name, path.read_bytes()
