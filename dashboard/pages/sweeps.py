"""Sweeps: what a grid or a search learned, live while it runs, and what early stopping would have done."""

from __future__ import annotations

import streamlit as st

from dashboard.state import REFRESH_SECONDS, link, open_store, refuse_when_read_only, results_dir, writable
from dashboard.sweep_figures import (
    best_so_far_figure,
    curves_figure,
    epochs_figure,
    importance_figure,
    parallel_coordinates_figure,
    param_figure,
)
from dashboard.sweeps import objective_name, reading, replay_reading, sweep_label, trials_frame, value_text
from engine.errors import ReplayError
from engine.runs.search import RULE_NAMES, extend_search, top_up
from engine.runs.sweep_report import SweepReport, list_sweeps, replay_report, sweep_report, sweep_stamp

st.title("Sweeps")
st.caption(
    "A sweep is a set of runs made together: a grid (every combination) or a search (random or TPE "
    "trials over ranges, maybe with early stopping). Pick one to see how the search went, which "
    "hyperparameters mattered, and every trial's curve. Values are on the validation split."
)

store = open_store()
sweeps = list_sweeps(store)
if not sweeps:
    st.info(
        "No sweeps yet. On the **Train** page, the **Sweep** tab queues a grid or starts a search; the "
        "Assignments page queues assignment 4 as a sweep too.",
        icon=":material/rocket_launch:",
    )
    link("train.py", "Go to Train", ":material/model_training:")
    st.stop()

labels = {s.sweep: sweep_label(s) for s in sweeps}
ids = list(labels)
wanted = st.session_state.get("sweep")
sweep_id = st.selectbox(
    "Sweep",
    ids,
    index=ids.index(wanted) if wanted in ids else 0,
    format_func=labels.get,
    key="sweep_pick",
    help="Newest first. A search's trials are its runs.",
)
st.session_state["sweep"] = sweep_id


@st.cache_data(max_entries=32, show_spinner=False)
def report_for(root: str, sweep: str, stamp: tuple) -> SweepReport:
    return sweep_report(open_store(), sweep)


def current() -> SweepReport:
    return report_for(str(results_dir()), sweep_id, sweep_stamp(open_store(), sweep_id))


def view(polling: bool) -> None:
    report = current()
    best = report.best
    done = sum(t.state == "done" for t in report.trials)
    pruned = sum(t.state == "pruned" for t in report.trials)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(
        "Trials made",
        f"{len(report.trials)} / {report.planned}",
        border=True,
        help="Trials queued, running or finished, of all the search will make",
    )
    c2.metric("Done / stopped early", f"{done} / {pruned}", border=True)
    c3.metric(
        f"Best {objective_name(report.objective)}",
        value_text(best.value if best else None, report.objective),
        border=True,
    )
    c4.metric(
        "Epochs spent / budget",
        f"{report.epochs_run} / {report.epochs_budget}",
        border=True,
        help="Epochs trained so far, against every trial made so far trained to its last epoch",
    )
    if report.spec is not None:
        spec = report.spec
        st.caption(
            f"**{spec.sampler.upper() if spec.sampler == 'tpe' else 'Random'} search** over "
            + "; ".join(f"{d.name} {d.describe()}" for d in spec.dimensions)
            + f" · up to {spec.base.epochs} epoch(s) per trial · early stopping: {RULE_NAMES[spec.prune]}"
            + f" · sampler seed {spec.seed} · {spec.parallel} trial(s) at once"
        )
    with st.container(border=True):
        st.markdown("**What the sweep says**")
        for sentence in reading(report):
            st.markdown(f"- {sentence}")
    progress, mattered, curves, table = st.tabs(["Progress", "What mattered", "Curves", "Trials"])
    with progress:
        left, right = st.columns(2)
        left.plotly_chart(best_so_far_figure(report), key="sw_best")
        right.plotly_chart(epochs_figure(report), key="sw_epochs")
    with mattered:
        if report.importance:
            st.plotly_chart(importance_figure(report), key="sw_importance")
            st.caption(
                "Optuna's importance: how much of the variation in the results each hyperparameter "
                "explains, over the trials that ran to the end."
            )
        if report.names:
            st.plotly_chart(parallel_coordinates_figure(report), key="sw_parallel")
            cols = st.columns(2)
            for i, name in enumerate(report.names):
                cols[i % 2].plotly_chart(param_figure(report, name), key=f"sw_param_{name}")
    with curves:
        st.plotly_chart(curves_figure(report), key="sw_curves")
        st.caption("An x marks the epoch after which early stopping stopped a trial; its finished epochs are kept.")
    with table:
        st.dataframe(trials_frame(report), hide_index=True, width="stretch")
    if polling and not report.active:
        st.rerun()  # the sweep has settled: a full rerun stops the refreshing


active = current().active > 0
st.fragment(run_every=REFRESH_SECONDS if active else None)(view)(active)

report = current()
if report.spec is not None and writable(store):
    st.subheader("Keep searching")
    paused = report.active == 0 and len(report.trials) < report.planned
    if paused:
        st.warning(
            f"This search is paused: {len(report.trials)} of {report.planned} trials are made and none is "
            "queued or running (a trial was cancelled, or the search could not queue the next ones).",
            icon=":material/pause_circle:",
        )
    c1, c2, c3 = st.columns([1, 1, 2])
    more = c1.number_input("More trials", 1, 200, 8, key="sw_more")
    if c2.button(f"Add {more} trials", key="sw_extend", icon=":material/add:") and not refuse_when_read_only(store):
        extend_search(store, sweep_id, int(more))
        st.rerun()
    if (
        paused
        and c3.button("Resume the search", key="sw_resume", icon=":material/play_arrow:")
        and not refuse_when_read_only(store)
    ):
        top_up(store, sweep_id)
        st.rerun()
    st.caption(f"The same from a terminal: `python -m engine sweep --resume {sweep_id} --trials N`.")

st.subheader("Early-stopping replay")
if report.prune != "none":
    st.caption(
        "This search already stopped trials early, so its curves are not complete: a replay needs a grid "
        "or a search that ran every trial to the end."
    )
else:
    st.caption(
        "What would early stopping have done to these runs? Each run reports its value after every epoch "
        "to Optuna's pruner, in the order they ran, and stops where the pruner says so."
    )
    rule = st.radio(
        "Rule",
        ["asha", "hyperband", "median"],
        horizontal=True,
        key="sw_replay",
        format_func=RULE_NAMES.get,
        help="ASHA keeps the best third at epochs 1, 3, 9...; Hyperband runs ASHA with several "
        "starting points; the median rule stops a run below the median of finished runs.",
    )
    try:
        replayed = replay_report(report, rule)
    except ReplayError as exc:
        st.info(str(exc))
    else:
        ok = replayed.winner_survives is not False
        (st.success if ok else st.warning)(replay_reading(report, replayed))
        st.plotly_chart(
            curves_figure(
                report, replayed.stopped_at, title=f"Had {RULE_NAMES[rule]} been on: faint = epochs it would have saved"
            ),
            key="sw_replay_curves",
        )
link("compare.py", "Compare these runs' curves", ":material/compare_arrows:")
