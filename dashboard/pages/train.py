"""Train: set up one run, a grid of runs or a search, queue them, and watch them learn."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from dashboard.figures import curves_figure
from dashboard.readings import precision_note
from dashboard.runs_table import any_active, run_label, runs_frame
from dashboard.search_form import search_form
from dashboard.state import (
    REFRESH_SECONDS,
    link,
    metrics_for,
    open_store,
    refuse_when_read_only,
    runs_by_id,
    settings,
    writable,
)
from dashboard.tables import metrics_long
from dashboard.train_form import dataset_picker, seeds_input, single_form, sweep_form
from engine.errors import ConfigError, DatasetError, ModelError
from engine.runs.seeds import expand_seeds
from engine.runs.sweeps import start_search, submit, submit_sweep

USER_ERRORS = (ConfigError, DatasetError, ModelError)

st.title("Train")
st.caption(
    "Pick the data and a model, set the hyperparameters and press **Queue run**. A background "
    "worker trains it (this page never blocks); the progress and the learning curves appear below "
    "as soon as it starts."
)


def queue(action: Callable[[], list[str]]) -> None:
    """Run a submit action; show its error next to the button, or remember what was launched."""
    try:
        run_ids = action()
    except USER_ERRORS as exc:
        st.error(f"Not queued: {exc}", icon=":material/error:")
        return
    st.session_state["launched"] = run_ids
    st.toast(f"Queued {len(run_ids)} run{'s' if len(run_ids) != 1 else ''}", icon=":material/check:")


def live_view(run_ids: list[str], polling: bool) -> None:
    records = runs_by_id(run_ids)
    if not records:
        st.caption("The runs launched from here were deleted.")
        return
    df = runs_frame(records)
    for _, run in df.iterrows():
        text = f"{run['label']} · **{run['state']}** · epoch {run['epoch']}/{run['epochs']}"
        if pd.notna(run["final_test_acc"]):
            text += f" · test accuracy {100 * run['final_test_acc']:.1f} %"
        st.progress(float(run["progress"]), text=text)
        if run["state"] in ("failed", "diverged") and run["error"]:
            st.error(run["error"])
    metrics = metrics_for(records)
    for record in records:
        note = precision_note(record.config, metrics.get(record.id, []))
        if note:
            st.caption(f"{run_label(record.arch, record.config, record.id)}: {note}")
    long = metrics_long(metrics)
    if long.empty:
        st.caption("Curves appear after the first epoch.")
    else:
        left, right = st.columns(2)
        left.plotly_chart(curves_figure(long, df, metric="loss", splits=("train", "val", "test")))
        right.plotly_chart(curves_figure(long, df, metric="acc", splits=("train", "val", "test")))
        st.caption(
            "Dotted: training images, dashed: validation, solid: test. Loss should fall and "
            "accuracy rise; a held-out curve turning up while training keeps improving means overfitting."
        )
    if polling and not any_active(df):
        st.rerun()  # everything finished: a full rerun stops the refreshing


store = open_store()
can_queue = writable(store)
dataset, shape, classes = dataset_picker()
single, sweep = st.tabs(["Single run", "Sweep (grid or search)"])
with single:
    config = single_form(dataset, shape, classes)
    k = seeds_input()
    if not can_queue:
        st.caption(":material/lock: Read-only: runs cannot be queued here.")
    elif st.button(
        "Queue run" if k == 1 else f"Queue {k} runs",
        type="primary",
        disabled=config is None,
        key="queue_single",
        icon=":material/play_arrow:",
    ) and not refuse_when_read_only(store):
        download = settings().download
        queue(
            lambda: (
                [submit(store, config, download=download)]
                if k == 1
                else submit_sweep(store, expand_seeds(config, k), download=download)[1]
            )
        )
with sweep:
    searching = st.toggle(
        "Search ranges instead of a grid (random or TPE trials, with early stopping)", key="sw_search"
    )
    spec = search_form(dataset) if searching else None
    if searching and not can_queue:
        st.caption(":material/lock: Read-only: a search cannot be started here.")
    elif (
        searching
        and st.button(
            "Start the search", type="primary", disabled=spec is None, key="start_search", icon=":material/play_arrow:"
        )
        and not refuse_when_read_only(store)
    ):

        def start() -> list[str]:
            sweep_id, run_ids = start_search(store, spec, download=settings().download)
            st.session_state["sweep"] = st.session_state["launched_search"] = sweep_id  # Sweeps opens on it
            return run_ids

        queue(start)
    if not searching:
        st.session_state.pop("launched_search", None)
        grid = sweep_form(dataset)
        if not can_queue:
            st.caption(":material/lock: Read-only: runs cannot be queued here.")
        else:
            reuse = st.checkbox(
                "Reuse finished runs with an identical config instead of training them again", key="sw_reuse"
            )
            if st.button(
                f"Queue {len(grid) if grid else 0} runs",
                type="primary",
                disabled=not grid,
                key="queue_sweep",
                icon=":material/play_arrow:",
            ) and not refuse_when_read_only(store):
                queue(lambda: submit_sweep(store, grid, reuse=reuse, download=settings().download)[1])

launched = st.session_state.get("launched")
if launched:
    st.divider()
    st.subheader("What you launched")
    active = any_active(runs_frame(runs_by_id(launched)))
    st.fragment(run_every=REFRESH_SECONDS if active else None)(live_view)(launched, active)
    c1, c2, c3, _ = st.columns([1, 1, 1, 2])
    with c1:
        link("runs.py", "All runs", ":material/list_alt:")
    with c2:
        link("compare.py", "Compare runs", ":material/compare_arrows:")
    with c3:
        if st.session_state.get("launched_search"):
            link("sweeps.py", "Watch the search", ":material/tune:")
