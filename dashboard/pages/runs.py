"""Runs: every run in one live table; filter, cancel, retry and delete."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.runs_table import ACTIVE_STATES, any_active, filter_runs, runs_display, runs_frame
from dashboard.state import REFRESH_SECONDS, first_run_message, link, open_store, refuse_when_read_only, writable
from engine.runs.jobs import trained_where

st.title("Runs")
st.caption(
    "Every training run on this machine, newest first. The table refreshes itself while something "
    "is queued or running. Accuracies are on the test images, which no run ever trains on."
)

store = open_store()
runs = runs_frame(store.list_runs())
damaged = store.invalid_rows()
if damaged:
    st.error(
        f"{len(damaged)} registry row{'s' if len(damaged) > 1 else ''} of `{store.root}` "
        f"{'have ids that are' if len(damaged) > 1 else 'has an id that is'} not a valid run id, so "
        f"{'they are' if len(damaged) > 1 else 'it is'} damaged and ignored (never used as a folder path): "
        + ", ".join(f"`{run_id}` ({state})" for run_id, state in damaged),
        icon=":material/report:",
    )
    if writable(store) and st.button("Remove the damaged rows (no file is touched)", key="drop_damaged"):
        if not refuse_when_read_only(store):
            for run_id, _ in damaged:
                store.delete_run(run_id)  # the record only: no path is built from an invalid id
            st.rerun()
if runs.empty:
    first_run_message("list")
    st.stop()

if "runs_message" in st.session_state:
    kind, text = st.session_state.pop("runs_message")
    getattr(st, kind)(text)

c1, c2, c3, c4 = st.columns(4)
filters = dict(
    states=c1.multiselect("State", sorted(runs["state"].unique()), key="f_state", placeholder="all states"),
    sweeps=c2.multiselect("Sweep", sorted(runs["sweep_id"].dropna().unique()), key="f_sweep", placeholder="all runs"),
    datasets=c3.multiselect("Dataset", sorted(runs["dataset"].unique()), key="f_dataset", placeholder="all datasets"),
    archs=c4.multiselect("Architecture", sorted(runs["arch"].unique()), key="f_arch", placeholder="all architectures"),
)

COLUMNS = {
    "progress": st.column_config.ProgressColumn(
        "progress", format="%.0f%%", min_value=0, max_value=100, help="Share of all batches of all epochs done"
    ),
    "lr": st.column_config.NumberColumn("lr", format="%g"),
    "final test acc %": st.column_config.NumberColumn(format="%.2f", help="Test accuracy after the last epoch"),
    "best test acc %": st.column_config.NumberColumn(format="%.2f", help="Best test accuracy over the epochs"),
    "s / epoch": st.column_config.NumberColumn(format="%.2f", help="Mean wall time of one epoch, in seconds"),
    "trained on": st.column_config.TextColumn(help="The host of the local worker, or the Ray node that trained it"),
    "created": st.column_config.DatetimeColumn("created (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "message": st.column_config.TextColumn(
        "message",
        width="large",
        help="Why a run failed, diverged, was cancelled or was pruned (stopped early by its search)",
    ),
}


def table(polling: bool) -> None:
    """The table, re-read from the registry's summary columns only (no metrics files)."""
    registry = open_store()
    fresh = runs_frame(registry.list_runs())
    shown = filter_runs(fresh, **filters)
    counts = fresh["state"].value_counts()
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Runs", len(fresh), border=True)
    c2.metric("Queued / running", f"{counts.get('queued', 0)} / {counts.get('running', 0)}", border=True)
    c3.metric("Done", int(counts.get("done", 0)), border=True)
    best = fresh["best_test_acc"].max()
    c4.metric("Best test accuracy", "–" if pd.isna(best) else f"{100 * best:.1f} %", border=True)
    st.caption(
        " · ".join(f"{state}: **{n}**" for state, n in counts.items()) + f" · showing {len(shown)} of {len(fresh)}"
    )
    st.dataframe(
        runs_display(shown, trained_where(registry)),
        column_config=COLUMNS,
        hide_index=True,
        width="stretch",
        height="auto" if len(shown) <= 15 else 560,
    )
    if polling and not any_active(fresh):
        st.rerun()  # nothing left to watch: a full rerun stops the refreshing


active = any_active(runs)
st.fragment(run_every=REFRESH_SECONDS if active else None)(table)(active)

if not writable(store):
    st.caption(":material/lock: Read-only: runs cannot be cancelled, retried or deleted here.")
    link("compare.py", "Compare the finished runs", ":material/compare_arrows:")
    st.stop()

st.subheader("Act on runs")
shown = filter_runs(runs, **filters)
labels = dict(zip(shown["id"], shown["label"] + " · " + shown["state"]))
chosen = st.multiselect(
    "Runs",
    list(labels),
    format_func=labels.get,
    key="chosen",
    placeholder="pick one or more runs from the table above",
    help="Cancel stops a queued or running run (after its current batch); retry queues "
    "the same config again as a new run; delete removes the run's folder and record.",
)
picked = runs[runs["id"].isin(chosen)]
c1, c2, c3, _ = st.columns([1, 1, 1, 3])
cancellable = picked[picked["state"].isin(ACTIVE_STATES)]
if c1.button(
    "Cancel", disabled=cancellable.empty, icon=":material/stop_circle:", key="do_cancel"
) and not refuse_when_read_only(store):
    from engine.runs.jobs import cancel

    said = []
    for run_id in cancellable["id"]:
        try:
            said.append(cancel(store, run_id))
        except Exception as exc:  # one bad run must not stop the others
            said.append(f"run {run_id}: {exc}")
    st.session_state["runs_message"] = ("info", "\n\n".join(said))
    st.rerun()
if c2.button("Retry", disabled=picked.empty, icon=":material/replay:", key="do_retry") and not refuse_when_read_only(
    store
):
    from engine.runs.jobs import retry

    said = []
    for run_id in picked["id"]:
        try:
            said.append(f"run {run_id} queued again as {retry(store, run_id)}")
        except Exception as exc:
            said.append(f"run {run_id} not retried: {exc}")
    st.session_state["runs_message"] = ("info", "\n\n".join(said))
    st.rerun()
if c3.button("Delete…", disabled=picked.empty, icon=":material/delete:", key="do_delete"):
    st.session_state["confirm_delete"] = list(picked["id"])

doomed = st.session_state.get("confirm_delete")
if doomed:
    st.warning(
        f"Delete {len(doomed)} run(s) with their folders (metrics, checkpoints, embeddings)? "
        "This cannot be undone. Queued or running ones are cancelled first.",
        icon=":material/warning:",
    )
    c1, c2, _ = st.columns([1, 1, 4])
    if c1.button("Yes, delete", type="primary", key="confirm_yes") and not refuse_when_read_only(store):
        from engine.runs.jobs import cancel

        for run_id in doomed:
            state = runs.loc[runs["id"] == run_id, "state"]
            if len(state) and state.iloc[0] in ACTIVE_STATES:
                try:
                    cancel(store, run_id)
                except Exception:
                    pass  # not on the queue any more: deleting is what was asked
            store.delete_run(run_id)
        del st.session_state["confirm_delete"]
        st.session_state["runs_message"] = ("success", f"Deleted {len(doomed)} run(s).")
        st.session_state.pop("chosen", None)
        st.rerun()
    if c2.button("Keep them", key="confirm_no"):
        del st.session_state["confirm_delete"]
        st.rerun()

link("compare.py", "Compare the finished runs", ":material/compare_arrows:")
