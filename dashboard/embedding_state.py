"""What the Embeddings and Search pages read: runs that have (or can have) embeddings, the
embeddings themselves, in-memory exact indexes, saved approximate indexes, evaluations and
job status, cached across reruns with Streamlit's caches.

Nothing here computes embeddings or t-SNE maps: those are jobs for the worker. Exact (flat)
indexes and PCA maps are cheap enough to build in memory here; they are never written to disk
from the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import streamlit as st

from dashboard.state import REFRESH_SECONDS, open_store
from engine.config import arch_label
from engine.ml.analysis import display_image
from engine.ml.data import Dataset, load_dataset
from engine.ml.embed import SPLITS, Embeddings, embedding_meta, embeddings_dir, load_embeddings
from engine.ml.projection import Method, Projection, ProjectionParams, run_projection
from engine.ml.retrieval import Evaluation, IndexSpec, build_index, evaluate_index, index_path, saved_index
from engine.runs.embedding import is_pretrained_run
from engine.runs.jobs import Job, JobState, jobs_for_run, submit_job
from engine.runs.records import RunRecord, RunState
from engine.runs.store import Store

PENDING = (JobState.QUEUED, JobState.RUNNING)


def run_name(record: RunRecord) -> str:
    """A short label: what made the embedding, its test accuracy, and the id's tail."""
    if is_pretrained_run(record):
        return f"resnet18 ImageNet features · {record.id[-4:]}"
    acc = f" · test acc {100 * record.final_test_acc:.1f}%" if record.final_test_acc is not None else ""
    return f"{arch_label(record.arch)}{acc} · {record.id[-4:]}"


def embeddable_runs(store: Store) -> list[RunRecord]:
    """Finished trained runs, and pretrained-extractor runs that are not failed or cancelled; newest first."""
    out = []
    for r in store.list_runs():
        if is_pretrained_run(r):
            if r.state not in (RunState.FAILED, RunState.CANCELLED):
                out.append(r)
        elif r.kind == "train" and r.state == RunState.DONE and r.paths.model.exists():
            out.append(r)
    return sorted(out, key=lambda r: r.id, reverse=True)


def stamp(record: RunRecord) -> float | None:
    """When the run's embeddings were written (None: not there yet, or damaged); cache keys include it.

    Damaged embedding files count as missing, so the pages offer to compute them again; `damage`
    says what is wrong with them."""
    meta = embedding_meta(record.path)
    if meta is None or damage(record) is not None:
        return None
    return float(meta.get("created", 0.0))


EMBEDDING_FILES = tuple(f"{split}{suffix}.npy" for split in SPLITS for suffix in ("", "_labels"))


@st.cache_data(max_entries=256, show_spinner=False)
def _check_files(folder: str, stats: tuple) -> str | None:
    for name in EMBEDDING_FILES:
        try:
            np.load(Path(folder) / name, mmap_mode="r")  # reads the header and checks the size, not the data
        except (OSError, ValueError, EOFError) as exc:
            return (
                f"embeddings/{name} is damaged or incomplete ({type(exc).__name__}: {str(exc)[:120]}); "
                "compute the embeddings again"
            )
    return None


def damage(record: RunRecord) -> str | None:
    """What is wrong with the run's saved embedding files (a truncated .npy), or None."""
    folder = embeddings_dir(record.path)
    if embedding_meta(record.path) is None:
        return None
    stats = []
    for name in EMBEDDING_FILES:
        try:
            st_ = (folder / name).stat()
        except FileNotFoundError:
            return f"embeddings/{name} is missing; compute the embeddings again"
        stats.append((name, st_.st_size, st_.st_mtime_ns))
    return _check_files(str(folder), tuple(stats))


@st.cache_data(max_entries=16, show_spinner=False)
def _load(path: str, split: str, when: float) -> Embeddings:
    return load_embeddings(Path(path), split)


def embeddings(record: RunRecord, split: str) -> Embeddings | None:
    when = stamp(record)
    return None if when is None else _load(str(record.path), split, when)


def dataset(record: RunRecord) -> Dataset:
    return load_dataset(record.config["dataset"], record.config.get("data_root", "data"))


@st.cache_resource(max_entries=8, show_spinner=False)
def _flat(path: str, metric: str, when: float) -> faiss.Index:
    return build_index(load_embeddings(Path(path), "train").vectors, IndexSpec.parse("flat", metric))


@st.cache_resource(max_entries=8, show_spinner=False)
def _saved(path: str, kind: str, metric: str, when: float, mtime: float) -> faiss.Index | None:
    return saved_index(Path(path), IndexSpec.parse(kind, metric), load_embeddings(Path(path), "train"))


def index_for(record: RunRecord, spec: IndexSpec) -> faiss.Index | None:
    """The exact index (built in memory), or the saved approximate one; None when that is not built yet."""
    when = stamp(record)
    if when is None:
        return None
    if not spec.kind.approximate:
        return _flat(str(record.path), spec.metric.value, when)
    path = index_path(record.path, spec)
    if not path.exists():
        return None
    return _saved(str(record.path), spec.kind.value, spec.metric.value, when, path.stat().st_mtime)


@st.cache_data(max_entries=32, show_spinner=False)
def _evaluate(
    path: str, when: float, k: int, kind: str, metric: str, mtime: float, classes: tuple[str, ...]
) -> Evaluation:
    run_dir = Path(path)
    spec = IndexSpec.parse(kind, metric)
    database, queries = load_embeddings(run_dir, "train"), load_embeddings(run_dir, "test")
    index = _flat(path, metric, when) if not spec.kind.approximate else _saved(path, kind, metric, when, mtime)
    exact = _flat(path, metric, when) if spec.kind.approximate else None
    return evaluate_index(index, spec, database, queries, k, list(classes), exact)


def evaluation(record: RunRecord, k: int, spec: IndexSpec | None = None) -> Evaluation | None:
    """Whole-test-set retrieval metrics (exact search unless `spec` says otherwise), or None while the
    embeddings (or the saved index) are missing."""
    spec = spec or IndexSpec()
    when = stamp(record)
    if when is None or index_for(record, spec) is None:
        return None
    mtime = index_path(record.path, spec).stat().st_mtime if spec.kind.approximate else 0.0
    classes = tuple(embedding_meta(record.path).get("classes") or [])
    return _evaluate(str(record.path), when, int(k), spec.kind.value, spec.metric.value, mtime, classes)


@st.cache_data(max_entries=16, show_spinner=False)
def _pca(path: str, when: float, max_points: int, seed: int) -> Projection:
    params = ProjectionParams(Method.PCA, max_points=max_points, seed=seed)
    return run_projection(Path(path), params, save=False)[0]


def pca_map(record: RunRecord, max_points: int, seed: int) -> Projection:
    """A PCA map of the run's test embeddings, cheap enough to compute here and never written to disk
    (cached until the embeddings change). ProjectionError for parameters that cannot be used."""
    return _pca(str(record.path), stamp(record) or 0.0, int(max_points), int(seed))


# ---------------------------------------------------------------- jobs


@dataclass
class Pending:
    job: Job
    fraction: float
    text: str


def pending(store: Store, run_id: str, kind: str | None = None, payload: dict | None = None) -> list[Pending]:
    """The run's queued or running jobs (of `kind`, with `payload` when given), with their progress."""
    out = []
    for job in jobs_for_run(store, run_id):
        if job.state not in PENDING or (kind and job.kind != kind):
            continue
        if payload is not None and any(job.payload.get(k) != v for k, v in payload.items()):
            continue
        p = job.progress
        fraction = p.fraction or 0.0
        if job.state == JobState.QUEUED:
            text = f"{job.kind}: waiting in the queue for the worker"
        else:
            text = f"{job.kind}: {p.stage or 'starting'}" + (f" ({p.done or 0:,}/{p.total:,})" if p.total else "")
        out.append(Pending(job, fraction, text))
    return out


def show_pending(run_id: str, kind: str, payload: dict | None = None) -> None:
    """Progress bars of a run's pending jobs of one kind, refreshed live; the page reruns when they end."""

    @st.fragment(run_every=REFRESH_SECONDS)
    def panel() -> None:
        fresh = open_store()
        try:
            now = pending(fresh, run_id, kind, payload)
            if not now:
                st.rerun()
            for p in now:
                st.progress(p.fraction, text=p.text)
        finally:
            fresh.close()

    panel()


def last_failure(store: Store, run_id: str, kind: str) -> str | None:
    """The error of the run's latest job of `kind` when that job failed."""
    jobs = [j for j in jobs_for_run(store, run_id) if j.kind == kind]
    if jobs and jobs[-1].state == JobState.FAILED:
        return jobs[-1].error or "failed"
    return None


def queue(store: Store, kind: str, run_id: str, payload: dict | None = None) -> int:
    """Submit a job unless an identical one is already waiting or running; returns its id."""
    for p in pending(store, run_id, kind, payload or {}):
        return p.job.id
    return submit_job(store, kind, run_id, payload or {})


def test_image(ds: Dataset, row: int) -> np.ndarray:
    return display_image(ds, ds.test.x[row])


def train_image(ds: Dataset, row: int) -> np.ndarray:
    return display_image(ds, ds.train.x[row])
