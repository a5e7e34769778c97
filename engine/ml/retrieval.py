"""Image similarity search with FAISS, and how good it is.

The database is a run's train-split embeddings, the queries its test-split embeddings, so a
query never retrieves itself. Cosine similarity (inner product of L2-normalised vectors) is the
default metric, Euclidean distance the option. `flat` indexes are exact; `hnsw` (a graph) and
`ivf` (inverted lists over k-means cells) are approximate and faster on large databases, and
whenever one is used its recall against exact search is measured and reported.

Indexes are saved atomically under the run as index/<kind>-<metric>.faiss and reused.

Retrieval metrics over a set of queries, for a cut-off K (a hit is a result with the query's label):
- precision@K: mean fraction of hits among the top K;
- recall@K:    fraction of queries with at least one hit in the top K;
- mAP@K:       mean of AP@K = sum_i P@i * hit_i / min(K, R), R = images of the query's class in
               the database (the best possible number of hits);
- 1-NN accuracy: fraction of queries whose top result has their label.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from engine.errors import RetrievalError
from engine.files import atomic_write_bytes
from engine.ml.embed import Embeddings, load_embeddings

INDEX_DIR = "index"
MAX_K = 1000
HNSW_M = 32  # graph neighbours per node
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128  # candidates kept while searching; higher = better recall, slower
IVF_NPROBE = 16  # cells visited per query


class Metric(str, Enum):
    COSINE = "cosine"  # similarity in [-1, 1], higher is closer
    L2 = "l2"  # Euclidean distance, lower is closer


class IndexKind(str, Enum):
    FLAT = "flat"  # exact, brute force
    HNSW = "hnsw"  # approximate: hierarchical navigable small-world graph
    IVF = "ivf"  # approximate: inverted file over k-means cells

    @property
    def approximate(self) -> bool:
        return self is not IndexKind.FLAT


@dataclass(frozen=True)
class IndexSpec:
    kind: IndexKind = IndexKind.FLAT
    metric: Metric = Metric.COSINE
    ef_search: int = HNSW_EF_SEARCH  # hnsw only
    nprobe: int = IVF_NPROBE  # ivf only

    @classmethod
    def parse(cls, kind: str = "flat", metric: str = "cosine", **params: int) -> IndexSpec:
        try:
            k = IndexKind(kind)
        except ValueError:
            raise RetrievalError(
                f"unknown index kind {kind!r}; valid: {', '.join(i.value for i in IndexKind)}"
            ) from None
        try:
            m = Metric(metric)
        except ValueError:
            raise RetrievalError(f"unknown metric {metric!r}; valid: {', '.join(i.value for i in Metric)}") from None
        return cls(k, m, **params)

    @property
    def name(self) -> str:
        return f"{self.kind.value}-{self.metric.value}"

    @property
    def exact(self) -> IndexSpec:
        return IndexSpec(IndexKind.FLAT, self.metric)


@dataclass
class SearchResult:
    ids: np.ndarray  # (Q, K) int64 rows of the database, best first
    scores: np.ndarray  # (Q, K) float32: cosine similarity, or Euclidean distance for l2
    seconds: float  # wall time of the whole search

    @property
    def seconds_per_query(self) -> float:
        return self.seconds / max(1, len(self.ids))


# ---------------------------------------------------------------- indexes


def prepare_vectors(x: np.ndarray, metric: Metric) -> np.ndarray:
    """float32, C-contiguous, and L2-normalised for cosine (a zero vector stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise RetrievalError(f"vectors must be a 2-D array (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise RetrievalError("vectors contain NaN or infinite values")
    x = np.ascontiguousarray(x)
    if metric is Metric.COSINE:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, 1e-12)
    return x


def ivf_cells(n: int) -> int:
    """Cells for an IVF index over n vectors: about 4 sqrt(n), with >= 39 training points each."""
    return int(max(1, min(round(4 * np.sqrt(n)), n // 39)))


def build_index(vectors: np.ndarray, spec: IndexSpec) -> faiss.Index:
    x = prepare_vectors(vectors, spec.metric)
    n, d = x.shape
    if n == 0:
        raise RetrievalError("the database is empty")
    faiss_metric = faiss.METRIC_INNER_PRODUCT if spec.metric is Metric.COSINE else faiss.METRIC_L2
    index: faiss.Index
    if spec.kind is IndexKind.FLAT:
        index = faiss.IndexFlatIP(d) if spec.metric is Metric.COSINE else faiss.IndexFlatL2(d)
    elif spec.kind is IndexKind.HNSW:
        hnsw = faiss.IndexHNSWFlat(d, HNSW_M, faiss_metric)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index = hnsw
    else:
        quantizer = faiss.IndexFlatIP(d) if spec.metric is Metric.COSINE else faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, ivf_cells(n), faiss_metric)
        index.train(x)
    index.add(x)
    return index


def _apply_search_params(index: Any, spec: IndexSpec) -> None:  # an HNSW or IVF index: their own fields
    if spec.kind is IndexKind.HNSW:
        index.hnsw.efSearch = max(spec.ef_search, 1)
    elif spec.kind is IndexKind.IVF:
        index.nprobe = max(1, min(spec.nprobe, index.nlist))


def check_k(k: int, database_size: int) -> int:
    upper = min(MAX_K, database_size)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= upper:
        raise RetrievalError(
            f"k must be an integer from 1 to {upper} (the database holds {database_size} images), got {k!r}"
        )
    return int(k)


def search(index: faiss.Index, queries: np.ndarray, k: int, spec: IndexSpec) -> SearchResult:
    """The top-k database rows for each query, best first."""
    k = check_k(k, index.ntotal)
    q = prepare_vectors(queries, spec.metric)
    if q.shape[1] != index.d:
        raise RetrievalError(f"query vectors have {q.shape[1]} dimensions, the index {index.d}")
    _apply_search_params(index, spec)
    t0 = time.perf_counter()
    scores, ids = index.search(q, k)
    seconds = time.perf_counter() - t0
    if spec.metric is Metric.L2:
        scores = np.sqrt(np.maximum(scores, 0))  # FAISS returns squared distances
    return SearchResult(ids.astype(np.int64), scores.astype(np.float32), seconds)


def index_path(run_dir: Path, spec: IndexSpec) -> Path:
    return Path(run_dir) / INDEX_DIR / f"{spec.name}.faiss"


def save_index(index: faiss.Index, path: Path) -> None:
    atomic_write_bytes(path, faiss.serialize_index(index).tobytes())


def load_index(path: Path) -> faiss.Index:
    return faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))


def saved_index(run_dir: Path, spec: IndexSpec, database: Embeddings) -> faiss.Index | None:
    """The run's saved index for `spec` when it exists and matches the database, else None."""
    path = index_path(run_dir, spec)
    if not path.exists():
        return None
    try:
        index = load_index(path)
    except RuntimeError:
        return None  # unreadable: to be built again
    return index if index.ntotal == len(database) and index.d == database.dim else None


def run_index(run_dir: Path, spec: IndexSpec, database: Embeddings | None = None) -> tuple[faiss.Index, bool]:
    """The run's index for `spec`: loaded from disk when it matches the embeddings, else built
    and saved. Returns (index, built_now)."""
    database = database if database is not None else load_embeddings(run_dir, "train")
    index = saved_index(run_dir, spec, database)
    if index is not None:
        return index, False
    index = build_index(database.vectors, spec)
    save_index(index, index_path(run_dir, spec))
    return index, True


# ---------------------------------------------------------------- metrics


@dataclass
class ClassMetrics:
    label: int
    name: str
    queries: int
    precision_at_k: float
    recall_at_k: float
    map_at_k: float
    knn_accuracy: float


@dataclass
class RetrievalMetrics:
    k: int
    queries: int
    precision_at_k: float
    recall_at_k: float
    map_at_k: float
    knn_accuracy: float
    per_class: list[ClassMetrics] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def hits(ids: np.ndarray, database_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """(Q, K) bool: does result j of query i have the query's label?"""
    return database_labels[ids] == np.asarray(query_labels)[:, None]


def average_precision(rel: np.ndarray, relevant_in_db: np.ndarray) -> np.ndarray:
    """AP@K per query from its (Q, K) hit matrix and the number of its class in the database."""
    k = rel.shape[1]
    precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    denom = np.minimum(k, relevant_in_db)
    total = (precision_at_i * rel).sum(axis=1)
    return np.divide(total, denom, out=np.zeros(len(rel)), where=denom > 0)


def retrieval_metrics(
    ids: np.ndarray, database_labels: np.ndarray, query_labels: np.ndarray, classes: list[str] | None = None
) -> RetrievalMetrics:
    """Metrics of a search result (ids: (Q, K) database rows, best first), overall and per class."""
    ids = np.asarray(ids)
    query_labels = np.asarray(query_labels)
    if ids.ndim != 2 or len(ids) != len(query_labels) or len(ids) == 0:
        raise RetrievalError(
            f"ids must be (queries, K) with one row per query label; got {ids.shape} for {len(query_labels)} labels"
        )
    k = ids.shape[1]
    rel = hits(ids, database_labels, query_labels)
    counts = np.bincount(database_labels, minlength=int(max(database_labels.max(), query_labels.max())) + 1)
    per_query = {
        "precision_at_k": rel.mean(axis=1),
        "recall_at_k": rel.any(axis=1).astype(float),
        "map_at_k": average_precision(rel, counts[query_labels]),
        "knn_accuracy": rel[:, 0].astype(float),
    }

    def summary(mask: np.ndarray) -> dict:
        return {name: float(values[mask].mean()) for name, values in per_query.items()}

    per_class = []
    for label in np.unique(query_labels):
        mask = query_labels == label
        name = classes[label] if classes is not None and label < len(classes) else str(label)
        per_class.append(ClassMetrics(int(label), name, int(mask.sum()), **summary(mask)))
    return RetrievalMetrics(k, len(ids), **summary(np.ones(len(ids), bool)), per_class=per_class)


def query_precision(ids: np.ndarray, database_labels: np.ndarray, label: int) -> float:
    """precision@K of one query's result row."""
    return float((database_labels[np.asarray(ids)] == label).mean())


def recall_vs_exact(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean fraction of the exact top-K that the approximate search also returned."""
    if approx_ids.shape != exact_ids.shape:
        raise RetrievalError(f"result shapes differ: {approx_ids.shape} vs {exact_ids.shape}")
    k = exact_ids.shape[1]
    found = [len(np.intersect1d(a, e)) for a, e in zip(approx_ids, exact_ids)]
    return float(np.sum(found) / (k * len(exact_ids)))


# ---------------------------------------------------------------- a run, end to end


@dataclass
class Evaluation:
    metrics: RetrievalMetrics
    spec: IndexSpec
    seconds_per_query: float
    recall_vs_exact: float | None  # only for approximate indexes

    def to_json(self) -> dict:
        out = self.metrics.to_json()
        out.update(
            index=self.spec.kind.value,
            metric=self.spec.metric.value,
            seconds_per_query=self.seconds_per_query,
            recall_vs_exact=self.recall_vs_exact,
        )
        return out


def search_run(run_dir: Path, queries: np.ndarray, k: int, spec: IndexSpec = IndexSpec()) -> SearchResult:
    index, _ = run_index(run_dir, spec)
    return search(index, queries, k, spec)


def evaluate_index(
    index: faiss.Index,
    spec: IndexSpec,
    database: Embeddings,
    queries: Embeddings,
    k: int,
    classes: list[str] | None = None,
    exact_index: faiss.Index | None = None,
) -> Evaluation:
    """Every query against the database through `index`; for an approximate index, also its
    recall against exact search (through `exact_index`, built in memory when not given)."""
    result = search(index, queries.vectors, k, spec)
    recall = None
    if spec.kind.approximate:
        exact_index = exact_index if exact_index is not None else build_index(database.vectors, spec.exact)
        recall = recall_vs_exact(result.ids, search(exact_index, queries.vectors, k, spec.exact).ids)
    metrics = retrieval_metrics(result.ids, database.labels, queries.labels, classes)
    return Evaluation(metrics, spec, result.seconds_per_query, recall)


def evaluate_run(
    run_dir: Path, k: int = 10, spec: IndexSpec = IndexSpec(), classes: list[str] | None = None
) -> Evaluation:
    """Every test image as a query against the train split (indexes built are saved and reused)."""
    database = load_embeddings(run_dir, "train")
    queries = load_embeddings(run_dir, "test")
    index, _ = run_index(run_dir, spec, database)
    exact = run_index(run_dir, spec.exact, database)[0] if spec.kind.approximate else None
    return evaluate_index(index, spec, database, queries, k, classes, exact)
