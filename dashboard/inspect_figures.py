"""Pure builders behind the Inspect page: analysis results in, figures, frames and images out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.figures import curves_figure
from engine.ml.analysis import ClassAccuracy, ClassProbability
from engine.ml.inspection import TraceRow


def confusion_figure(cm: np.ndarray, classes: list[str]) -> go.Figure:
    """Heatmap of the confusion matrix: rows are the true class, columns the prediction.

    The colour shows the share of each true class (so rare classes are as visible as
    common ones); the hover and the cell text give the counts.
    """
    cm = np.asarray(cm)
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    labels = [str(c) for c in classes]
    text = [[str(v) if v else "" for v in row] for row in cm]
    fig = go.Figure(
        go.Heatmap(
            z=share * 100,
            x=labels,
            y=labels,
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=100,
            colorbar=dict(title="% of true class", ticksuffix="%"),
            customdata=cm,
            hovertemplate="true <b>%{y}</b> predicted <b>%{x}</b><br>%{customdata} images "
            "(%{z:.1f}% of this class)<extra></extra>",
        )
    )
    fig.update_layout(
        title=dict(text="Confusion matrix (test set)", x=0),
        template="plotly_white",
        xaxis=dict(title="predicted class", type="category", side="bottom"),
        yaxis=dict(title="true class", type="category", autorange="reversed"),
        height=max(360, 34 * len(labels) + 120),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fig


def top_confusions(cm: np.ndarray, classes: list[str], n: int = 3) -> list[tuple[str, str, int]]:
    """The n most frequent (true, predicted, count) mistakes, most frequent first."""
    off = np.array(cm, dtype=np.int64).copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:n]
    pairs = [np.unravel_index(i, off.shape) for i in order]
    return [(classes[t], classes[p], int(off[t, p])) for t, p in pairs if off[t, p] > 0]


def per_class_frame(per_class: list[ClassAccuracy]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "class": [p.name for p in per_class],
            "accuracy %": [None if p.accuracy is None else round(100 * p.accuracy, 2) for p in per_class],
            "correct": [p.correct for p in per_class],
            "images": [p.total for p in per_class],
            "most often mistaken for": [p.most_confused_with or "–" for p in per_class],
        }
    )


def per_class_figure(per_class: list[ClassAccuracy]) -> go.Figure:
    """Horizontal bars of per-class test accuracy, the weakest class highlighted."""
    names = [str(p.name) for p in per_class]
    acc = [0.0 if p.accuracy is None else 100 * p.accuracy for p in per_class]
    worst = int(np.argmin(acc)) if acc else -1
    colors = ["#d62728" if i == worst else "#1f77b4" for i in range(len(acc))]
    fig = go.Figure(
        go.Bar(
            x=acc,
            y=names,
            orientation="h",
            marker_color=colors,
            text=[f"{a:.1f}%" for a in acc],
            textposition="auto",
            hovertemplate="%{y}: %{x:.2f}%<extra></extra>",
        )
    )
    fig.update_layout(
        title=dict(text="Accuracy per class (weakest in red)", x=0),
        template="plotly_white",
        xaxis=dict(title="test accuracy (%)", range=[0, 100.5]),
        yaxis=dict(type="category", autorange="reversed"),
        height=max(320, 28 * len(names) + 110),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return fig


def trace_frame(rows: list[TraceRow]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "step": [r.step for r in rows],
            "layer": [r.layer for r in rows],
            "output shape": [r.shape_text for r in rows],
            "parameters": [r.params for r in rows],
            "how the parameters add up": [r.formula for r in rows],
        }
    )


def trace_path(rows: list[TraceRow], skip: tuple[str, ...] = ("ReLU", "Dropout")) -> str:
    """The course's one-line trace: 1x28x28 → 16x28x28 → ... → 10 (activations left out)."""
    return " → ".join(r.shape_text for r in rows if r.kind not in skip)


def top_k_figure(top: list[ClassProbability]) -> go.Figure:
    names = [str(t.name) for t in top]
    probs = [100 * t.probability for t in top]
    fig = go.Figure(
        go.Bar(
            x=probs,
            y=names,
            orientation="h",
            text=[f"{p:.1f}%" for p in probs],
            textposition="auto",
            marker_color=["#2ca02c"] + ["#9ecae1"] * (len(top) - 1),
            hovertemplate="%{y}: %{x:.2f}%<extra></extra>",
        )
    )
    fig.update_layout(
        title=dict(text=f"Top {len(top)} classes", x=0),
        template="plotly_white",
        xaxis=dict(title="probability (%)", range=[0, 100]),
        yaxis=dict(type="category", autorange="reversed"),
        height=80 + 45 * len(top),
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return fig


def enlarge(image: np.ndarray, size: int = 96) -> np.ndarray:
    """A [0, 1] image (H, W) or (H, W, 3) scaled up with nearest neighbours to about `size` pixels,
    as uint8: small images stay crisp instead of blurred."""
    img = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    factor = max(1, int(round(size / max(img.shape[0], img.shape[1]))))
    img = img.repeat(factor, axis=0).repeat(factor, axis=1)
    return (img * 255).round().astype(np.uint8)


def mistake_caption(true_name: str, pred_name: str, confidence: float) -> str:
    return f"true {true_name} → said {pred_name} ({100 * confidence:.0f}%)"


def single_run_curves(long: pd.DataFrame, run: pd.DataFrame, metric: str) -> go.Figure:
    """The shared curves figure for one run: traces named by split only, legend below the plot."""
    fig = curves_figure(long, run, metric=metric, splits=("train", "val", "test"))
    for trace in fig.data:
        trace.name = trace.name.rsplit(" · ", 1)[-1]
    title = "Loss by epoch" if metric == "loss" else "Accuracy by epoch (%)"
    fig.update_layout(
        title=dict(text=title), height=360, legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right")
    )
    return fig
