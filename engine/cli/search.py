"""The embeddings and search commands: embed, tsne, search, retrieval-eval.

They compute in the foreground (the dashboard queues the same work for the worker). Missing
embeddings are computed first.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from engine.cli.common import Command, add_results_flag, open_run, settings_from, stage_printer
from engine.errors import UsageError
from engine.ml.embed import (
    DEFAULT_IMAGE_SIZE,
    embed_upload,
    embedding_meta,
    embeddings_dir,
    has_embeddings,
    load_embeddings,
)
from engine.ml.images import read_image_file
from engine.ml.projection import (
    DEFAULT_MAX_POINTS,
    Method,
    ProjectionParams,
    projection_paths,
    run_projection,
    validate,
)
from engine.ml.retrieval import IndexSpec, evaluate_run, search_run
from engine.runs.embedding import compute_embeddings, create_pretrained_run, embedder_for_run
from engine.runs.records import RunRecord, RunState
from engine.runs.store import Store


def ensure_embeddings(store: Store, record: RunRecord, download: bool, quiet: bool = False) -> dict:
    meta = embedding_meta(record.path) if has_embeddings(record.path) else None
    if meta is not None:
        return meta
    if not quiet:
        print(f"computing the embeddings of run {record.id} ...", file=sys.stderr, flush=True)
    return compute_embeddings(store, record.id, stage_printer("embeddings"), download=download)


def _index_spec(args: argparse.Namespace) -> IndexSpec:
    return IndexSpec.parse(args.index, args.metric)


# ---------------------------------------------------------------- commands


def cmd_embed(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.resnet18:
        if args.run:
            raise UsageError("give either a RUN or --resnet18 --dataset NAME, not both")
        store = Store(settings.results)
        # The data root is stored absolute, as `train` and `submit` store it, so a worker started elsewhere finds it.
        run_id = create_pretrained_run(
            store, args.dataset, str(settings.data_root), args.image_size, RunState.RUNNING, download=settings.download
        )
        record = store.get_run(run_id)
        if not args.json:
            print(f"run {run_id}: pretrained resnet18 features of {args.dataset}", flush=True)
    elif args.run:
        store, record = open_run(args)
    else:
        raise UsageError("give a RUN to embed, or --resnet18 --dataset NAME for ImageNet features")
    meta = compute_embeddings(store, record.id, stage_printer("embeddings"), download=settings.download)
    out = {"run": record.id, "path": str(embeddings_dir(record.path))} | meta
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{meta['train']} train and {meta['test']} test embeddings of {meta['dim']} dimensions "
            f"({meta['source']}) in {meta['seconds']:.1f}s"
        )
        print(out["path"])
    return 0


def cmd_tsne(args: argparse.Namespace) -> int:
    params = validate(ProjectionParams(Method(args.method), args.perplexity, args.max_points, args.seed))
    store, record = open_run(args)  # after the flags are checked: bad input is named before anything is read
    ensure_embeddings(store, record, settings_from(args).download, args.json)
    proj, computed = run_projection(record.path, params, stage_printer(args.method))
    coords_path, idx_path = projection_paths(record.path, params)
    out = {
        "path": str(coords_path),
        "indices": str(idx_path),
        "points": len(proj.indices),
        "cached": not computed,
    } | params.to_json()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        how = "reused from the cache" if not computed else "computed"
        print(f"{params.method.value} map of {len(proj.indices)} test images, {how}")
        print(f"coordinates: {coords_path}")
        print(f"test rows:   {idx_path}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    store, record = open_run(args)
    # A regular file within the upload limit, checked before any work; never read whole first.
    data = read_image_file(args.image) if args.image is not None else None
    download = settings_from(args).download
    meta = ensure_embeddings(store, record, download, args.json)
    spec = _index_spec(args)
    classes = meta.get("classes") or []
    if data is not None:
        vector, _ = embed_upload(embedder_for_run(record, download=download), data)
        query_label, what = None, f"image {args.image}"
    else:
        queries = load_embeddings(record.path, "test")
        if not 0 <= args.query_index < len(queries):
            raise UsageError(
                f"--query-index must be from 0 to {len(queries) - 1} (a row of the test split), got {args.query_index}"
            )
        vector = queries.vectors[args.query_index]
        query_label = int(queries.labels[args.query_index])
        what = f"test image {args.query_index} (label {_name(classes, query_label)})"
    result = search_run(record.path, np.asarray(vector)[None], args.k, spec)
    database_labels = load_embeddings(record.path, "train").labels
    rows: list[dict[str, Any]] = [
        {"index": int(i), "label": int(database_labels[i]), "score": float(s)}
        for i, s in zip(result.ids[0], result.scores[0])
    ]
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


def cmd_retrieval_eval(args: argparse.Namespace) -> int:
    store, record = open_run(args)
    meta = ensure_embeddings(store, record, settings_from(args).download, args.json)
    spec = _index_spec(args)
    ev = evaluate_run(record.path, args.k, spec, meta.get("classes"))
    out = ev.to_json()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    m = ev.metrics
    print(
        f"run {record.id}: {m.queries} test queries against {meta['train']} train images, "
        f"{spec.name} index, {1e3 * ev.seconds_per_query:.3f} ms per query"
    )
    if ev.recall_vs_exact is not None:
        print(f"recall@{m.k} of this approximate index against exact search: {ev.recall_vs_exact:.4f}")
    print(f"{'class':<14} {'queries':>7} {'P@' + str(m.k):>7} {'R@' + str(m.k):>7} {'mAP@' + str(m.k):>8} {'1-NN':>7}")
    for c in m.per_class:
        print(
            f"{c.name[:14]:<14} {c.queries:>7} {c.precision_at_k:>7.4f} {c.recall_at_k:>7.4f} "
            f"{c.map_at_k:>8.4f} {c.knn_accuracy:>7.4f}"
        )
    print(
        f"{'all':<14} {m.queries:>7} {m.precision_at_k:>7.4f} {m.recall_at_k:>7.4f} "
        f"{m.map_at_k:>8.4f} {m.knn_accuracy:>7.4f}"
    )
    return 0


def _name(classes: list[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else str(label)


# ---------------------------------------------------------------- flags


def _index_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    p.add_argument(
        "--index",
        default="flat",
        choices=["flat", "hnsw", "ivf"],
        help="flat = exact (default); hnsw, ivf = approximate",
    )
    p.add_argument("--metric", default="cosine", choices=["cosine", "l2"], help="similarity (default cosine)")


def _setup_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="a finished run id or folder (or use --resnet18)")
    p.add_argument(
        "--resnet18", action="store_true", help="a new run: ImageNet-pretrained ResNet-18 features of --dataset"
    )
    p.add_argument("--dataset", default="mnist_sample", help="with --resnet18: the dataset (default mnist_sample)")
    p.add_argument(
        "--data-root", default=None, help="with --resnet18: where datasets live (default $LENSBOARD_DATA or ./data)"
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        help=f"with --resnet18: input side in pixels, 32..224 (default {DEFAULT_IMAGE_SIZE})",
    )
    add_results_flag(p, json=True)


def _setup_tsne(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run id or folder")
    p.add_argument("--perplexity", type=float, default=30.0, help="2..100 (default 30)")
    p.add_argument(
        "--max-points",
        type=int,
        default=DEFAULT_MAX_POINTS,
        help=f"a stratified sample of at most this many test images (default {DEFAULT_MAX_POINTS})",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling and layout seed (default 0)")
    p.add_argument("--method", default="tsne", choices=["tsne", "pca"], help="tsne (default) or pca")
    add_results_flag(p, json=True)


def _setup_search(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run id or folder")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--query-index", type=int, help="a row of the test split as the query")
    query.add_argument("--image", help="an image file as the query (PNG, JPEG, ...)")
    _index_flags(p)
    add_results_flag(p, json=True)


def _setup_retrieval_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run id or folder")
    _index_flags(p)
    add_results_flag(p, json=True)


COMMANDS: dict[str, Command] = {
    "embed": (cmd_embed, _setup_embed),
    "tsne": (cmd_tsne, _setup_tsne),
    "search": (cmd_search, _setup_search),
    "retrieval-eval": (cmd_retrieval_eval, _setup_retrieval_eval),
}
