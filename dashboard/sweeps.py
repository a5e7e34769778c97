"""Pure builders behind the Sweeps page: a SweepReport in, frames, plotly figures and a plain-language
reading out. Nothing here imports Streamlit, so every function is tested on reports made by hand.

Accuracies are drawn in percent; losses as they are. "The best trials" are the best quarter (at least
BEST_AT_LEAST) of the trials that ran to the end.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from dashboard.figures import PALETTE, _layout, parallel_figure
from engine.runs.replay import Replay
from engine.runs.search import RULE_NAMES
from engine.runs.sweep_report import SweepReport, SweepSummary, TrialReport

OBJECTIVE_NAMES = {"val_acc": "validation accuracy", "val_loss": "validation loss",
                   "test_acc": "test accuracy", "test_loss": "test loss"}
PARAM_NAMES = {"lr": "the learning rate", "batch_size": "the batch size", "arch": "the architecture",
               "optimizer": "the optimizer", "weight_decay": "weight decay", "momentum": "momentum",
               "seed": "the seed", "epochs": "the number of epochs", "dataset": "the dataset",
               "val_split": "the validation split", "train_limit": "the training-set size"}
LOG_PARAMS = ("lr", "weight_decay")
BARELY = 0.1  # an importance share below this "barely mattered"
BEST_SHARE = 0.25  # the best trials: this share of the finished ones ...
BEST_AT_LEAST = 3  # ... but at least this many
STATE_COLORS = {"done": "#2ca02c", "pruned": "#ff7f0e", "running": "#1f77b4", "queued": "#9ca3af",
                "interrupted": "#9ca3af", "failed": "#d62728", "diverged": "#d62728", "cancelled": "#6b7280"}


# ---------------------------------------------------------------- small words


def objective_name(objective: str) -> str:
    return OBJECTIVE_NAMES.get(objective, objective)


def is_accuracy(objective: str) -> bool:
    return objective.endswith("acc")


def shown_value(value: float | None, objective: str) -> float | None:
    """As drawn: accuracy in percent, loss as is."""
    return None if value is None else value * 100 if is_accuracy(objective) else value


def value_text(value: float | None, objective: str) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if is_accuracy(objective) else f"{value:.4f}"


def axis_title(objective: str) -> str:
    return objective_name(objective) + (" (%)" if is_accuracy(objective) else "")


def param_text(value) -> str:
    return f"{value:.2g}" if isinstance(value, float) else str(value)


def trial_name(t: TrialReport) -> str:
    return f"#{t.number} · " + " · ".join(f"{k} {param_text(v)}" for k, v in t.params.items())


def sweep_label(s: SweepSummary) -> str:
    """How a sweep is named in the picker: its id, kind and progress."""
    kind = "grid" if s.search == "grid" else f"{s.search} search"
    active = f", {s.active} running or queued" if s.active else ""
    return f"{s.sweep} · {kind} · {s.runs}/{s.planned} runs{active}"


def finished(report: SweepReport) -> list[TrialReport]:
    """Trials that ran to the end and have a value."""
    return [t for t in report.trials if t.state == "done" and t.value is not None]


def best_trials(report: SweepReport) -> list[TrialReport]:
    """The best quarter (at least BEST_AT_LEAST) of the finished trials, best first."""
    done = sorted(finished(report), key=lambda t: t.value, reverse=report.direction == "maximize")
    return done[:max(BEST_AT_LEAST, math.ceil(BEST_SHARE * len(done)))]


# ---------------------------------------------------------------- frames


def trials_frame(report: SweepReport) -> pd.DataFrame:
    """One row per trial: number, state, value (as drawn), epochs, and the searched params."""
    rows = []
    for t in report.trials:
        row = {"#": t.number, "state": t.state, "value": shown_value(t.value, report.objective),
               "epochs": f"{t.epochs}/{t.budget}", "stopped after epoch": t.pruned_at}
        row.update({name: t.params.get(name) for name in report.names})
        row["run"] = t.run
        rows.append(row)
    return pd.DataFrame(rows, columns=["#", "state", "value", "epochs", "stopped after epoch", *report.names, "run"])


def _summary(report: SweepReport) -> pd.DataFrame:
    """The trials that have a value, shaped for dashboard.figures' parallel_figure."""
    df = pd.DataFrame([{**t.params, "value": shown_value(t.value, report.objective)}
                       for t in report.trials if t.value is not None], columns=[*report.names, "value"])
    df.attrs["value_name"] = axis_title(report.objective)
    return df


# ---------------------------------------------------------------- figures


def best_so_far_figure(report: SweepReport) -> go.Figure:
    """Each trial's value by trial number (coloured by state) and the best finished value so far."""
    fig = go.Figure()
    by_state: dict[str, list[TrialReport]] = {}
    for t in report.trials:
        if t.value is not None:
            by_state.setdefault(t.state, []).append(t)
    for state, trials in by_state.items():
        fig.add_trace(go.Scatter(
            x=[t.number for t in trials], y=[shown_value(t.value, report.objective) for t in trials],
            mode="markers", name=state, marker=dict(size=10, color=STATE_COLORS.get(state, "#6b7280"),
                                                    symbol="x" if state == "pruned" else "circle"),
            text=[trial_name(t) for t in trials], hovertemplate="%{text}<br>value %{y:.4g}<extra></extra>"))
    xs, ys, best = [], [], None
    better = (lambda a, b: a > b) if report.direction == "maximize" else (lambda a, b: a < b)
    for t in report.trials:
        if t.state == "done" and t.value is not None and (best is None or better(t.value, best)):
            best = t.value
        if best is not None:
            xs.append(t.number)
            ys.append(shown_value(best, report.objective))
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="best so far", line=dict(color="#111827", width=2.5,
                                                                                   shape="hv")))
    fig = _layout(fig, f"Best {objective_name(report.objective)} so far", "trial", axis_title(report.objective))
    if len(report.trials) <= 15:
        fig.update_xaxes(dtick=1)
    return fig


def importance_figure(report: SweepReport) -> go.Figure:
    """Optuna's importance of each searched hyperparameter, as shares of the whole."""
    ranked = sorted(report.importance.items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[100 * v for _, v in ranked], y=[k for k, _ in ranked], orientation="h",
                           marker_color=PALETTE[0], text=[f"{100 * v:.0f}%" for _, v in ranked],
                           textposition="outside", hovertemplate="%{y}: %{x:.1f}% of the importance<extra></extra>"))
    fig = _layout(fig, "Which hyperparameters mattered", "share of the importance (%)", "")
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
        fig.add_trace(go.Scatter(
            x=[t.params.get(name) for t in trials], y=[shown_value(t.value, report.objective) for t in trials],
            mode="markers", name="ran to the end" if state == "done" else "stopped early (value where it stopped)",
            marker=dict(size=11, color=STATE_COLORS[state], symbol="circle" if state == "done" else "x",
                        line=dict(width=1, color="white")),
            text=[trial_name(t) for t in trials], hovertemplate="%{text}<br>value %{y:.4g}<extra></extra>"))
    fig = _layout(fig, f"{objective_name(report.objective).capitalize()} against {name}", name,
                  axis_title(report.objective))
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
        fig.add_trace(go.Scatter(x=kept, y=[shown_value(t.curve[e], report.objective) for e in kept],
                                 mode="lines+markers", name=trial_name(t), legendgroup=t.run,
                                 line=dict(color=color, width=2), marker=dict(size=5),
                                 hovertemplate=f"{trial_name(t)}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>"))
        after = [e for e in epochs if cut is not None and e >= cut]
        if len(after) > 1:
            fig.add_trace(go.Scatter(x=after, y=[shown_value(t.curve[e], report.objective) for e in after],
                                     mode="lines", showlegend=False, legendgroup=t.run, opacity=0.35,
                                     line=dict(color=color, width=1.5, dash="dot"), hoverinfo="skip"))
        if cut is not None and cut in t.curve:
            fig.add_trace(go.Scatter(x=[cut], y=[shown_value(t.curve[cut], report.objective)], mode="markers",
                                     showlegend=False, legendgroup=t.run,
                                     marker=dict(symbol="x", size=13, color=color, line=dict(width=2)),
                                     hovertemplate=f"{trial_name(t)}<br>stopped after epoch {cut}<extra></extra>"))
    fig = _layout(fig, title or f"Every trial's {objective_name(report.objective)} (x: stopped there)", "epoch",
                  axis_title(report.objective))
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
    fig = go.Figure([
        go.Scatter(x=xs, y=budget, mode="lines", name="budget: every trial to its last epoch",
                   line=dict(color="#9ca3af", dash="dash", width=2)),
        go.Scatter(x=xs, y=spent, mode="lines+markers", name="epochs trained", fill="tozeroy",
                   line=dict(color=PALETTE[0], width=2.5)),
    ])
    fig = _layout(fig, "Epochs spent against the budget", "trial", "epochs (cumulative)")
    fig.update_layout(height=340, legend=dict(orientation="h", y=-0.25, x=0))
    return fig


# ---------------------------------------------------------------- what it says


def _names(names: Sequence[str]) -> str:
    words = [PARAM_NAMES.get(n, n) for n in names]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def best_values_text(report: SweepReport, name: str) -> str:
    """What the best trials used for `name`: a range of numbers, or the most common choice."""
    top = best_trials(report)
    values = [t.params.get(name) for t in top]
    if not values:
        return ""
    dim = next((d for d in report.spec.dimensions if d.name == name), None) if report.spec else None
    if (dim is not None and dim.is_range) or (all(isinstance(v, float) for v in values) and len(set(values)) > 2):
        low, high = min(values), max(values)
        return f"the best trials used {param_text(low)}" + (f" to {param_text(high)}" if high != low else "")
    value, count = Counter(values).most_common(1)[0]
    if count == len(values):
        return f"the best {len(values)} trials all used {param_text(value)}" if len(values) > 1 else \
            f"the best trial used {param_text(value)}"
    return f"{count} of the best {len(values)} trials used {param_text(value)}"


def reading(report: SweepReport) -> list[str]:
    """What the sweep found, in plain sentences computed from its trials."""
    if not report.trials:
        return ["No trial has started yet."]
    done = finished(report)
    out = []
    best = report.best
    if best is None:
        out.append("No trial has run to the end yet: the reading fills in as trials finish.")
    else:
        out.append(f"The best trial so far is {trial_name(best)}, with {value_text(best.value, report.objective)} "
                   f"{objective_name(report.objective)} after {best.epochs} epoch(s).")
    if report.importance:
        out += _importance_sentences(report, done)
    elif report.names and done:
        out.append(f"Which hyperparameters mattered shows once at least two trials have run to the end with "
                   f"different results ({len(done)} so far).")
    out += _stopping_sentences(report)
    if not report.on_validation:
        out.append("These runs held out no validation images, so the values are on the test set: fine to see what "
                   "changed what, not to pick a model (a search always holds out a validation split).")
    return out


def _importance_sentences(report: SweepReport, done: list[TrialReport]) -> list[str]:
    """Which hyperparameters mattered, by Optuna's importance over the trials that ran to the end. One that
    took a single value in all of them (early stopping stopped the others) cannot be weighed: said so."""
    constant = [n for n in report.names if len({repr(t.params.get(n)) for t in done}) == 1]
    ranked = sorted(((n, v) for n, v in report.importance.items() if n not in constant), key=lambda kv: -kv[1])
    out = []
    if ranked:
        top, share = ranked[0]
        over = f" over the {len(done)} trials that ran to the end" if len(done) < len(report.trials) else ""
        said = f"{PARAM_NAMES.get(top, top).capitalize()} mattered most ({100 * share:.0f}% of the importance{over})"
        used = best_values_text(report, top)
        said += f": {used}" if used else ""
        next_ = [(n, v) for n, v in ranked[1:] if v >= BARELY]
        if next_:
            said += "; then " + ", ".join(f"{PARAM_NAMES.get(n, n)} ({100 * v:.0f}%)" for n, v in next_)
        barely = [n for n, v in ranked[1:] if v < BARELY]
        if barely:
            said += f"; {_names(barely)} barely mattered"
        out.append(said + ".")
    for name in constant:
        value = param_text(done[0].params.get(name))
        out.append(f"Every trial that ran to the end used {value} for {PARAM_NAMES.get(name, name)}"
                   + (" (the others were stopped early)" if report.prune != "none" else "")
                   + ", so the importance cannot weigh it.")
    return out


def _stopping_sentences(report: SweepReport) -> list[str]:
    ended = [t for t in report.trials if t.state in ("done", "pruned")]
    if report.prune == "none" or not ended:
        return []
    pruned = [t for t in ended if t.state == "pruned"]
    spent, budget = sum(t.epochs for t in ended), sum(t.budget for t in ended)
    said = (f"Early stopping ({RULE_NAMES[report.prune]}) stopped {len(pruned)} of {len(ended)} finished trials "
            f"and saved {100 * (1 - spent / budget):.0f}% of their epochs" if budget else "")
    best = report.best
    if best is not None and pruned:
        better = (lambda a, b: a > b) if report.direction == "maximize" else (lambda a, b: a < b)
        ahead = [t for t in pruned if t.pruned_at in t.curve and t.pruned_at in best.curve
                 and better(t.curve[t.pruned_at], best.curve[t.pruned_at])]
        if ahead:
            said += (f"; it stopped {len(ahead)} trial(s) that were ahead of the best one at the epoch they were "
                     f"stopped ({', '.join(f'#{t.number}' for t in ahead)}): they might have won")
        else:
            said += "; every trial it stopped was behind the best one at the same epoch"
    return [said + "."] if said else []


def replay_reading(report: SweepReport, replay: Replay) -> str:
    """'Had ASHA been on, it would have stopped 9 of 12 runs, saved 61% of the epochs, and the winner would
    have survived' (or cost the best run), from the replay's numbers."""
    rule = RULE_NAMES[replay.rule]
    n = len([t for t in report.trials if t.curve])
    if not replay.stopped:
        why = (" (the median rule waits until 5 runs have finished before it stops any)"
               if replay.rule == "median" and n <= 5 else "")
        return f"Had {rule} been on, it would have stopped none of these {n} runs{why}: no epochs saved."
    said = (f"Had {rule} been on, it would have stopped {len(replay.stopped)} of {n} runs and saved "
            f"{100 * replay.epochs_saved_fraction:.0f}% of the epochs")
    if replay.winner_survives is None:
        return said + "; no run finished, so there is no winner to keep."
    winner = next(t for t in report.trials if t.run == replay.winner)
    if replay.winner_survives:
        return said + f", and the winner ({trial_name(winner)}) would have survived."
    return (said + f", but it would have stopped the winner ({trial_name(winner)}) at epoch "
            f"{replay.stopped_at[winner.run]}: with these settings {rule} would have cost you the best run.")
