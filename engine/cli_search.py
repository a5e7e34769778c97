"""The embeddings and search commands of `python -m engine`: embed, tsne, search, retrieval-eval.

They compute in the foreground (the dashboard queues the same work for the worker). Missing
embeddings are computed first. Bad input prints one line on stderr and exits with 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Callable

from engine.store import RunRecord, Store, store_for_run

EXIT_USAGE = 2


def _user_errors() -> tuple[type[Exception], ...]:
    from engine.analysis import UploadError
    from engine.config import ConfigError
    from engine.data import DatasetError
    from engine.embed import EmbeddingError
    from engine.models import ModelError
    from engine.projection import ProjectionError
    from engine.retrieval import RetrievalError
    from engine.store import RunNotFound

    return (EmbeddingError, RetrievalError, ProjectionError, UploadError, ConfigError, DatasetError,
            ModelError, RunNotFound, FileNotFoundError)


def one_line_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A user error becomes `error: ...` on stderr and exit code 2, never a traceback."""
    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except _user_errors() as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return wrapper


def open_run(args: argparse.Namespace) -> tuple[Store, RunRecord]:
    """The store and the run named by args.run (an id, or a run folder, which names its root)."""
    store = store_for_run(args.run, args.results)
    return store, store.resolve(args.run)


def _progress_printer(label: str) -> Callable[[int, int, str], None]:
    state = {"last": -1}

    def show(done: int, total: int, stage: str = "") -> None:
        if not sys.stderr.isatty():
            return
        pct = int(100 * done / max(total, 1))
        if pct != state["last"]:
            state["last"] = pct
            sys.stderr.write(f"\r  {label}: {stage} {pct:3d}%")
            if done >= total:
                sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()
    return show


def ensure_embeddings(store: Store, record: RunRecord, quiet: bool = False) -> dict:
    from engine.embed import compute_embeddings, embedding_meta, has_embeddings

    if has_embeddings(record.path):
        return embedding_meta(record.path)
    if not quiet:
        print(f"computing the embeddings of run {record.id} ...", file=sys.stderr, flush=True)
    return compute_embeddings(store, record.id, _progress_printer("embeddings"))


def _index_spec(args: argparse.Namespace):
    from engine.retrieval import IndexSpec

    return IndexSpec.parse(args.index, args.metric)


# ---------------------------------------------------------------- commands


@one_line_errors
def cmd_embed(args: argparse.Namespace) -> int:
    from engine.embed import compute_embeddings, create_pretrained_run, embeddings_dir
    from engine.store import RunState

    if args.resnet18:
        if args.run:
            print("error: give either a RUN or --resnet18 --dataset NAME, not both", file=sys.stderr)
            return EXIT_USAGE
        store = Store(args.results)
        run_id = create_pretrained_run(store, args.dataset, args.data_root, args.image_size, RunState.RUNNING)
        record = store.get_run(run_id)
        if not args.json:
            print(f"run {run_id}: pretrained resnet18 features of {args.dataset}", flush=True)
    elif args.run:
        store, record = open_run(args)
    else:
        print("error: give a RUN to embed, or --resnet18 --dataset NAME for ImageNet features",
              file=sys.stderr)
        return EXIT_USAGE
    meta = compute_embeddings(store, record.id, _progress_printer("embeddings"))
    out = {"run": record.id, "path": str(embeddings_dir(record.path))} | meta
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{meta['train']} train and {meta['test']} test embeddings of {meta['dim']} dimensions "
              f"({meta['source']}) in {meta['seconds']:.1f}s")
        print(out["path"])
    return 0


@one_line_errors
def cmd_tsne(args: argparse.Namespace) -> int:
    from engine.projection import Method, ProjectionParams, projection_paths, run_projection, validate

    params = validate(ProjectionParams(Method(args.method), args.perplexity, args.max_points, args.seed))
    store, record = open_run(args)  # after the flags are checked: bad input is named before anything is read
    ensure_embeddings(store, record, args.json)
    proj, computed = run_projection(record.path, params, _progress_printer(args.method))
    coords_path, idx_path = projection_paths(record.path, params)
    out = {"path": str(coords_path), "indices": str(idx_path), "points": len(proj.indices),
           "cached": not computed} | params.to_json()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        how = "reused from the cache" if not computed else "computed"
        print(f"{params.method.value} map of {len(proj.indices)} test images, {how}")
        print(f"coordinates: {coords_path}")
        print(f"test rows:   {idx_path}")
    return 0


@one_line_errors
def cmd_search(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.embed import embed_upload, embedder_for_run, load_embeddings
    from engine.ml.images import read_image_file
    from engine.retrieval import search_run

    store, record = open_run(args)
    # A regular file within the upload limit, checked before any work; never read whole first.
    data = read_image_file(args.image) if args.image is not None else None
    meta = ensure_embeddings(store, record, args.json)
    spec = _index_spec(args)
    classes = meta.get("classes") or []
    if data is not None:
        vector, _ = embed_upload(embedder_for_run(record), data)
        query_label, what = None, f"image {args.image}"
    else:
        queries = load_embeddings(record.path, "test")
        if not 0 <= args.query_index < len(queries):
            print(f"error: --query-index must be from 0 to {len(queries) - 1} (a row of the test split), "
                  f"got {args.query_index}", file=sys.stderr)
            return EXIT_USAGE
        vector = queries.vectors[args.query_index]
        query_label = int(queries.labels[args.query_index])
        what = f"test image {args.query_index} (label {_name(classes, query_label)})"
    result = search_run(record.path, np.asarray(vector)[None], args.k, spec)
    database_labels = load_embeddings(record.path, "train").labels
    rows = [{"index": int(i), "label": int(database_labels[i]), "score": float(s)}
            for i, s in zip(result.ids[0], result.scores[0])]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    score = "cosine" if spec.metric.value == "cosine" else "distance"
    print(f"top {args.k} for {what}, {spec.name} index, {1000 * result.seconds:.2f} ms")
    print(f"{'rank':>4} {'train row':>9} {'label':<12} {score:>9}" + ("  hit" if query_label is not None else ""))
    for rank, row in enumerate(rows, 1):
        hit = ("  yes" if row["label"] == query_label else "  no") if query_label is not None else ""
        print(f"{rank:>4} {row['index']:>9} {_name(classes, row['label'])[:12]:<12} {row['score']:>9.4f}{hit}")
    if query_label is not None:
        hits = sum(r["label"] == query_label for r in rows)
        print(f"precision@{args.k}: {hits}/{args.k} = {hits / args.k:.2f}")
    return 0


@one_line_errors
def cmd_retrieval_eval(args: argparse.Namespace) -> int:
    from engine.retrieval import evaluate_run

    store, record = open_run(args)
    meta = ensure_embeddings(store, record, args.json)
    spec = _index_spec(args)
    ev = evaluate_run(record.path, args.k, spec, meta.get("classes"))
    out = ev.to_json()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    m = ev.metrics
    print(f"run {record.id}: {m.queries} test queries against {meta['train']} train images, "
          f"{spec.name} index, {1e3 * ev.seconds_per_query:.3f} ms per query")
    if ev.recall_vs_exact is not None:
        print(f"recall@{m.k} of this approximate index against exact search: {ev.recall_vs_exact:.4f}")
    print(f"{'class':<14} {'queries':>7} {'P@' + str(m.k):>7} {'R@' + str(m.k):>7} {'mAP@' + str(m.k):>8} {'1-NN':>7}")
    for c in m.per_class:
        print(f"{c.name[:14]:<14} {c.queries:>7} {c.precision_at_k:>7.4f} {c.recall_at_k:>7.4f} "
              f"{c.map_at_k:>8.4f} {c.knn_accuracy:>7.4f}")
    print(f"{'all':<14} {m.queries:>7} {m.precision_at_k:>7.4f} {m.recall_at_k:>7.4f} "
          f"{m.map_at_k:>8.4f} {m.knn_accuracy:>7.4f}")
    return 0


def _name(classes: list[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else str(label)


# ---------------------------------------------------------------- flags


def _results(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=None, help="results root (default $LENSBOARD_RESULTS or ./results)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _index_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--index", default="flat", choices=["flat", "hnsw", "ivf"],
                   help="flat = exact (default); hnsw, ivf = approximate")
    p.add_argument("--metric", default="cosine", choices=["cosine", "l2"], help="similarity (default cosine)")


def _setup_embed(p: argparse.ArgumentParser) -> None:
    from engine.embed import DEFAULT_IMAGE_SIZE

    p.add_argument("run", nargs="?", help="a finished run id or folder (or use --resnet18)")
    p.add_argument("--resnet18", action="store_true",
                   help="a new run: ImageNet-pretrained ResNet-18 features of --dataset")
    p.add_argument("--dataset", default="mnist_sample", help="with --resnet18: the dataset (default mnist_sample)")
    p.add_argument("--data-root", default="data", help="with --resnet18: where datasets live (default data)")
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE,
                   help=f"with --resnet18: input side in pixels, 32..224 (default {DEFAULT_IMAGE_SIZE})")
    _results(p)


def _setup_tsne(p: argparse.ArgumentParser) -> None:
    from engine.projection import DEFAULT_MAX_POINTS

    p.add_argument("run", help="a run id or folder")
    p.add_argument("--perplexity", type=float, default=30.0, help="2..100 (default 30)")
    p.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS,
                   help=f"a stratified sample of at most this many test images (default {DEFAULT_MAX_POINTS})")
    p.add_argument("--seed", type=int, default=0, help="sampling and layout seed (default 0)")
    p.add_argument("--method", default="tsne", choices=["tsne", "pca"], help="tsne (default) or pca")
    _results(p)


def _setup_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run id or folder")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--query-index", type=int, help="a row of the test split as the query")
    query.add_argument("--image", help="an image file as the query (PNG, JPEG, ...)")
    _index_flags(p)
    _results(p)


def _setup_retrieval_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run id or folder")
    _index_flags(p)
    _results(p)


# name -> (run, one-line help, flag setup), merged into engine.__main__.COMMANDS
SEARCH_COMMANDS = {
    "embed": (cmd_embed, "compute a run's embeddings (train = database, test = queries)", _setup_embed),
    "tsne": (cmd_tsne, "a t-SNE (or PCA) map of a run's test embeddings, cached", _setup_tsne),
    "search": (cmd_search, "the top-K most similar train images for a query", _setup_search),
    "retrieval-eval": (cmd_retrieval_eval, "precision@K, recall@K, mAP@K and 1-NN accuracy over the test set",
                       _setup_retrieval_eval),
}
