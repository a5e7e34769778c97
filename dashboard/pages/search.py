"""Search: pick a query image and see the K most similar training images, by embedding."""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard import embedding_state as es
from dashboard import loaders
from dashboard.embedding_figures import (
    HIT,
    MISS,
    NEUTRAL,
    QUERY,
    hit_caption,
    metric_cards,
    per_class_frame,
    results_table,
    scale_for,
    tile,
)
from dashboard.state import first_run_message, open_store, refuse_when_read_only, writable
from engine.errors import RetrievalError, UploadError
from engine.ml.embed import embed_upload, embedding_meta
from engine.ml.images import MAX_IMAGE_BYTES
from engine.ml.retrieval import IndexSpec, query_precision, search

QUERY_SOURCES = {"index": "test image number", "class": "by class", "random": "random", "upload": "upload"}
INDEX_NAMES = {"flat": "exact (flat)", "hnsw": "HNSW (approximate)", "ivf": "IVF (approximate)"}
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"]
MAX_UPLOAD_MB = MAX_IMAGE_BYTES // (1024 * 1024)  # the engine's limit, also the server's (config.toml)
PER_ROW = 5

st.title("Search")
st.caption(
    "A mini visual search engine. The query image becomes an embedding; the search finds the training images "
    "whose embeddings point in the most similar direction (**cosine similarity**: 1 = same direction). A result "
    "is a **hit** (green) when it has the query's class and a **miss** (red) when not. The test images are the "
    "queries and the training images the database, so a query never finds itself."
)

store = open_store()
runs = es.embeddable_runs(store)
if not runs:
    first_run_message("search")
    st.stop()
by_id = {r.id: r for r in runs}

c1, c2, c3, c4 = st.columns([3, 1.4, 1.4, 1.2])
run_id = c1.selectbox(
    "Run",
    list(by_id),
    format_func=lambda i: f"{es.run_name(by_id[i])} · {by_id[i].dataset}",
    key="search_run",
    help="Whose embeddings to search with: a trained run or a pretrained ResNet-18 (add one on the Embeddings page).",
)
record = by_id[run_id]
k = c2.slider("K (results)", 1, 50, 10, key="search_k")
kind = c3.selectbox(
    "Index",
    list(INDEX_NAMES),
    format_func=INDEX_NAMES.get,
    key="search_index",
    help="Exact search compares the query with every training image. HNSW (a graph) and IVF "
    "(clusters) look at a fraction of them: much faster on millions of images, but may "
    "miss a few true neighbours; their recall against exact search is shown below.",
)
metric = c4.selectbox(
    "Similarity",
    ["cosine", "l2"],
    format_func={"cosine": "cosine", "l2": "Euclidean"}.get,
    key="search_metric",
    help="Cosine compares directions; Euclidean compares positions (lower distance = more similar).",
)
spec = IndexSpec.parse(kind, metric)

test = es.embeddings(record, "test")
if test is None:
    pend = es.pending(store, record.id, "embed")
    failure = es.last_failure(store, record.id, "embed")
    problem = es.damage(record)
    if problem:
        st.error(f"The saved embeddings of this run cannot be used: {problem}.", icon=":material/report:")
    elif failure and not pend:
        st.error(f"Computing the embeddings failed: {failure}")
    if pend:
        es.show_pending(record.id, "embed")
    else:
        if not problem:
            st.info(
                "This run has no embeddings yet. The background worker computes them in a few seconds to a minute.",
                icon=":material/info:",
            )
        if not writable(store):
            st.caption(":material/lock: Read-only: embeddings cannot be computed here.")
        elif st.button(
            "Compute the embeddings again" if problem else "Compute embeddings",
            type="primary",
            icon=":material/play_arrow:",
            key="search_embed",
        ) and not refuse_when_read_only(store):
            es.queue(store, "embed", record.id)
            st.rerun()
    st.stop()

meta = embedding_meta(record.path)
classes = meta.get("classes") or [str(c) for c in range(int(test.labels.max()) + 1)]
database = es.embeddings(record, "train")
ds = es.dataset(record)

index = es.index_for(record, spec)
if index is None:  # an approximate index that is not built yet
    payload = {"kind": spec.kind.value, "metric": spec.metric.value}
    pend = es.pending(store, record.id, "index", payload)
    if pend:
        es.show_pending(record.id, "index", payload)
    else:
        failure = es.last_failure(store, record.id, "index")
        if failure:
            st.error(f"Building the index failed: {failure}")
        c1, c2 = st.columns([1, 3])
        if (
            writable(store)
            and c1.button(f"Build the {INDEX_NAMES[kind]} index", key="search_build", icon=":material/build:")
            and not refuse_when_read_only(store)
        ):
            es.queue(store, "index", record.id, payload)
            st.rerun()
        c2.caption(
            "Approximate indexes are built once by the background worker and saved with the run."
            + ("" if writable(store) else " This dashboard is read-only, so none can be built here.")
        )
    st.info("Meanwhile the results below come from exact search.", icon=":material/info:")
    spec = IndexSpec.parse("flat", metric)
    index = es.index_for(record, spec)

# ---------------------------------------------------------------- the query

sources = [s for s in QUERY_SOURCES if s != "upload" or writable(store)]  # no uploads in read-only mode
source = st.radio("Query", sources, format_func=QUERY_SOURCES.get, horizontal=True, key="search_source")
n_test = len(test)
query_row, vector, query_label, query_img, query_note = None, None, None, None, ""
if source == "index":
    query_row = int(
        st.columns([1, 3])[0].number_input(f"Test image number (0 to {n_test - 1})", 0, n_test - 1, 0, key="search_row")
    )
elif source == "class":
    c1, c2 = st.columns([2, 1])
    present = sorted(set(int(v) for v in test.labels))
    label = c1.selectbox("Class", present, format_func=lambda c: classes[c], key="search_class")
    rows = np.flatnonzero(test.labels == label)
    nth = int(c2.number_input(f"Example (1 to {len(rows)})", 1, len(rows), 1, key=f"search_nth_{label}"))
    query_row = int(rows[nth - 1])
elif source == "random":
    if "search_random" not in st.session_state or st.session_state["search_random"] >= n_test:
        st.session_state["search_random"] = int(np.random.default_rng().integers(n_test))
    if st.button("Another random image", icon=":material/casino:", key="search_again"):
        st.session_state["search_random"] = int(np.random.default_rng().integers(n_test))
    query_row = st.session_state["search_random"]
else:
    upload = st.file_uploader(
        f"An image file (PNG, JPEG, GIF, BMP, WEBP or TIFF, up to {MAX_UPLOAD_MB} MB)",
        type=UPLOAD_TYPES,
        max_upload_size=MAX_UPLOAD_MB,
        key="search_upload",
        help="It is converted like the dataset's images (channels, size, normalisation), "
        "embedded by this run's model, and searched for.",
    )
    if upload is None:
        st.info("Upload an image to search with it.", icon=":material/upload:")
        st.stop()
    try:
        vector, prepared = embed_upload(loaders.embedder(record), upload.getvalue())
    except UploadError as exc:
        st.error(f"This file cannot be used: {exc}")
        st.stop()
    query_img, query_note = prepared.display, prepared.note

if query_row is not None:
    vector = test.vectors[query_row]
    query_label = int(test.labels[query_row])
    query_img = es.test_image(ds, query_row)

try:
    result = search(index, np.asarray(vector)[None], k, spec)
except RetrievalError as exc:
    st.error(str(exc))
    st.stop()
hits = results_table(result.ids[0], result.scores[0], database.labels, classes, query_label)

# ---------------------------------------------------------------- results

scale = scale_for(ds.shape[-1], 84)
left, right = st.columns([1, 4])
with left:
    st.markdown("**Query**")
    caption = f"test image {query_row} · class {classes[query_label]}" if query_row is not None else "your upload"
    st.image(tile(query_img, QUERY, scale_for(ds.shape[-1], 120)), caption=caption)
    if query_note:
        st.caption(query_note)
    if query_label is not None:
        p = query_precision(result.ids[0], database.labels, query_label)
        st.metric(
            f"precision@{k} for this query",
            f"{p:.2f}",
            help=f"{sum(h.hit for h in hits)} of the {k} results have the query's class.",
        )
    st.metric(
        "search time",
        f"{1000 * result.seconds:.2f} ms",
        help=f"Searching {index.ntotal:,} training images with the {INDEX_NAMES[spec.kind.value]} index.",
    )
with right:
    st.markdown(f"**Top {k} of {index.ntotal:,} training images**")
    for start in range(0, len(hits), PER_ROW):
        cols = st.columns(PER_ROW)
        for col, h in zip(cols, hits[start : start + PER_ROW]):
            border = NEUTRAL if h.hit is None else (HIT if h.hit else MISS)
            col.image(tile(es.train_image(ds, h.index), border, scale), caption=hit_caption(h, metric))
    if query_label is None:
        st.caption("An upload has no known class, so results are not marked as hits or misses.")

# ---------------------------------------------------------------- whole test set

st.markdown(f"##### How well this embedding retrieves, over all {n_test:,} test images")
ev = es.evaluation(record, k, spec)
if ev is not None:
    cols = st.columns(5)
    for col, (label, value, help) in zip(cols, metric_cards(ev.metrics)):
        col.metric(label, value, help=help)
    cols[4].metric(
        "time per query",
        f"{1000 * ev.seconds_per_query:.3f} ms",
        help="Average over the whole test set searched in one batch.",
    )
    if ev.recall_vs_exact is not None:
        st.info(
            f"This approximate index returned **{100 * ev.recall_vs_exact:.1f}%** of the true top-{k} "
            "neighbours that exact search finds (recall against exact search).",
            icon=":material/speed:",
        )
    with st.expander("Per class"):
        st.dataframe(per_class_frame(ev.metrics), hide_index=True, width="stretch")
store.close()
