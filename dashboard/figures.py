"""Pure figure builders: frames from dashboard.tables in, plotly figures out."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from dashboard.tables import METRIC_NAMES, SPLIT_NAMES

PALETTE = qualitative.Plotly + qualitative.D3
DASHES = {"train": "dot", "val": "dash", "test": "solid"}
X_TITLES = {"epoch": "epoch", "elapsed": "elapsed training time (s)"}
LOG_PARAMS = ("lr", "weight_decay", "batch_size", "train_limit")


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left"), xaxis_title=x, yaxis_title=y,
        template="plotly_white", height=440, margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="v", yanchor="top", y=1, x=1.01, font=dict(size=11)),
        hovermode="closest",
    )
    return fig


def color_map(values: Sequence) -> dict[str, str]:
    """A stable colour per distinct value (sorted, numbers numerically)."""
    distinct = sorted({str(v) for v in values}, key=_sort_key)
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(distinct)}


def _sort_key(text: str):
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def curves_figure(long: pd.DataFrame, runs: pd.DataFrame, *, metric: str = "loss",
                  splits: Sequence[str] = ("train", "test"), x: str = "epoch",
                  color_by: str = "arch") -> go.Figure:
    """Overlay the curves of several runs: one colour per value of `color_by`, one dash per split.

    `long` comes from tables.metrics_long, `runs` from tables.runs_frame (only its
    selected rows). Accuracy is drawn in percent.
    """
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {', '.join(METRIC_NAMES)}, got {metric!r}")
    if x not in X_TITLES:
        raise ValueError(f"x must be one of {', '.join(X_TITLES)}, got {x!r}")
    fig = go.Figure()
    colors = color_map(runs[color_by]) if len(runs) else {}
    scale = 100.0 if metric == "acc" else 1.0
    parts = {k: g.sort_values("epoch") for k, g in long.groupby(["run", "split"], sort=False)}
    for run in runs.to_dict("records"):
        key = str(run[color_by])
        for split in splits:
            part = parts.get((run["id"], split))
            if part is None:
                continue
            fig.add_trace(go.Scatter(
                x=part[x], y=part[metric] * scale, mode="lines+markers",
                name=f"{run['label']} · {SPLIT_NAMES[split]}", legendgroup=run["id"],
                line=dict(color=colors[key], dash=DASHES[split], width=2.5 if split == "test" else 1.8),
                marker=dict(size=5),
                hovertemplate=(f"<b>{run['label']}</b><br>{color_by} = {key}<br>{SPLIT_NAMES[split]} "
                               f"{METRIC_NAMES[metric]}: %{{y:.4g}}<br>{X_TITLES[x]}: %{{x:.4g}}<extra></extra>"),
            ))
    y_title = f"{METRIC_NAMES[metric]}{' (%)' if metric == 'acc' else ''}"
    title = f"{METRIC_NAMES[metric].capitalize()} by {X_TITLES[x].split(' (')[0]} · colour = {color_by}"
    fig = _layout(fig, title, X_TITLES[x], y_title)
    if x == "epoch" and len(long) and long["epoch"].max() <= 20:
        fig.update_xaxes(dtick=1)
    return fig


def values_figure(frame: pd.DataFrame, runs: pd.DataFrame, name: str, *, color_by: str = "arch") -> go.Figure:
    """One value a script logged (tables.extra_metric_frame) by epoch, one line per run."""
    fig = go.Figure()
    colors = color_map(runs[color_by]) if len(runs) else {}
    parts = dict(tuple(frame.groupby("run", sort=False)))
    for run in runs.to_dict("records"):
        part = parts.get(run["id"])
        if part is None:
            continue
        key = str(run[color_by])
        fig.add_trace(go.Scatter(
            x=part["epoch"], y=part["value"], mode="lines+markers", name=run["label"], legendgroup=run["id"],
            line=dict(color=colors[key], width=2), marker=dict(size=5),
            hovertemplate=f"<b>{run['label']}</b><br>{name}: %{{y:.4g}}<br>epoch: %{{x}}<extra></extra>"))
    return _layout(fig, f"{name} by epoch · colour = {color_by}", "epoch", name)


def scatter_figure(summary: pd.DataFrame, param: str, *, color_by: str = "arch") -> go.Figure:
    """One hyperparameter against the summary value of each run (one dot per run)."""
    fig = go.Figure()
    value_name = summary.attrs.get("value_name", "value")
    data = summary.dropna(subset=["value"])
    colors = color_map(data[color_by]) if len(data) else {}
    for key, part in data.groupby(data[color_by].astype(str), sort=False):
        fig.add_trace(go.Scatter(
            x=part[param], y=part["value"], mode="markers", name=f"{color_by} = {key}",
            marker=dict(size=12, color=colors[key], line=dict(width=1, color="white")),
            text=part["label"], hovertemplate="%{text}<br>" + param + " = %{x}<br>value = %{y:.4g}<extra></extra>",
        ))
    fig = _layout(fig, f"{value_name} against {param}", param, value_name)
    numeric = pd.to_numeric(data[param], errors="coerce") if len(data) else pd.Series(dtype=float)
    if param in LOG_PARAMS and len(numeric) and (numeric > 0).all() and numeric.max() / numeric.min() >= 10:
        fig.update_xaxes(type="log")
    elif numeric.isna().all():
        fig.update_xaxes(type="category")
    return fig


def parallel_figure(summary: pd.DataFrame, params: Sequence[str]) -> go.Figure:
    """Parallel coordinates: one axis per swept hyperparameter, the last axis the value.

    Text-valued parameters (arch, optimizer) become axes with one tick per value;
    lines are coloured by the value so the good region of the grid stands out.
    """
    data = summary.dropna(subset=["value"]).reset_index(drop=True)
    dimensions = []
    for name in params:
        column = data[name]
        numeric = pd.to_numeric(column, errors="coerce")
        if numeric.notna().all():
            log = name in LOG_PARAMS and (numeric > 0).all() and numeric.max() / numeric.min() >= 10
            values = numeric.map(math.log10) if log else numeric
            dim = dict(label=f"log10 {name}" if log else name, values=values)
        else:
            labels = sorted(column.astype(str).unique())
            codes = column.astype(str).map({v: i for i, v in enumerate(labels)})
            dim = dict(label=name, values=codes, tickvals=list(range(len(labels))), ticktext=labels)
        dimensions.append(dim)
    value_name = summary.attrs.get("value_name", "value")
    dimensions.append(dict(label=value_name, values=data["value"]))
    fig = go.Figure(go.Parcoords(
        line=dict(color=data["value"], colorscale="Viridis", showscale=True,
                  reversescale="loss" in value_name),
        dimensions=dimensions,
    ))
    fig.update_layout(template="plotly_white", height=420, margin=dict(l=60, r=40, t=60, b=30),
                      title=dict(text=f"Sweep overview: {value_name}", x=0, xanchor="left"))
    return fig
