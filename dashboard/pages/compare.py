"""Compare: overlay the curves of several runs, read them, and see which setting won."""

from __future__ import annotations

import streamlit as st

from dashboard.figures import curves_figure, parallel_figure, scatter_figure, values_figure
from dashboard.readings import read_curves
from dashboard.state import REFRESH_SECONDS, damage_notes, first_run_message, metrics_for, open_store, runs_by_id
from dashboard.tables import (COLOR_CHOICES, HYPERPARAMS, METRIC_NAMES, SPLIT_NAMES, SPLITS, SummarySpec, ValueRule, any_active,
                              default_selection, extra_metric_frame, extra_metric_names, metrics_long,
                              metrics_wide, runs_frame, summary_table, varying_hyperparams)

st.title("Compare")
st.caption("Overlay the learning curves of several runs. By default you see the latest finished run of each "
           "architecture on one dataset; add or remove runs below. Under the chart, Lensboard says in words "
           "what the curves show.")

store = open_store()
runs = runs_frame(store.list_runs())
runs = runs[(runs["epoch"] > 0) | (runs["state"] == "running")]
if runs.empty:
    first_run_message("compare")
    st.stop()

datasets = sorted(runs["dataset"].unique())
newest = runs.sort_values("id").iloc[-1]["dataset"]
done = runs[runs["state"] == "done"]
current = done.sort_values("id").iloc[-1]["dataset"] if len(done) else newest
c1, c2 = st.columns([1, 3])
dataset = c1.selectbox("Dataset", datasets, index=datasets.index(current), key="cmp_dataset",
                       help="Runs on different datasets are not comparable, so pick one.")
pool = runs[runs["dataset"] == dataset]
labels = dict(zip(pool["id"], pool["label"] + " · " + pool["state"]))
chosen = c2.multiselect("Runs", list(labels), default=default_selection(pool, dataset) or list(labels)[:2],
                        format_func=labels.get, key=f"cmp_runs_{dataset}",
                        help="Each run is labelled architecture · learning rate · batch size · end of its id.")
if not chosen:
    st.info("Pick at least one run above to see its curves.")
    st.stop()
selected = pool[pool["id"].isin(chosen)].sort_values("id").reset_index(drop=True)
for note in damage_notes(runs_by_id(list(selected["id"]))):
    st.warning(note, icon=":material/report:")
has_val = bool((selected["val_split"].fillna(0) > 0).any())

c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
metric = c1.radio("Metric", list(METRIC_NAMES), index=1, format_func=METRIC_NAMES.get, horizontal=True,
                  key="cmp_metric",
                  help="Loss is what training minimises (lower is better); accuracy is the share of images "
                       "classified right (higher is better).")
splits = c2.multiselect("Splits", list(SPLITS), default=["train", "val", "test"] if has_val else ["train", "test"],
                        format_func=SPLIT_NAMES.get, key="cmp_splits",
                        help="train: images the model learns from; validation: held out from training; "
                             "test: the fixed test set.")
x = c3.radio("X axis", ["epoch", "elapsed"], format_func={"epoch": "epoch", "elapsed": "seconds"}.get,
             horizontal=True, key="cmp_x", help="Seconds show which run gets good fastest in wall time.")
color_by = c4.selectbox("Colour by", COLOR_CHOICES, key="cmp_color",
                        help="Runs sharing a value share a colour: colour by lr to see the learning-rate effect.")

with st.expander("Summary table settings", expanded=False):
    c1, c2, c3, c4 = st.columns(4)
    table_split = c1.selectbox("Value from split", [s for s in SPLITS if s != "val" or has_val],
                               index=2 if has_val else 1, format_func=SPLIT_NAMES.get, key="cmp_table_split")
    rule = ValueRule(c2.radio("Value rule", [r.value for r in ValueRule], horizontal=True, key="cmp_rule",
                              help="final: after the last epoch; best: the best epoch; at epoch: a fixed epoch "
                                   "(fair when runs trained for different lengths)."))
    k = c3.number_input("Epoch k", 1, 1000, 1, key="cmp_k", disabled=rule != ValueRule.AT_EPOCH)
    baseline = c4.selectbox("Baseline run", list(selected["id"]), format_func=labels.get, key=f"cmp_baseline_{hash(tuple(chosen))}",
                            help="The 'vs baseline' column is each run's value minus this run's.")
spec = SummarySpec(metric=metric, split=table_split, rule=rule,
                   epoch=int(k) if rule == ValueRule.AT_EPOCH else None, baseline=baseline)


def view(run_ids: list[str], polling: bool) -> None:
    """Chart, readings, table and sweep views of the chosen runs (re-run live while they train)."""
    records = runs_by_id(run_ids)
    current = runs_frame(records)
    metrics = metrics_for(records)
    long = metrics_long(metrics)
    if long.empty:
        st.info("The chosen runs have no finished epoch yet; their curves appear after the first one.")
        return
    st.plotly_chart(curves_figure(long, current, metric=metric, splits=splits or ["test"], x=x, color_by=color_by))
    st.caption("Line style: dotted = training images, dashed = validation, solid = test. "
               + ("Lower is better." if metric == "loss" else "Higher is better."))
    summary = summary_table(long, current, spec)
    readings = read_curves(long, current, summary, spec)
    st.markdown("##### What the curves say")
    if not readings:
        st.caption("Nothing stands out yet: no overfitting, plateau or divergence, and a single run has "
                   "nothing to be compared with.")
    for reading in readings:
        {"warning": st.warning, "success": st.success}.get(reading.level, st.info)(reading.text)

    st.markdown(f"##### Summary: {summary.attrs['value_name']}")
    swept = [p for p in varying_hyperparams(current) if p != "dataset"]
    order = ["label", "value", "vs baseline", "from epoch", "s / epoch", *swept, "state", "epochs done",
             *[h for h in HYPERPARAMS if h not in swept], "settings"]
    st.dataframe(summary, hide_index=True, width="stretch", column_order=order, column_config={
        "value": st.column_config.NumberColumn(summary.attrs["value_name"], format="%.4g"),
        "vs baseline": st.column_config.NumberColumn(
            f"vs baseline ({summary.attrs['diff_unit']})", format="%+.3g",
            help="This run's value minus the baseline run's"),
        "lr": st.column_config.NumberColumn(format="%g"),
        "s / epoch": st.column_config.NumberColumn(format="%.2f"),
        "settings": st.column_config.TextColumn("other settings", help="A tracked script's own config keys"),
    })
    c1, c2, _ = st.columns([1, 1, 3])
    c1.download_button("Summary CSV", summary.to_csv(index=False), "lensboard-summary.csv", "text/csv",
                       icon=":material/download:", on_click="ignore", key="dl_summary")
    c2.download_button("Metrics CSV", metrics_wide(long).to_csv(index=False), "lensboard-metrics.csv", "text/csv",
                       icon=":material/download:", on_click="ignore", key="dl_metrics")

    extra = extra_metric_names(metrics)
    if extra:  # values a tracked script logged besides loss and accuracy
        st.markdown("##### Other logged values")
        name = st.selectbox("Value", extra, key="cmp_extra", help="Logged by a script with run.log(...).")
        st.plotly_chart(values_figure(extra_metric_frame(metrics, name), current, name, color_by=color_by))

    if len(current) >= 2 and swept and show_sweep:
        st.markdown("##### Hyperparameters against the result")
        st.caption(f"These runs differ in: {', '.join(swept)}. Each dot is one run.")
        left, right = st.columns(2)
        param = left.selectbox("Hyperparameter on the x axis", swept, key="cmp_param")
        left.plotly_chart(scatter_figure(summary, param, color_by="arch" if param != "arch" else "optimizer"))
        if len(swept) >= 2:
            right.plotly_chart(parallel_figure(summary, swept))
            right.caption("Each line is a run, crossing one axis per hyperparameter; its colour is the result. "
                          "Drag along an axis to highlight a range.")
    if polling and not any_active(current):
        st.rerun()  # the runs finished: a full rerun stops the live refresh


one_sweep = selected["sweep_id"].notna().all() and selected["sweep_id"].nunique() == 1
show_sweep = st.toggle("Hyperparameter views (scatter and parallel coordinates)", value=bool(one_sweep),
                       key=f"cmp_sweep_views_{bool(one_sweep)}",
                       help="On by default when the chosen runs are one sweep: how each swept value relates "
                            "to the result.") if len(selected) >= 2 else False
active = any_active(selected)
if active:
    st.caption(f":material/autorenew: Live: refreshing every {REFRESH_SECONDS:g} s while a chosen run trains.")
st.fragment(run_every=REFRESH_SECONDS if active else None)(view)(list(selected["id"]), active)
