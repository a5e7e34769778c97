"""2-D maps of an embedding space: PCA (instant) and t-SNE (openTSNE), cached on disk.

t-SNE follows the usual recipe: a stratified sample of at most `max_points` images (every class
keeps its share), PCA to 50 dimensions first, PCA initialisation (so the global layout is stable
and runs are reproducible), then openTSNE's optimiser with the given perplexity: Barnes-Hut on one
thread for small maps, the FFT gradient on two threads for large ones, 250 + 250 iterations.

A map is saved as projections/<key>.npy (N x 2 float32) with projections/<key>_indices.npy (the
rows of the split they stand for); the key spells out every parameter, so a cached map is reused
only for exactly the same request. Recomputing the embeddings removes the folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from engine.errors import Cancelled, ProjectionError
from engine.files import atomic_numpy_save
from engine.ml.embed import SPLITS, load_embeddings

PROJECTION_DIR = "projections"
DEFAULT_MAX_POINTS = 5000
MAX_POINTS_LIMIT = 100_000
PCA_DIMS = 50  # t-SNE runs on the first 50 principal components
MIN_PERPLEXITY, MAX_PERPLEXITY = 2.0, 100.0
TSNE_JOBS = 2  # threads for openTSNE on maps of SMALL_MAP points or more
SMALL_MAP = 2000  # below this, one thread: per-iteration thread sync costs more than it saves,
# and on a busy 2-core machine it made a 200-point map 15x slower
# Early exaggeration, then the main phase. openTSNE's default main phase is 500 iterations; 250
# keep neighbourhoods as well (benchmarks/projection.py: trustworthiness within 0.002 of
# scikit-learn's 1,000-iteration default on 10,000 points) at half the cost.
TSNE_ITERATIONS = (250, 250)
FFT_INTS_IN_INTERVAL = 2  # large maps: a coarser FFT interpolation grid, ~2x faster, same neighbourhoods
CALLBACK_EVERY = 25

ProgressFn = Callable[[int, int, str], None]
StopFn = Callable[[], bool]


class Method(str, Enum):
    PCA = "pca"
    TSNE = "tsne"


@dataclass(frozen=True)
class ProjectionParams:
    method: Method = Method.TSNE
    perplexity: float = 30.0  # t-SNE only: roughly the number of neighbours each point keeps close
    max_points: int = DEFAULT_MAX_POINTS  # a stratified sample of at most this many images
    seed: int = 0
    split: str = "test"

    @property
    def key(self) -> str:
        tsne = f"-p{self.perplexity:g}" if self.method is Method.TSNE else ""
        return f"{self.split}-{self.method.value}{tsne}-n{self.max_points}-s{self.seed}"

    def to_json(self) -> dict:
        return {
            "method": self.method.value,
            "perplexity": self.perplexity,
            "max_points": self.max_points,
            "seed": self.seed,
            "split": self.split,
        }

    @classmethod
    def from_json(cls, d: dict) -> ProjectionParams:
        known = {"method", "perplexity", "max_points", "seed", "split"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ProjectionError(
                f"unknown projection parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        values = dict(d)
        if "method" in values:
            try:
                values["method"] = Method(values["method"])
            except ValueError:
                raise ProjectionError(f"unknown method {values['method']!r}; valid: pca, tsne") from None
        return validate(cls(**values))


@dataclass
class Projection:
    coords: np.ndarray  # (n, 2) float32
    indices: np.ndarray  # (n,) int64 rows of the split, sorted
    params: ProjectionParams


def validate(params: ProjectionParams, n: int | None = None) -> ProjectionParams:
    """Check the parameters; with n (the number of points to map) also the perplexity against it."""
    if not isinstance(params.method, Method):
        raise ProjectionError(f"unknown method {params.method!r}; valid: pca, tsne")
    if params.split not in SPLITS:
        raise ProjectionError(f"unknown split {params.split!r}; valid: {', '.join(SPLITS)}")
    if (
        not isinstance(params.max_points, int)
        or isinstance(params.max_points, bool)
        or not 10 <= params.max_points <= MAX_POINTS_LIMIT
    ):
        raise ProjectionError(f"max_points must be an integer from 10 to {MAX_POINTS_LIMIT}, got {params.max_points!r}")
    if not isinstance(params.seed, int) or isinstance(params.seed, bool) or not 0 <= params.seed <= 2**32 - 1:
        raise ProjectionError(f"seed must be an integer from 0 to {2**32 - 1}, got {params.seed!r}")
    if params.method is Method.TSNE:
        p = params.perplexity
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not MIN_PERPLEXITY <= p <= MAX_PERPLEXITY:
            raise ProjectionError(
                f"perplexity must be a number from {MIN_PERPLEXITY:g} to {MAX_PERPLEXITY:g}, got {p!r}"
            )
        if n is not None and 3 * p >= n - 1:
            raise ProjectionError(
                f"perplexity {p:g} is too large for {n} points: it must be below (points - 1) / 3 = {(n - 1) / 3:g}"
            )
    return params


def stratified_sample(labels: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of at most max_points items, each class keeping its share (at least one)."""
    labels = np.asarray(labels)
    n = len(labels)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.maximum(1, np.floor(counts * max_points / n)).astype(int)
    # hand the rounding remainder to the classes that lost the most to the floor
    short = max_points - quota.sum()
    if short > 0:
        order = np.argsort(-(counts * max_points / n - quota))
        quota[order[:short]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=min(q, cnt), replace=False)
        for c, q, cnt in zip(classes, quota, counts)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)[:max_points]


def pca_2d(x: np.ndarray, dims: int = 2, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = min(dims, x.shape[1], len(x))
    return PCA(n_components=dims, random_state=seed).fit_transform(x).astype(np.float32)


def tsne_2d(
    x: np.ndarray,
    perplexity: float = 30.0,
    seed: int = 0,
    n_jobs: int | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> np.ndarray:
    """openTSNE on the first 50 principal components, PCA-initialised; raises Cancelled on request.
    n_jobs=None: TSNE_JOBS threads, or one for maps under SMALL_MAP points."""
    from openTSNE import TSNE

    if n_jobs is None:
        n_jobs = 1 if len(x) < SMALL_MAP else TSNE_JOBS
    validate(ProjectionParams(Method.TSNE, perplexity=perplexity), len(x))
    reduced = pca_2d(x, PCA_DIMS, seed) if x.shape[1] > PCA_DIMS else np.asarray(x, np.float32)
    total = sum(TSNE_ITERATIONS)
    state = {"done": 0, "stopped": False}

    def callback(iteration: int, error: float, embedding: np.ndarray) -> bool:
        state["done"] += CALLBACK_EVERY
        if progress:
            progress(min(state["done"], total), total, "t-SNE optimisation")
        if should_stop and should_stop():
            state["stopped"] = True
            return True
        return False

    # Barnes-Hut for small maps, the FFT-accelerated gradient (linear in the points) for large ones
    gradient = (
        {"negative_gradient_method": "bh"}
        if len(x) < SMALL_MAP
        else {"negative_gradient_method": "fft", "ints_in_interval": FFT_INTS_IN_INTERVAL}
    )
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        initialization="pca",
        n_jobs=n_jobs,
        random_state=seed,
        early_exaggeration_iter=TSNE_ITERATIONS[0],
        n_iter=TSNE_ITERATIONS[1],
        callbacks=callback,
        callbacks_every_iters=CALLBACK_EVERY,
        verbose=False,
        **gradient,
    )
    embedding = tsne.fit(reduced.astype(np.float64))
    if state["stopped"]:
        raise Cancelled("t-SNE stopped on request")
    return np.asarray(embedding, dtype=np.float32)


def compute_projection(
    vectors: np.ndarray,
    labels: np.ndarray,
    params: ProjectionParams,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> Projection:
    validate(params)
    indices = stratified_sample(labels, params.max_points, params.seed)
    x = vectors[indices]
    if params.method is Method.PCA:
        if len(x) < 2:
            raise ProjectionError("PCA needs at least 2 points")
        coords = pca_2d(x, 2, params.seed)
        if coords.shape[1] < 2:  # 1-D embeddings: put them on a line
            coords = np.column_stack([coords[:, 0], np.zeros(len(coords), np.float32)])
    else:
        validate(params, len(x))
        coords = tsne_2d(x, params.perplexity, params.seed, progress=progress, should_stop=should_stop)
    return Projection(coords, indices, params)


def projection_paths(run_dir: Path, params: ProjectionParams) -> tuple[Path, Path]:
    folder = Path(run_dir) / PROJECTION_DIR
    return folder / f"{params.key}.npy", folder / f"{params.key}_indices.npy"


def cached_projection(run_dir: Path, params: ProjectionParams) -> Projection | None:
    """The map saved for exactly these parameters, or None."""
    coords_path, idx_path = projection_paths(run_dir, params)
    try:
        indices = np.load(idx_path)
        coords = np.load(coords_path)
    except (FileNotFoundError, ValueError, EOFError):
        return None
    if coords.shape != (len(indices), 2):
        return None
    return Projection(coords, indices, params)


def run_projection(
    run_dir: Path,
    params: ProjectionParams,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    save: bool = True,
) -> tuple[Projection, bool]:
    """The run's map for `params`: from the cache, or computed (and saved unless save=False).
    Returns (projection, computed_now)."""
    validate(params)
    hit = cached_projection(run_dir, params)
    if hit is not None:
        return hit, False
    emb = load_embeddings(run_dir, params.split)
    proj = compute_projection(emb.vectors, emb.labels, params, progress, should_stop)
    if save:
        coords_path, idx_path = projection_paths(run_dir, params)
        atomic_numpy_save(idx_path, proj.indices)  # indices first: coords mark the pair complete
        atomic_numpy_save(coords_path, proj.coords)
    return proj, True
