"""Embeddings: how a model arranges the test images, as a t-SNE or PCA map, one or two runs side by side."""

from __future__ import annotations

import streamlit as st

from dashboard import embedding_state as es
from dashboard.embedding_figures import (
    HIT,
    MISS,
    QUERY,
    compare_frame,
    embedding_map,
    metric_cards,
    nearest_in_map,
    per_class_frame,
    scale_for,
    selected_rows,
    selection_summary,
    tile,
)
from dashboard.state import REFRESH_SECONDS, data_dir, first_run_message, open_store, settings, writable
from engine.errors import LensboardError, ProjectionError
from engine.ml.data import Dataset
from engine.ml.embed import DEFAULT_IMAGE_SIZE, embedding_meta
from engine.ml.projection import DEFAULT_MAX_POINTS, Method, ProjectionParams, cached_projection, validate
from engine.runs.embedding import create_pretrained_run
from engine.runs.records import RunRecord
from engine.runs.workers import worker_status

MAX_SHOWN = 48  # images shown for a box or lasso selection

st.title("Embeddings")
st.caption(
    "A model turns every image into a vector, its **embedding** (the input of its last layer). Images the "
    "model finds similar get nearby vectors. A **t-SNE** map squeezes those vectors into 2-D while keeping "
    "each image near its nearest neighbours; **PCA** shows the two directions along which the vectors vary "
    "most. If the classes form tight, separate islands, the embedding is good for finding similar images."
)

store = open_store()
runs = es.embeddable_runs(store)


def pretrained_form(dataset: str) -> None:
    if not writable(store):
        return  # read-only: nothing can be queued
    with st.expander("Add a pretrained ResNet-18 as a feature extractor", icon=":material/add_circle:"):
        st.caption(
            "A ResNet-18 trained on ImageNet (1.2 million photos), used as is: each image is converted to "
            "3 channels, resized, and its 512-number embedding is read before the classifier. It has never "
            "seen this dataset; compare its map with your own models'."
        )
        c1, c2 = st.columns([2, 1])
        size = c1.select_slider(
            "Input size (pixels)",
            [32, 64, 112, 160, 224],
            value=DEFAULT_IMAGE_SIZE,
            key="emb_rn_size",
            help="ImageNet models see 224 px; 112 px is about 4x faster on a CPU.",
        )
        c2.button(
            "Queue ResNet-18 embeddings",
            key="emb_rn_go",
            icon=":material/play_arrow:",
            on_click=queue_pretrained,
            args=(dataset, int(size)),
        )
        if st.session_state.get("emb_rn_error"):
            st.error(st.session_state["emb_rn_error"])


def queue_pretrained(dataset: str, size: int) -> None:
    """Button callback (runs before the widgets): a new extractor run with its embed job, shown first."""
    st.session_state["emb_rn_error"] = None
    fresh = open_store()
    if fresh.read_only:  # refused on the server, whatever the browser sent
        st.session_state["emb_rn_error"] = "This dashboard is read-only: nothing can be queued."
        fresh.close()
        return
    try:
        run_id = create_pretrained_run(fresh, dataset, str(data_dir()), size, download=settings().download)
        es.queue(fresh, "embed", run_id)
    except LensboardError as exc:
        st.session_state["emb_rn_error"] = str(exc)
        return
    finally:
        fresh.close()
    key = f"emb_runs_{dataset}"
    st.session_state[key] = [run_id] + list(st.session_state.get(key) or [])[:1]


if not runs:
    first_run_message("map")
    pretrained_form("mnist_sample")
    st.stop()

datasets = sorted({r.dataset for r in runs})
c1, c2 = st.columns([1, 3])
dataset = c1.selectbox(
    "Dataset", datasets, key="emb_dataset", help="Maps of different datasets cannot be compared, so pick one."
)
pool = [r for r in runs if r.dataset == dataset]
by_id = {r.id: r for r in pool}


def default_pair() -> list[str]:
    """The newest run of each of two different architectures (an MLP next to a CNN when there are both)."""
    seen, out = set(), []
    for r in pool:
        if r.arch not in seen:
            seen.add(r.arch)
            out.append(r.id)
    mlp = [i for i in out if by_id[i].arch == "basic_nn"]
    rest = [i for i in out if i not in mlp]
    return (mlp + rest)[:2]


key_runs = f"emb_runs_{dataset}"
if key_runs in st.session_state:
    st.session_state[key_runs] = [i for i in st.session_state[key_runs] if i in by_id][:2]
chosen = c2.multiselect(
    "Runs (one, or two side by side)",
    list(by_id),
    default=None if key_runs in st.session_state else default_pair(),
    max_selections=2,
    format_func=lambda i: es.run_name(by_id[i]),
    key=key_runs,
    help="Finished training runs, and pretrained ResNet-18 feature extractors.",
)
pretrained_form(dataset)
if not chosen:
    st.info("Pick one or two runs above to see their maps.")
    st.stop()

c1, c2, c3, c4 = st.columns([1.2, 1.5, 1.3, 1.5])
method = Method(
    c1.radio(
        "Map",
        ["tsne", "pca"],
        format_func={"tsne": "t-SNE", "pca": "PCA"}.get,
        horizontal=True,
        key="emb_method",
        help="PCA is instant and faithful to big distances; t-SNE takes a while (the worker "
        "computes it) and shows neighbourhoods and clusters much better.",
    )
)
perplexity = c2.slider(
    "Perplexity (t-SNE)",
    5,
    50,
    30,
    step=5,
    key="emb_perplexity",
    disabled=method is Method.PCA,
    help="Roughly how many neighbours each point tries to keep close. Small values show fine "
    "local structure, large values the overall layout.",
)
max_points = c3.select_slider(
    "Points on the map",
    [500, 1000, 2000, 5000, 10000],
    value=DEFAULT_MAX_POINTS,
    key="emb_points",
    help="A stratified sample of the test images (every class keeps its share).",
)
k = c4.slider(
    "K (neighbours and metrics)",
    1,
    20,
    10,
    key="emb_k",
    help="How many nearest neighbours a click shows, and the K of precision@K, recall@K and mAP@K.",
)
params = validate(ProjectionParams(method, float(perplexity), int(max_points)))


def missing_work(record: RunRecord) -> list[tuple[str, dict]]:
    """The jobs this run still needs for the chosen map: embeddings first, then the t-SNE map."""
    todo = []
    has = es.stamp(record) is not None
    if not has and not es.pending(store, record.id, "embed"):
        todo.append(("embed", {}))
    if (
        method is Method.TSNE
        and (not has or cached_projection(record.path, params) is None)
        and not es.pending(store, record.id, "project", params.to_json())
    ):
        todo.append(("project", params.to_json()))
    return todo


todo = {rid: missing_work(by_id[rid]) for rid in chosen}
if any(todo.values()):
    what = sorted({("embeddings" if kind == "embed" else "t-SNE map") for jobs in todo.values() for kind, _ in jobs})
    c1, c2 = st.columns([1, 3])
    if not writable(store):
        c1.caption(":material/lock: Read-only")
    elif (
        c1.button("Compute what is missing", type="primary", icon=":material/play_arrow:", key="emb_compute")
        and not store.read_only
    ):
        for rid, jobs in todo.items():
            for kind, payload in jobs:
                es.queue(store, kind, rid, payload)
        st.rerun()
    c2.caption(
        f"Missing: {' and '.join(what)}. The background worker computes them (the page never does heavy "
        f"work itself); this page updates by itself while it works."
    )

waiting = {rid: es.pending(store, rid) for rid in chosen}
if any(waiting.values()):

    @st.fragment(run_every=REFRESH_SECONDS)
    def progress_panel() -> None:
        fresh = open_store()
        try:
            now = {rid: es.pending(fresh, rid) for rid in chosen}
            if [p.job.id for ps in now.values() for p in ps] != [p.job.id for ps in waiting.values() for p in ps]:
                st.rerun()  # a job finished or started: redraw the page
            if not worker_status(fresh).alive:
                st.warning(
                    "No background worker is running, so these jobs wait. Start one with `make worker`.",
                    icon=":material/warning:",
                )
            for rid, ps in now.items():
                for p in ps:
                    st.progress(p.fraction, text=f"{es.run_name(by_id[rid])} · {p.text}")
        finally:
            fresh.close()

    progress_panel()


def show_tiles(ds: Dataset, rows: list[int], captions: list[str], borders: list[str | None]) -> None:
    side = ds.shape[-1]
    scale = scale_for(side, 80)
    st.image([tile(es.test_image(ds, r), b, scale) for r, b in zip(rows, borders)], caption=captions)


def run_panel(record: RunRecord) -> None:
    st.subheader(es.run_name(record))
    test = es.embeddings(record, "test")
    if test is None:
        failure = es.last_failure(store, record.id, "embed")
        problem = es.damage(record)
        if problem:
            st.error(
                f"The saved embeddings cannot be used: {problem}"
                + (
                    " (progress above)."
                    if es.pending(store, record.id, "embed")
                    else ": press **Compute what is missing** above."
                    if writable(store)
                    else "."
                ),
                icon=":material/report:",
            )
        elif failure:
            st.error(f"Computing the embeddings failed: {failure}")
        elif es.pending(store, record.id, "embed"):
            st.info("Waiting for the embeddings (progress above).", icon=":material/hourglass_top:")
        else:
            st.info("No embeddings yet: press **Compute what is missing** above.", icon=":material/info:")
        return
    meta = embedding_meta(record.path)
    classes = meta.get("classes") or [str(c) for c in range(int(test.labels.max()) + 1)]
    st.caption(
        f"{meta['dim']}-dimensional embeddings of {meta['train']:,} training images (the search "
        f"database) and {meta['test']:,} test images; made by: {meta['source']}."
    )

    if method is Method.PCA:
        try:
            proj = es.pca_map(record, params.max_points, params.seed)
        except ProjectionError as exc:
            st.error(str(exc))
            return
    else:
        proj = cached_projection(record.path, params)
        if proj is None:
            failure = es.last_failure(store, record.id, "project")
            if failure:
                st.error(f"The t-SNE map failed: {failure}")
            else:
                st.info(
                    "Waiting for the t-SNE map (progress above), or press **Compute what is missing**. "
                    "Switch to PCA for an instant map meanwhile.",
                    icon=":material/hourglass_top:",
                )
            return

    map_key = f"emb_map_{record.id}_{params.key}"
    rows = selected_rows(st.session_state.get(map_key))
    labels = test.labels[proj.indices]
    focus, neighbours, sims = None, [], []
    if len(rows) == 1:
        focus = rows[0]
        where = {int(r): i for i, r in enumerate(proj.indices)}
        if focus in where:
            pos, sims = nearest_in_map(test.vectors[proj.indices], where[focus], k)
            neighbours = [int(proj.indices[p]) for p in pos]
    fig = embedding_map(
        proj.coords, labels, proj.indices, classes, method=method.value, focus=focus, neighbours=neighbours
    )
    st.plotly_chart(fig, key=map_key, on_select="rerun", selection_mode=("points", "box", "lasso"), width="stretch")
    st.caption(
        f"{len(proj.indices):,} test images, coloured by their true class. **Click** a point to see its "
        f"{k} nearest neighbours (ringed). To see a group of images, pick **Lasso** or **Box select** in "
        "the chart's toolbar and draw around them (pick **Zoom** again to click single points). "
        "Double-click the map to clear; click a class in the legend to hide it."
        + (" t-SNE axes have no units: only who is near whom matters." if method is Method.TSNE else "")
    )

    ev = es.evaluation(record, k)
    if ev is not None:
        cols = st.columns(4)
        for col, (label, value, help) in zip(cols, metric_cards(ev.metrics)):
            col.metric(label, value, help=help)
        with st.expander("Retrieval quality per class"):
            st.caption(
                f"Every test image searched against the {meta['train']:,} training images "
                f"(exact cosine search, K = {k})."
            )
            st.dataframe(per_class_frame(ev.metrics), hide_index=True, width="stretch")

    ds = es.dataset(record)
    if focus is not None:
        name = classes[int(test.labels[focus])]
        st.markdown(
            f"**Test image {focus}** (class {name}) and its {len(neighbours)} nearest neighbours "
            "among the images on this map, measured in the full embedding space:"
        )
        own = int(test.labels[focus])
        show_tiles(
            ds,
            [focus] + neighbours,
            [f"chosen · class {name}"]
            + [f"{classes[int(test.labels[r])]} · {s:.2f}" for r, s in zip(neighbours, sims)],
            [QUERY] + [HIT if int(test.labels[r]) == own else MISS for r in neighbours],
        )
        st.caption(
            "Under each neighbour: its class and its cosine similarity to the chosen image (1 = the same "
            "direction). Green border: same class as the chosen image; red: another class."
        )
    elif len(rows) > 1:
        st.markdown(f"**Selected:** {selection_summary(test.labels[rows], classes)}")
        shown = rows[:MAX_SHOWN]
        show_tiles(ds, shown, [f"class {classes[int(test.labels[r])]}" for r in shown], [None] * len(shown))
        if len(rows) > MAX_SHOWN:
            st.caption(f"Showing the first {MAX_SHOWN} of {len(rows)}.")


columns = st.columns(len(chosen))
for column, rid in zip(columns, chosen):
    with column:
        run_panel(by_id[rid])

if len(chosen) == 2:
    evs = {es.run_name(by_id[rid]): es.evaluation(by_id[rid], k) for rid in chosen}
    if all(v is not None for v in evs.values()):
        st.markdown("##### Which embedding retrieves better?")
        st.dataframe(compare_frame({n: e.metrics for n, e in evs.items()}), hide_index=True, width="stretch")
        st.caption(
            "An MLP sees pixels in fixed places, so a digit shifted a little looks different to it; a CNN's "
            "filters slide over the image, so its embedding groups images by shape, and its neighbours "
            "share the class more often. Higher is better in every column."
        )
store.close()
