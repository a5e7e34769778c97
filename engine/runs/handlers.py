"""What each kind of job does: the worker's handler registry.

A handler is `fn(store, job, ctx) -> note | None`: it runs one job to its end, reports progress and
polls for a stop through `ctx` (an executor.JobContext), and may return a one-line note kept as the
job's `note`. One that raises marks its job failed, with the traceback saved in the run folder; one
that returns early because `ctx.should_stop()` said so ends its job cancelled (or requeued when the
worker is shutting down).
"""

from __future__ import annotations

from engine.errors import Cancelled, LensboardError
from engine.ml.projection import ProjectionParams, run_projection
from engine.ml.retrieval import IndexSpec, run_index
from engine.runs.embedding import compute_embeddings
from engine.runs.executor import JobContext, JobFn
from engine.runs.jobs import Job, JobKind
from engine.runs.records import RunState
from engine.runs.runner import patiently, run_training
from engine.runs.search import TrialHooks
from engine.runs.store import Store

Handler = JobFn  # fn(store, job, ctx) -> note | None


class JobFailed(LensboardError):
    """Raised by a handler whose failure is already recorded (message, traceback): just mark the job failed."""


class JobRetry(LensboardError):
    """Raised by a handler stopped by something passing (a full disk): put the job back on the queue and wait."""


def train(store: Store, job: Job, ctx: JobContext) -> str | None:
    """Train the run (resuming from its checkpoint): the same run_training as the foreground `train`.
    A search's trial may also be pruned after an epoch, and queues the search's next trials when it ends."""
    trial = TrialHooks(store, job.run_id, ctx.should_stop)  # for any other run: only passes should_stop on
    state, message = run_training(
        store,
        job.run_id,
        on_batch=ctx.train_batch,
        on_epoch=trial.on_epoch,
        should_stop=trial.should_stop,
        download=ctx.download,
        fit_fn=ctx.fit,
    )
    state, message = patiently(lambda: trial.ended(state, message))  # pruned: its state written patiently too
    if state == RunState.FAILED:
        raise JobFailed(message)  # the runner saved traceback.txt and marked the run failed
    if state == RunState.INTERRUPTED:
        raise JobRetry(message)  # e.g. the disk is full: it resumes from its checkpoint later
    return message or None  # e.g. why it diverged


def embed(store: Store, job: Job, ctx: JobContext) -> str | None:
    """Embed the run's train and test images; payload {}."""
    try:
        meta = compute_embeddings(
            store, job.run_id, lambda d, t, s: ctx.progress(d, t, stage=s), ctx.should_stop, download=ctx.download
        )
    except Cancelled:
        return None  # the worker records the cancellation; nothing half-written stays behind
    return f"{meta['train']} + {meta['test']} embeddings of {meta['dim']} dimensions in {meta['seconds']:.1f}s"


def project(store: Store, job: Job, ctx: JobContext) -> str | None:
    """A t-SNE or PCA map of the run's embeddings; payload: ProjectionParams.to_json() (partial is fine)."""
    params = ProjectionParams.from_json(job.payload or {})
    try:
        proj, computed = run_projection(
            store.run_dir(job.run_id), params, lambda d, t, s: ctx.progress(d, t, stage=s), ctx.should_stop
        )
    except Cancelled:
        return None
    return f"{params.method.value} map of {len(proj.indices)} points" + ("" if computed else " (cached)")


def index(store: Store, job: Job, ctx: JobContext) -> str | None:
    """A FAISS index over the run's train embeddings; payload {"kind": "hnsw", "metric": "cosine"}."""
    payload = job.payload or {}
    spec = IndexSpec.parse(payload.get("kind", "flat"), payload.get("metric", "cosine"))
    ctx.progress(0, 1, stage=f"building the {spec.name} index")
    built_index, built = run_index(store.run_dir(job.run_id), spec)
    ctx.progress(1, 1, stage="done")
    return f"{spec.name} index of {built_index.ntotal} vectors" + ("" if built else " (already saved)")


HANDLERS: dict[str, Handler] = {
    JobKind.TRAIN.value: train,
    JobKind.EMBED.value: embed,
    JobKind.PROJECT.value: project,
    JobKind.INDEX.value: index,
}


def register_handler(kind: str, fn: Handler) -> None:
    """Make the worker run jobs of `kind` with fn(store, job, ctx)."""
    if not kind or not isinstance(kind, str):
        raise ValueError(f"a job kind must be a non-empty string, got {kind!r}")
    HANDLERS[kind] = fn


def resolve_handler(kind: str) -> Handler:
    handler = HANDLERS.get(kind)
    if handler is None:
        raise LookupError(f"no handler for job kind {kind!r}; known kinds: {', '.join(sorted(HANDLERS))}")
    return handler
