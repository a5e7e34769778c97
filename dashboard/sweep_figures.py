"""Pure figures behind the Sweeps page: a SweepReport in, plotly figures out (how the search went, which
hyperparameters mattered, every trial's curve, epochs against the budget). Nothing here imports Streamlit.

Accuracies are drawn in percent; losses as they are.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from dashboard.figures import PALETTE, parallel_figure, styled
from dashboard.sweeps import axis_title, objective_name, shown_value, trial_name
from engine.runs.sweep_report import SweepReport, TrialReport

LOG_PARAMS = ("lr", "weight_decay")
STATE_COLORS = {
    "done": "#2ca02c",
    "pruned": "#ff7f0e",
    "running": "#1f77b4",
    "queued": "#9ca3af",
    "interrupted": "#9ca3af",
    "failed": "#d62728",
    "diverged": "#d62728",
    "cancelled": "#6b7280",
}


def _summary(report: SweepReport) -> pd.DataFrame:
    """The trials that have a value, shaped for dashboard.figures' parallel_figure."""
    df = pd.DataFrame(
        [{**t.params, "value": shown_value(t.value, report.objective)} for t in report.trials if t.value is not None],
        columns=[*report.names, "value"],
    )
    df.attrs["value_name"] = axis_title(report.objective)
    return df


def best_so_far_figure(report: SweepReport) -> go.Figure:
    """Each trial's value by trial number (coloured by state) and the best finished value so far."""
    fig = go.Figure()
    by_state: dict[str, list[TrialReport]] = {}
    for t in report.trials:
        if t.value is not None:
            by_state.setdefault(t.state, []).append(t)
    for state, trials in by_state.items():
        fig.add_trace(
            go.Scatter(
                x=[t.number for t in trials],
                y=[shown_value(t.value, report.objective) for t in trials],
                mode="markers",
                name=state,
                marker=dict(
                    size=10, color=STATE_COLORS.get(state, "#6b7280"), symbol="x" if state == "pruned" else "circle"
                ),
                text=[trial_name(t) for t in trials],
                hovertemplate="%{text}<br>value %{y:.4g}<extra></extra>",
            )
        )
    xs, ys, best = [], [], None
    better = (lambda a, b: a > b) if report.direction == "maximize" else (lambda a, b: a < b)
    for t in report.trials:
        if t.state == "done" and t.value is not None and (best is None or better(t.value, best)):
            best = t.value
        if best is not None:
            xs.append(t.number)
            ys.append(shown_value(best, report.objective))
    fig.add_trace(
        go.Scatter(x=xs, y=ys, mode="lines", name="best so far", line=dict(color="#111827", width=2.5, shape="hv"))
    )
    fig = styled(fig, f"Best {objective_name(report.objective)} so far", "trial", axis_title(report.objective))
    if len(report.trials) <= 15:
        fig.update_xaxes(dtick=1)
    return fig


def importance_figure(report: SweepReport) -> go.Figure:
    """Optuna's importance of each searched hyperparameter, as shares of the whole."""
    ranked = sorted(report.importance.items(), key=lambda kv: kv[1])
    fig = go.Figure(
        go.Bar(
            x=[100 * v for _, v in ranked],
            y=[k for k, _ in ranked],
            orientation="h",
            marker_color=PALETTE[0],
            text=[f"{100 * v:.0f}%" for _, v in ranked],
            textposition="outside",
            hovertemplate="%{y}: %{x:.1f}% of the importance<extra></extra>",
        )
    )
    fig = styled(fig, "Which hyperparameters mattered", "share of the importance (%)", "")
    fig.update_layout(height=max(220, 70 * len(ranked) + 100), showlegend=False)
    fig.update_xaxes(range=[0, 110])
    return fig


def param_figure(report: SweepReport, name: str) -> go.Figure:
    """The value of every trial against one hyperparameter; pruned trials (value where they stopped) as x."""
    fig = go.Figure()
    for state in ("done", "pruned"):
        trials = [t for t in report.trials if t.state == state and t.value is not None]
        if not trials:
            continue
        fig.add_trace(
            go.Scatter(
                x=[t.params.get(name) for t in trials],
                y=[shown_value(t.value, report.objective) for t in trials],
                mode="markers",
                name="ran to the end" if state == "done" else "stopped early (value where it stopped)",
                marker=dict(
                    size=11,
                    color=STATE_COLORS[state],
                    symbol="circle" if state == "done" else "x",
                    line=dict(width=1, color="white"),
                ),
                text=[trial_name(t) for t in trials],
                hovertemplate="%{text}<br>value %{y:.4g}<extra></extra>",
            )
        )
    fig = styled(
        fig, f"{objective_name(report.objective).capitalize()} against {name}", name, axis_title(report.objective)
    )
    values = [t.params.get(name) for t in report.trials]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) < len(values):
        fig.update_xaxes(type="category")
    elif name in LOG_PARAMS and numbers and min(numbers) > 0 and max(numbers) / min(numbers) >= 10:
        fig.update_xaxes(type="log")
    fig.update_layout(height=340, legend=dict(orientation="h", y=-0.25, x=0))
    return fig


def parallel_coordinates_figure(report: SweepReport) -> go.Figure:
    """One axis per searched hyperparameter and one for the value; lines coloured by the value."""
    fig = parallel_figure(_summary(report), report.names)
    fig.update_layout(title=dict(text=f"Every trial across the space: {axis_title(report.objective)}"))
    return fig


def curves_figure(report: SweepReport, stops: dict[str, int] | None = None, title: str | None = None) -> go.Figure:
    """Every trial's objective by epoch; where a trial was stopped, an x marks the epoch.

    `stops` (run -> epoch; default: where early stopping stopped them) draws each stopped curve solid up
    to that epoch and faint after it: what a replay says would not have been trained.
    """
    stops = {t.run: t.pruned_at for t in report.trials if t.pruned_at} if stops is None else stops
    fig = go.Figure()
    for i, t in enumerate(report.trials):
        if not t.curve:
            continue
        color = PALETTE[i % len(PALETTE)]
        epochs = sorted(t.curve)
        cut = stops.get(t.run)
        kept = [e for e in epochs if cut is None or e <= cut]
        fig.add_trace(
            go.Scatter(
                x=kept,
                y=[shown_value(t.curve[e], report.objective) for e in kept],
                mode="lines+markers",
                name=trial_name(t),
                legendgroup=t.run,
                line=dict(color=color, width=2),
                marker=dict(size=5),
                hovertemplate=f"{trial_name(t)}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>",
            )
        )
        after = [e for e in epochs if cut is not None and e >= cut]
        if len(after) > 1:
            fig.add_trace(
                go.Scatter(
                    x=after,
                    y=[shown_value(t.curve[e], report.objective) for e in after],
                    mode="lines",
                    showlegend=False,
                    legendgroup=t.run,
                    opacity=0.35,
                    line=dict(color=color, width=1.5, dash="dot"),
                    hoverinfo="skip",
                )
            )
        if cut is not None and cut in t.curve:
            fig.add_trace(
                go.Scatter(
                    x=[cut],
                    y=[shown_value(t.curve[cut], report.objective)],
                    mode="markers",
                    showlegend=False,
                    legendgroup=t.run,
                    marker=dict(symbol="x", size=13, color=color, line=dict(width=2)),
                    hovertemplate=f"{trial_name(t)}<br>stopped after epoch {cut}<extra></extra>",
                )
            )
    fig = styled(
        fig,
        title or f"Every trial's {objective_name(report.objective)} (x: stopped there)",
        "epoch",
        axis_title(report.objective),
    )
    longest = max((t.budget for t in report.trials), default=0)
    if longest <= 20:
        fig.update_xaxes(dtick=1)
    return fig


def epochs_figure(report: SweepReport) -> go.Figure:
    """Epochs spent so far against the budget (every trial trained to its last epoch), trial by trial."""
    spent, budget, xs = [], [], []
    total_spent = total_budget = 0
    for t in report.trials:
        total_spent += t.epochs
        total_budget += t.budget
        xs.append(t.number)
        spent.append(total_spent)
        budget.append(total_budget)
    fig = go.Figure(
        [
            go.Scatter(
                x=xs,
                y=budget,
                mode="lines",
                name="budget: every trial to its last epoch",
                line=dict(color="#9ca3af", dash="dash", width=2),
            ),
            go.Scatter(
                x=xs,
                y=spent,
                mode="lines+markers",
                name="epochs trained",
                fill="tozeroy",
                line=dict(color=PALETTE[0], width=2.5),
            ),
        ]
    )
    fig = styled(fig, "Epochs spent against the budget", "trial", "epochs (cumulative)")
    fig.update_layout(height=340, legend=dict(orientation="h", y=-0.25, x=0))
    return fig
