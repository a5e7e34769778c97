"""Retrieval speed: FAISS against the course's Python loop, and HNSW against exact search.

    python benchmarks/retrieval.py [--quick]

1. Exact cosine search over 60,000 x 128 vectors: the course's loop (cosine similarity to every
   stored vector in Python, then sort), timed on a few queries, against FAISS IndexFlatIP on
   L2-normalised vectors, one query at a time and in a batch of 1,000. Target: >= 100x faster per query.
2. 1,000,000 synthetic 128-d vectors (clustered, so neighbours mean something): HNSW against
   exact FAISS search. Target: recall@10 >= 0.95 against exact and >= 10x faster per query.

Everything is measured in this one process, on this machine; the table says which machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe  # noqa: E402
from engine.ml.retrieval import IndexKind, IndexSpec, Metric, build_index, recall_vs_exact, search  # noqa: E402


def clustered_vectors(n: int, d: int, centres: int, seed: int, intrinsic: int = 16) -> np.ndarray:
    """Gaussian clusters whose spread lies mostly in a low-dimensional subspace, like real embeddings."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)).astype(np.float32) * 3
    basis = rng.normal(size=(intrinsic, d)).astype(np.float32) / np.sqrt(intrinsic)
    out = np.empty((n, d), np.float32)
    step = 200_000
    for start in range(0, n, step):
        m = min(step, n - start)
        labels = rng.integers(0, centres, size=m)
        out[start : start + m] = (
            c[labels]
            + rng.normal(size=(m, intrinsic)).astype(np.float32) @ basis
            + 0.1 * rng.normal(size=(m, d)).astype(np.float32)
        )
    return out


def course_loop_search(database: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The course's search: cosine similarity to every stored vector, one at a time, then sort."""
    scores = []
    q_norm = np.linalg.norm(query)
    for i, v in enumerate(database):
        scores.append((i, float(np.dot(query, v) / (q_norm * np.linalg.norm(v)))))
    scores.sort(key=lambda pair: pair[1], reverse=True)
    top = scores[:k]
    return np.array([i for i, _ in top]), np.array([s for _, s in top], dtype=np.float32)


def per_query(fn, queries) -> float:
    t0 = time.perf_counter()
    for q in queries:
        fn(q)
    return (time.perf_counter() - t0) / len(queries)


def exact_vs_loop(n: int, d: int, loop_queries: int, k: int) -> list[tuple[str, float, str]]:
    db = clustered_vectors(n, d, 100, seed=0)
    queries = clustered_vectors(1000, d, 100, seed=0)  # same centres (seed), fresh points
    spec = IndexSpec()
    index = build_index(db, spec)
    loop_t = per_query(lambda q: course_loop_search(db, q, k), queries[:loop_queries])
    search(index, queries[:10], k, spec)  # warm up
    single_t = per_query(lambda q: search(index, q[None], k, spec), queries[:200])
    batch = search(index, queries, k, spec)
    batch_t = batch.seconds_per_query
    # the loop and FAISS agree on the queries the loop ran
    for row in range(loop_queries):
        ids, _ = course_loop_search(db, queries[row], k)
        assert set(ids) == set(batch.ids[row]), "FAISS and the loop disagree"
    return [
        (f"course loop (Python, {loop_queries} queries)", loop_t, "1x"),
        ("FAISS IndexFlatIP, one query at a time", single_t, f"{loop_t / single_t:,.0f}x"),
        ("FAISS IndexFlatIP, 1,000 queries in a batch", batch_t, f"{loop_t / batch_t:,.0f}x"),
    ]


def hnsw_vs_exact(n: int, d: int, n_queries: int, k: int, ef_values: list[int]):
    t0 = time.perf_counter()
    db = clustered_vectors(n, d, 1000, seed=1)
    queries = clustered_vectors(n_queries, d, 1000, seed=1)
    gen_s = time.perf_counter() - t0
    exact_spec = IndexSpec(IndexKind.FLAT, Metric.COSINE)
    t0 = time.perf_counter()
    exact = build_index(db, exact_spec)
    exact_build = time.perf_counter() - t0
    exact_res = search(exact, queries, k, exact_spec)
    t0 = time.perf_counter()
    hnsw = build_index(db, IndexSpec(IndexKind.HNSW, Metric.COSINE))
    hnsw_build = time.perf_counter() - t0
    rows = [("exact (IndexFlatIP)", "-", exact_res.seconds_per_query, 1.0, "1x")]
    for ef in ef_values:
        spec = IndexSpec(IndexKind.HNSW, Metric.COSINE, ef_search=ef)
        res = search(hnsw, queries, k, spec)
        rows.append(
            (
                "HNSW M=32",
                f"efSearch={ef}",
                res.seconds_per_query,
                recall_vs_exact(res.ids, exact_res.ids),
                f"{exact_res.seconds_per_query / res.seconds_per_query:,.0f}x",
            )
        )
    return rows, {"generate": gen_s, "exact build": exact_build, "hnsw build": hnsw_build}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    args = parser.parse_args()
    n_exact, n_big, loop_q, hnsw_q = (6_000, 50_000, 3, 200) if args.quick else (60_000, 1_000_000, 5, 1000)
    k = 10
    wall = time.perf_counter()
    print(f"machine: {describe('faiss', 'numpy')}")
    print()
    print(f"1. exact cosine search, {n_exact:,} x 128 database, top {k}")
    print("| method | seconds per query | speed-up |")
    print("| --- | ---: | ---: |")
    rows = exact_vs_loop(n_exact, 128, loop_q, k)
    for name, t, ratio in rows:
        print(f"| {name} | {t:.6f} | {ratio} |")
    batched, single = rows[0][1] / rows[2][1], rows[0][1] / rows[1][1]
    print(
        f"target >= 100x per query: {'met' if batched >= 100 else 'NOT met'} ({batched:,.0f}x per query when "
        f"queries are searched together, as the whole-test-set evaluation does; {single:,.0f}x for a lone "
        f"query, which must read the whole {n_exact * 128 * 4 / 1e6:.0f} MB database from memory by itself)"
    )
    print()
    print(f"2. approximate search, {n_big:,} x 128 clustered vectors, {hnsw_q:,} queries, top {k}")
    hrows, timing = hnsw_vs_exact(n_big, 128, hnsw_q, k, [32, 64, 128])
    print("| index | setting | seconds per query | recall@10 vs exact | speed-up |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, setting, t, recall, ratio in hrows:
        print(f"| {name} | {setting} | {t:.6f} | {recall:.4f} | {ratio} |")
    exact_t = hrows[0][2]
    ok = [r for r in hrows[1:] if r[3] >= 0.95 and exact_t / r[2] >= 10]
    print(
        f"build: exact {timing['exact build']:.1f}s, HNSW {timing['hnsw build']:.1f}s "
        f"(data generation {timing['generate']:.1f}s)"
    )
    best = max(ok, key=lambda r: exact_t / r[2]) if ok else None
    print(
        "target recall@10 >= 0.95 and >= 10x faster than exact: "
        + (f"met ({best[1]}: recall {best[3]:.4f}, {exact_t / best[2]:,.0f}x)" if best else "NOT met")
    )
    print(f"\nwall time {time.perf_counter() - wall:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
