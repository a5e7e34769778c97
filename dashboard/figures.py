"""Pure figure builders: frames from dashboard.tables, runs_table and groups in, plotly figures out."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative

from dashboard.groups import BANDS, ema, group_curve
from dashboard.tables import METRIC_NAMES, SPLIT_NAMES

PALETTE = qualitative.Plotly + qualitative.D3
DASHES = {"train": "dot", "val": "dash", "test": "solid"}
X_TITLES = {"epoch": "epoch", "elapsed": "elapsed training time (s)"}
LOG_PARAMS = ("lr", "weight_decay", "batch_size", "train_limit")
FADED = 0.25  # opacity of the runs not highlighted, and of the raw curve behind a smoothed one
BAND_OPACITY = 0.18  # fill of a group's spread band


def styled(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    """The house style of a chart: title on the left, axis titles, a white template, one height."""
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left"),
        xaxis_title=x,
        yaxis_title=y,
        template="plotly_white",
        height=440,
        margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="v", yanchor="top", y=1, x=1.01, font=dict(size=11)),
        hovermode="closest",
    )
    return fig


def color_map(values: Sequence) -> dict[str, str]:
    """A stable colour per distinct value (sorted, numbers numerically)."""
    distinct = sorted({str(v) for v in values}, key=_sort_key)
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(distinct)}


def _sort_key(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def _check(metric: str, x: str, smoothing: float) -> None:
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric must be one of {', '.join(METRIC_NAMES)}, got {metric!r}")
    if x not in X_TITLES:
        raise ValueError(f"x must be one of {', '.join(X_TITLES)}, got {x!r}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")


def _rgba(color: str, alpha: float) -> str:
    r, g, b = hex_to_rgb(color)
    return f"rgba({r}, {g}, {b}, {alpha})"


def _raw_behind(
    fig: go.Figure, xs: Sequence[float], ys: Sequence[float], color: str, group: str, opacity: float
) -> None:
    """The unsmoothed curve, faded, behind its smoothed line (no legend entry, no hover)."""
    fig.add_trace(
        go.Scatter(
            x=list(xs),
            y=list(ys),
            mode="lines",
            line=dict(color=color, width=1),
            opacity=FADED * opacity,
            legendgroup=group,
            showlegend=False,
            hoverinfo="skip",
            name="raw",
        )
    )


def _finish(fig: go.Figure, long: pd.DataFrame, metric: str, x: str, title: str, log_y: bool) -> go.Figure:
    y_title = f"{METRIC_NAMES[metric]}{' (%)' if metric == 'acc' else ''}"
    fig = styled(fig, title, X_TITLES[x], y_title + (" (log scale)" if log_y else ""))
    if log_y:
        fig.update_yaxes(type="log")
    if x == "epoch" and len(long) and long["epoch"].max() <= 20:
        fig.update_xaxes(dtick=1)
    return fig


def curves_figure(
    long: pd.DataFrame,
    runs: pd.DataFrame,
    *,
    metric: str = "loss",
    splits: Sequence[str] = ("train", "test"),
    x: str = "epoch",
    color_by: str = "arch",
    smoothing: float = 0.0,
    log_y: bool = False,
    highlight: str | None = None,
) -> go.Figure:
    """Overlay the curves of several runs: one colour per value of `color_by`, one dash per split.

    `long` comes from tables.metrics_long, `runs` from runs_table.runs_frame (only its
    selected rows). Accuracy is drawn in percent. `smoothing` (0..<1) draws an exponential
    moving average with the raw curve faded behind it; `highlight` (a run id) fades the others.
    """
    _check(metric, x, smoothing)
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
            lit = highlight is None or highlight == run["id"]
            ys = part[metric] * scale
            if smoothing:
                _raw_behind(fig, part[x], ys, colors[key], run["id"], 1.0 if lit else FADED)
                ys = ema(ys, smoothing)
            fig.add_trace(
                go.Scatter(
                    x=part[x],
                    y=list(ys),
                    mode="lines+markers",
                    name=f"{run['label']} · {SPLIT_NAMES[split]}",
                    legendgroup=run["id"],
                    line=dict(
                        color=colors[key],
                        dash=DASHES[split],
                        width=(2.5 if split == "test" else 1.8) + (1.5 if highlight == run["id"] else 0),
                    ),
                    marker=dict(size=5),
                    opacity=1.0 if lit else FADED,
                    hovertemplate=(
                        f"<b>{run['label']}</b><br>{color_by} = {key}<br>{SPLIT_NAMES[split]} "
                        f"{METRIC_NAMES[metric]}: %{{y:.4g}}<br>{X_TITLES[x]}: %{{x:.4g}}<extra></extra>"
                    ),
                )
            )
    title = f"{METRIC_NAMES[metric].capitalize()} by {X_TITLES[x].split(' (')[0]} · colour = {color_by}"
    return _finish(fig, long, metric, x, title, log_y)


def group_curves_figure(
    long: pd.DataFrame,
    groups: Sequence[tuple[str, Sequence[str]]],
    *,
    metric: str = "acc",
    splits: Sequence[str] = ("test",),
    x: str = "epoch",
    band: str = "std",
    smoothing: float = 0.0,
    log_y: bool = False,
    highlight: str | None = None,
) -> go.Figure:
    """One colour per group of runs (label, run ids), one dash per split: the mean of the group's runs
    at each epoch, and behind it a band for their spread (mean ± std, or min to max) where at least
    two runs reached that epoch. A group of one run is its plain curve. `smoothing` smooths each run
    before averaging, with the raw mean faded behind; `highlight` (a group label) fades the others.
    """
    _check(metric, x, smoothing)
    if band not in BANDS:
        raise ValueError(f"band must be one of {', '.join(BANDS)}, got {band!r}")
    fig = go.Figure()
    scale = 100.0 if metric == "acc" else 1.0
    for i, (label, run_ids) in enumerate(groups):
        color = PALETTE[i % len(PALETTE)]
        lit = highlight is None or highlight == label
        for split in splits:
            curve = group_curve(long, run_ids, split, metric, smoothing)
            if curve.empty:
                continue
            xs = curve["elapsed"] if x == "elapsed" else curve["epoch"]
            mean = curve["mean"] * scale
            spread = curve[curve["n"] >= 2]
            if len(spread):
                low, high = (
                    (spread["mean"] - spread["std"], spread["mean"] + spread["std"])
                    if band == "std"
                    else (spread["low"], spread["high"])
                )
                band_x = list(xs[spread.index]) + list(xs[spread.index])[::-1]
                fig.add_trace(
                    go.Scatter(
                        x=band_x,
                        y=list(high * scale) + list(low * scale)[::-1],
                        fill="toself",
                        mode="lines",
                        line=dict(width=0, color=color),
                        fillcolor=_rgba(color, BAND_OPACITY * (1 if lit else FADED)),
                        legendgroup=label,
                        showlegend=False,
                        hoverinfo="skip",
                        name=f"{label} · {SPLIT_NAMES[split]} · band",
                    )
                )
            if smoothing:
                raw = group_curve(long, run_ids, split, metric)
                _raw_behind(
                    fig,
                    raw["elapsed"] if x == "elapsed" else raw["epoch"],
                    raw["mean"] * scale,
                    color,
                    label,
                    1.0 if lit else FADED,
                )
            n = int(curve["n"].max())
            what = f"mean of {n} runs" if n > 1 else "1 run"
            fig.add_trace(
                go.Scatter(
                    x=list(xs),
                    y=list(mean),
                    mode="lines+markers",
                    name=f"{label} · {SPLIT_NAMES[split]} ({what})",
                    legendgroup=label,
                    opacity=1.0 if lit else FADED,
                    line=dict(
                        color=color,
                        dash=DASHES[split],
                        width=(2.5 if split == "test" else 1.8) + (1.5 if highlight == label else 0),
                    ),
                    marker=dict(size=5),
                    customdata=list(
                        zip(curve["n"], curve["std"].fillna(0) * scale, curve["low"] * scale, curve["high"] * scale)
                    ),
                    hovertemplate=(
                        f"<b>{label}</b><br>{SPLIT_NAMES[split]} {METRIC_NAMES[metric]}: mean %{{y:.4g}} "
                        f"of %{{customdata[0]}} run(s)<br>std %{{customdata[1]:.3g}}, "
                        f"min %{{customdata[2]:.4g}}, max %{{customdata[3]:.4g}}<br>"
                        f"{X_TITLES[x]}: %{{x:.4g}}<extra></extra>"
                    ),
                )
            )
    title = (
        f"{METRIC_NAMES[metric].capitalize()} by {X_TITLES[x].split(' (')[0]} · one colour per group, "
        f"band = {BANDS[band]}"
    )
    return _finish(fig, long, metric, x, title, log_y)


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
        fig.add_trace(
            go.Scatter(
                x=part["epoch"],
                y=part["value"],
                mode="lines+markers",
                name=run["label"],
                legendgroup=run["id"],
                line=dict(color=colors[key], width=2),
                marker=dict(size=5),
                hovertemplate=f"<b>{run['label']}</b><br>{name}: %{{y:.4g}}<br>epoch: %{{x}}<extra></extra>",
            )
        )
    return styled(fig, f"{name} by epoch · colour = {color_by}", "epoch", name)


def scatter_figure(summary: pd.DataFrame, param: str, *, color_by: str = "arch") -> go.Figure:
    """One hyperparameter against the summary value of each run (one dot per run)."""
    fig = go.Figure()
    value_name = summary.attrs.get("value_name", "value")
    data = summary.dropna(subset=["value"])
    colors = color_map(data[color_by]) if len(data) else {}
    for key, part in data.groupby(data[color_by].astype(str), sort=False):
        fig.add_trace(
            go.Scatter(
                x=part[param],
                y=part["value"],
                mode="markers",
                name=f"{color_by} = {key}",
                marker=dict(size=12, color=colors[key], line=dict(width=1, color="white")),
                text=part["label"],
                hovertemplate="%{text}<br>" + param + " = %{x}<br>value = %{y:.4g}<extra></extra>",
            )
        )
    fig = styled(fig, f"{value_name} against {param}", param, value_name)
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
    fig = go.Figure(
        go.Parcoords(
            line=dict(color=data["value"], colorscale="Viridis", showscale=True, reversescale="loss" in value_name),
            dimensions=dimensions,
        )
    )
    fig.update_layout(
        template="plotly_white",
        height=420,
        margin=dict(l=60, r=40, t=60, b=30),
        title=dict(text=f"Sweep overview: {value_name}", x=0, xanchor="left"),
    )
    return fig
