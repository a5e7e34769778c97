"""The figure of assignment 4: one line per change over the epochs, the baseline drawn thicker and dark."""

from __future__ import annotations

import plotly.graph_objects as go

from dashboard.assignments.plan import RunStatus

METRICS = {"test_acc": "test accuracy (%)", "train_loss": "training loss", "test_loss": "test loss"}
PALETTE = ["#222222", "#1f77b4", "#17becf", "#d62728", "#ff7f0e", "#2ca02c"]


def overlay_figure(runs: list[RunStatus], metric: str = "test_acc") -> go.Figure:
    """One line per run of assignment 4 over epochs; the baseline drawn thicker and dark."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    scale = 100.0 if metric.endswith("acc") else 1.0
    fig = go.Figure()
    # the baseline is drawn last so that a run sharing its first epochs (10 epochs) does not hide it
    order = sorted(range(len(runs)), key=lambda i: runs[i].planned.key == "baseline")
    for i in order:
        s = runs[i]
        rows = sorted(s.metrics, key=lambda r: r["epoch"])
        if not rows:
            continue
        base = s.planned.key == "baseline"
        fig.add_trace(
            go.Scatter(
                legendrank=1 if base else 10 + i,
                x=[r["epoch"] for r in rows],
                y=[scale * r[metric] for r in rows],
                mode="lines+markers",
                name=s.planned.label,
                line=dict(width=3.5 if base else 2, color=PALETTE[i % len(PALETTE)], dash="solid" if base else None),
                hovertemplate=(
                    f"<b>{s.planned.label}</b><br>epoch %{{x}}<br>{METRICS[metric]}: %{{y:.4g}}<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        title=dict(text=f"{METRICS[metric].capitalize()} by epoch, one line per change", x=0),
        xaxis_title="epoch",
        yaxis_title=METRICS[metric],
        template="plotly_white",
        height=380,
        margin=dict(l=10, r=10, t=50, b=10),
        xaxis=dict(dtick=1),
    )
    return fig
