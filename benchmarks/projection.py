"""t-SNE speed and quality: Lensboard's openTSNE recipe against scikit-learn's TSNE defaults.

    python benchmarks/projection.py [--points N]

Both get the same 10,000 clustered 128-d vectors. Lensboard: PCA to 50 dimensions, PCA
initialisation, openTSNE with n_jobs=2, the FFT gradient and 250 + 250 iterations
(engine.ml.projection.tsne_2d, exactly what the worker runs). Reference: sklearn.manifold.TSNE()
with its defaults. Quality: trustworthiness (10 neighbours) of each map against the input.
Targets: >= 2.5x faster, trustworthiness no more than 0.01 lower. Measured in this one process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe  # noqa: E402
from engine.ml.projection import tsne_2d  # noqa: E402


def clustered(n: int, d: int = 128, centres: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Like a trained embedding: class clusters of different spread, curved in a low-dimensional subspace."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)) * 6
    labels = rng.integers(0, centres, size=n)
    basis = rng.normal(size=(centres, 12, d)) / np.sqrt(12)
    latent = rng.normal(size=(n, 12))
    x = (
        c[labels]
        + np.einsum("nk,nkd->nd", latent, basis[labels]) * rng.uniform(0.8, 2.0, size=(centres,))[labels, None]
    )
    x += 0.3 * rng.normal(size=(n, d))
    return x.astype(np.float32), labels


def main() -> int:
    from sklearn.manifold import TSNE, trustworthiness

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000)
    args = parser.parse_args()
    wall = time.perf_counter()
    x, _ = clustered(args.points)
    print(f"machine: {describe('openTSNE', 'sklearn')}")
    print(f"\nt-SNE of {args.points:,} clustered 128-d vectors to 2-D")

    t0 = time.perf_counter()
    ours = tsne_2d(x, perplexity=30.0, seed=0, n_jobs=2)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = TSNE(random_state=0).fit_transform(x)
    ref_s = time.perf_counter() - t0
    ours_t = trustworthiness(x, ours, n_neighbors=10)
    ref_t = trustworthiness(x, ref, n_neighbors=10)

    print("| method | seconds | speed-up | trustworthiness (10 neighbours) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| scikit-learn TSNE() defaults | {ref_s:.1f} | 1x | {ref_t:.4f} |")
    print(f"| Lensboard: PCA 50 + openTSNE, PCA init, n_jobs=2 | {ours_s:.1f} | {ref_s / ours_s:.1f}x | {ours_t:.4f} |")
    fast, kept = ref_s / ours_s >= 2.5, ours_t >= ref_t - 0.01
    print(
        f"target >= 2.5x faster: {'met' if fast else 'NOT met'}; trustworthiness no more than 0.01 lower: "
        f"{'met' if kept else 'NOT met'} ({ours_t - ref_t:+.4f})"
    )
    print(f"\nwall time {time.perf_counter() - wall:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
