"""Compare: overlay the curves of several runs, read them, and see which setting won."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.figures import curves_figure, group_curves_figure, parallel_figure, scatter_figure, values_figure
from dashboard.groups import BANDS, GROUP_CHOICES, GROUP_NAMES, compare_summary, group_table, run_groups
from dashboard.readings import read_curves
from dashboard.runs_table import COLOR_CHOICES, any_active, default_selection, runs_frame
from dashboard.state import (
    REFRESH_SECONDS,
    damage_notes,
    first_run_message,
    metrics_for,
    open_store,
    runs_by_id,
    shown_signature,
    watch,
)
from dashboard.tables import (
    METRIC_NAMES,
    SPLIT_NAMES,
    SPLITS,
    SummarySpec,
    ValueRule,
    extra_metric_frame,
    extra_metric_names,
    metrics_long,
    metrics_wide,
    summary_table,
    varying_hyperparams,
)
from engine.config import HYPERPARAMETERS
from engine.runs.verdicts import TEST_NAME, THRESHOLD

st.title("Compare")
st.caption(
    "Overlay the learning curves of several runs. By default you see the latest finished run of each "
    "architecture on one dataset, with its other seeds; add or remove runs below. Runs that differ only "
    "in the seed are drawn as one group, a mean with a band for the spread. Under the chart, Lensboard "
    "says in words what the curves show, and whether a difference is larger than seed noise."
)

store = open_store()
records = store.list_runs()
runs = runs_frame(records)
runs = runs[(runs["epoch"] > 0) | (runs["state"] == "running")]
if runs.empty:
    first_run_message("compare")
    st.stop()

datasets = sorted(runs["dataset"].unique())
newest = runs.sort_values("id").iloc[-1]["dataset"]
done = runs[runs["state"] == "done"]
current = done.sort_values("id").iloc[-1]["dataset"] if len(done) else newest
c1, c2 = st.columns([1, 3])
dataset = c1.selectbox(
    "Dataset",
    datasets,
    index=datasets.index(current),
    key="cmp_dataset",
    help="Runs on different datasets are not comparable, so pick one.",
)
pool = runs[runs["dataset"] == dataset]
labels = dict(zip(pool["id"], pool["label"] + " · " + pool["state"]))
chosen = c2.multiselect(
    "Runs",
    list(labels),
    default=default_selection(pool, dataset) or list(labels)[:2],
    format_func=labels.get,
    key=f"cmp_runs_{dataset}",
    help="Each run is labelled architecture · learning rate · batch size · end of its id.",
)
if not chosen:
    st.info("Pick at least one run above to see its curves.")
    st.stop()
selected = pool[pool["id"].isin(chosen)].sort_values("id").reset_index(drop=True)
for note in damage_notes(runs_by_id(list(selected["id"]))):
    st.warning(note, icon=":material/report:")
has_val = bool((selected["val_split"].fillna(0) > 0).any())

configs = {r.id: r.config for r in records if r.id in set(selected["id"])}
seeded = any(len(ids) > 1 for _, ids in run_groups(configs, "config"))
c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
group_by = c1.selectbox(
    "Group runs",
    GROUP_CHOICES,
    index=1 if seeded else 0,
    key=f"cmp_group_{seeded}",
    format_func=lambda g: GROUP_NAMES.get(g, f"by {g}"),
    help="Seeds: runs whose settings differ only in the seed become one group, drawn as their "
    "mean with a band for their spread; the table shows mean, std and n per group. Or "
    "group by any hyperparameter, or by sweep. Whether two groups really differ is "
    f"judged with {TEST_NAME} (unequal variances) on each run's value, real when "
    f"p < {THRESHOLD:g}.",
)
grouped = group_by != "none"
band = c2.radio(
    "Band",
    list(BANDS),
    format_func=BANDS.get,
    horizontal=True,
    key="cmp_band",
    disabled=not grouped,
    help="The spread of a group's runs at each epoch: mean ± one standard deviation, or from the "
    "lowest to the highest run.",
)
smoothing = c3.slider(
    "Smoothing",
    0.0,
    0.95,
    0.0,
    0.05,
    key="cmp_smoothing",
    help="Exponential moving average, as in TensorBoard: 0 is off, 0.9 follows the curve slowly. "
    "The raw curve stays faded behind the smoothed one.",
)
log_y = c4.toggle("Log y", key="cmp_log_y", help="A logarithmic y axis: small losses late in training stay visible.")

c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
metric = c1.radio(
    "Metric",
    list(METRIC_NAMES),
    index=1,
    format_func=METRIC_NAMES.get,
    horizontal=True,
    key="cmp_metric",
    help="Loss is what training minimises (lower is better); accuracy is the share of images "
    "classified right (higher is better).",
)
splits = c2.multiselect(
    "Splits",
    list(SPLITS),
    default=["train", "val", "test"] if has_val else ["train", "test"],
    format_func=SPLIT_NAMES.get,
    key="cmp_splits",
    help="train: images the model learns from; validation: held out from training; test: the fixed test set.",
)
x = c3.radio(
    "X axis",
    ["epoch", "elapsed"],
    format_func={"epoch": "epoch", "elapsed": "seconds"}.get,
    horizontal=True,
    key="cmp_x",
    help="Seconds show which run gets good fastest in wall time.",
)
color_by = c4.selectbox(
    "Colour by",
    COLOR_CHOICES,
    key="cmp_color",
    disabled=grouped,
    help="Runs sharing a value share a colour: colour by lr to see the learning-rate effect. "
    "When runs are grouped, each group has its own colour.",
)

with st.expander("Summary table settings", expanded=False):
    c1, c2, c3, c4 = st.columns(4)
    table_split = c1.selectbox(
        "Value from split",
        [s for s in SPLITS if s != "val" or has_val],
        index=2 if has_val else 1,
        format_func=SPLIT_NAMES.get,
        key="cmp_table_split",
    )
    rule = ValueRule(
        c2.radio(
            "Value rule",
            [r.value for r in ValueRule],
            horizontal=True,
            key="cmp_rule",
            help="final: after the last epoch; best: the best epoch; at epoch: a fixed epoch "
            "(fair when runs trained for different lengths).",
        )
    )
    k = c3.number_input("Epoch k", 1, 1000, 1, key="cmp_k", disabled=rule != ValueRule.AT_EPOCH)
    baseline = c4.selectbox(
        "Baseline run",
        list(selected["id"]),
        format_func=labels.get,
        key=f"cmp_baseline_{hash(tuple(chosen))}",
        help="The 'vs baseline' column is each run's value minus this run's.",
    )
spec = SummarySpec(
    metric=metric, split=table_split, rule=rule, epoch=int(k) if rule == ValueRule.AT_EPOCH else None, baseline=baseline
)


def view(run_ids: list[str]) -> None:
    """Chart, readings, table and sweep views of the chosen runs (redrawn by `watch` when they changed)."""
    records = runs_by_id(run_ids)
    current = runs_frame(records)
    metrics = metrics_for(records)
    long = metrics_long(metrics)
    if long.empty:
        st.info("The chosen runs have no finished epoch yet; their curves appear after the first one.")
        return
    summary = summary_table(long, current, spec)
    highlight = clicked()
    if grouped:
        groups = run_groups({r.id: r.config for r in records}, group_by, {r.id: r.sweep_id for r in records})
        comparison = compare_summary(summary, groups, spec)
        figure = group_curves_figure(
            long,
            groups,
            metric=metric,
            splits=splits or ["test"],
            x=x,
            band=band,
            smoothing=smoothing,
            log_y=log_y,
            highlight=highlight,
        )
    else:
        comparison = None
        figure = curves_figure(
            long,
            current,
            metric=metric,
            splits=splits or ["test"],
            x=x,
            color_by=color_by,
            smoothing=smoothing,
            log_y=log_y,
            highlight=highlight,
        )
    st.plotly_chart(figure, key="cmp_chart", on_select="rerun", selection_mode="points")
    st.caption(
        "Line style: dotted = training images, dashed = validation, solid = test. "
        + ("Lower is better. " if metric == "loss" else "Higher is better. ")
        + ("Each group is the mean of its runs, the shaded band their spread. " if grouped else "")
        + "Click a point to highlight its "
        + ("group" if grouped else "run")
        + " (the others fade); double-click the chart to clear."
    )
    readings = read_curves(long, current, summary, spec, comparison)
    st.markdown("##### What the curves say")
    if not readings:
        st.caption(
            "Nothing stands out yet: no overfitting, plateau or divergence, and a single run has "
            "nothing to be compared with."
        )
    for reading in readings:
        {"warning": st.warning, "success": st.success}.get(reading.level, st.info)(reading.text)

    swept = [p for p in varying_hyperparams(current) if p != "dataset"]
    if comparison is not None:
        st.markdown(f"##### Groups: {summary.attrs['value_name']}")
        groups_view(group_table(comparison, spec))
        with st.expander("Each run"):
            runs_view(summary, swept)
    else:
        st.markdown(f"##### Summary: {summary.attrs['value_name']}")
        runs_view(summary, swept)
    c1, c2, c3, _ = st.columns([1, 1, 1, 2])
    c1.download_button(
        "Summary CSV",
        summary.to_csv(index=False),
        "lensboard-summary.csv",
        "text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="dl_summary",
    )
    c2.download_button(
        "Metrics CSV",
        metrics_wide(long).to_csv(index=False),
        "lensboard-metrics.csv",
        "text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="dl_metrics",
    )
    if comparison is not None:
        c3.download_button(
            "Groups CSV",
            group_table(comparison, spec).to_csv(index=False),
            "lensboard-groups.csv",
            "text/csv",
            icon=":material/download:",
            on_click="ignore",
            key="dl_groups",
        )

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
            right.caption(
                "Each line is a run, crossing one axis per hyperparameter; its colour is the result. "
                "Drag along an axis to highlight a range."
            )


def clicked() -> str | None:
    """The run id (or group label) of the point last clicked on the chart: the one to highlight."""
    chart = st.session_state.get("cmp_chart")
    points = chart.selection.points if chart and chart.get("selection") else []
    return points[0].get("legendgroup") if points else None


def runs_view(summary: pd.DataFrame, swept: list[str]) -> None:
    order = [
        "label",
        "value",
        "vs baseline",
        "from epoch",
        "s / epoch",
        *swept,
        "state",
        "epochs done",
        *[h for h in HYPERPARAMETERS if h not in swept],
        "settings",
    ]
    st.dataframe(
        summary,
        hide_index=True,
        width="stretch",
        column_order=order,
        column_config={
            "value": st.column_config.NumberColumn(summary.attrs["value_name"], format="%.4g"),
            "vs baseline": st.column_config.NumberColumn(
                f"vs baseline ({summary.attrs['diff_unit']})",
                format="%+.3g",
                help="This run's value minus the baseline run's",
            ),
            "lr": st.column_config.NumberColumn(format="%g"),
            "s / epoch": st.column_config.NumberColumn(format="%.2f"),
            "settings": st.column_config.TextColumn("other settings", help="A tracked script's own config keys"),
        },
    )


def groups_view(table: pd.DataFrame) -> None:
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "mean": st.column_config.NumberColumn(f"mean {table.attrs['value_name']}", format="%.4g"),
            "std": st.column_config.NumberColumn(
                format="%.3g", help="Standard deviation over the group's runs (n - 1)"
            ),
            "min": st.column_config.NumberColumn(format="%.4g"),
            "max": st.column_config.NumberColumn(format="%.4g"),
            "vs best": st.column_config.NumberColumn(
                f"vs best ({table.attrs['diff_unit']})", format="%+.3g", help="This group's mean minus the best group's"
            ),
            "p vs best": st.column_config.NumberColumn(
                format="%.3g", help=f"{TEST_NAME} p-value, best group against this one"
            ),
        },
    )
    st.caption(
        f"**How the verdicts are made:** {TEST_NAME} (two-sided, unequal variances) compares the values "
        f"of the best group's runs with each other group's; a difference is called real when p < "
        f"{THRESHOLD:g}, else within seed noise. A group of one run has no spread, so its noise is unknown "
        "and no verdict is given: train 3 seeds or more (Seeds on the Train page). When a group mixes other "
        "settings besides the seed, its spread is more than seed noise."
    )


one_sweep = selected["sweep_id"].notna().all() and selected["sweep_id"].nunique() == 1
show_sweep = (
    st.toggle(
        "Hyperparameter views (scatter and parallel coordinates)",
        value=bool(one_sweep),
        key=f"cmp_sweep_views_{bool(one_sweep)}",
        help="On by default when the chosen runs are one sweep: how each swept value relates to the result.",
    )
    if len(selected) >= 2
    else False
)
active = any_active(selected)
if active:
    st.caption(f":material/autorenew: Live: refreshing every {REFRESH_SECONDS:g} s while a chosen run trains.")
drawn = shown_signature(list(selected["id"]))  # before the view reads: a change while it draws is not missed
st.fragment(view)(list(selected["id"]))  # a click on the chart reruns only the view
watch(list(selected["id"]), drawn, active=active)  # live: redraw only when an epoch or a state changed
