"""Pure builders behind the Sweeps page: a SweepReport in, the trials table and a plain-language reading out
(its figures are in dashboard/sweep_figures.py). Nothing here imports Streamlit, so every function is tested
on reports made by hand.

Accuracies are shown in percent; losses as they are. "The best trials" are the best quarter (at least
BEST_AT_LEAST) of the trials that ran to the end.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import pandas as pd

from engine.runs.replay import Replay
from engine.runs.search import RULE_NAMES
from engine.runs.sweep_report import SweepReport, SweepSummary, TrialReport

OBJECTIVE_NAMES = {
    "val_acc": "validation accuracy",
    "val_loss": "validation loss",
    "test_acc": "test accuracy",
    "test_loss": "test loss",
}
PARAM_NAMES = {
    "lr": "the learning rate",
    "batch_size": "the batch size",
    "arch": "the architecture",
    "optimizer": "the optimizer",
    "weight_decay": "weight decay",
    "momentum": "momentum",
    "seed": "the seed",
    "epochs": "the number of epochs",
    "dataset": "the dataset",
    "val_split": "the validation split",
    "train_limit": "the training-set size",
}
BARELY = 0.1  # an importance share below this "barely mattered"
BEST_SHARE = 0.25  # the best trials: this share of the finished ones ...
BEST_AT_LEAST = 3  # ... but at least this many

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


def param_text(value: object) -> str:
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
    return done[: max(BEST_AT_LEAST, math.ceil(BEST_SHARE * len(done)))]


# ---------------------------------------------------------------- frames


def trials_frame(report: SweepReport) -> pd.DataFrame:
    """One row per trial: number, state, value (as drawn), epochs, and the searched params."""
    rows = []
    for t in report.trials:
        row = {
            "#": t.number,
            "state": t.state,
            "value": shown_value(t.value, report.objective),
            "epochs": f"{t.epochs}/{t.budget}",
            "stopped after epoch": t.pruned_at,
        }
        row.update({name: t.params.get(name) for name in report.names})
        row["run"] = t.run
        rows.append(row)
    return pd.DataFrame(rows, columns=["#", "state", "value", "epochs", "stopped after epoch", *report.names, "run"])


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
        return (
            f"the best {len(values)} trials all used {param_text(value)}"
            if len(values) > 1
            else f"the best trial used {param_text(value)}"
        )
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
        out.append(
            f"The best trial so far is {trial_name(best)}, with {value_text(best.value, report.objective)} "
            f"{objective_name(report.objective)} after {best.epochs} epoch(s)."
        )
    if report.importance:
        out += _importance_sentences(report, done)
    elif report.names and done:
        out.append(
            f"Which hyperparameters mattered shows once at least two trials have run to the end with "
            f"different results ({len(done)} so far)."
        )
    out += _stopping_sentences(report)
    if not report.on_validation:
        out.append(
            "These runs held out no validation images, so the values are on the test set: fine to see what "
            "changed what, not to pick a model (a search always holds out a validation split)."
        )
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
        out.append(
            f"Every trial that ran to the end used {value} for {PARAM_NAMES.get(name, name)}"
            + (" (the others were stopped early)" if report.prune != "none" else "")
            + ", so the importance cannot weigh it."
        )
    return out


def _stopping_sentences(report: SweepReport) -> list[str]:
    ended = [t for t in report.trials if t.state in ("done", "pruned")]
    if report.prune == "none" or not ended:
        return []
    pruned = [t for t in ended if t.state == "pruned"]
    spent, budget = sum(t.epochs for t in ended), sum(t.budget for t in ended)
    said = (
        f"Early stopping ({RULE_NAMES[report.prune]}) stopped {len(pruned)} of {len(ended)} finished trials "
        f"and saved {100 * (1 - spent / budget):.0f}% of their epochs"
        if budget
        else ""
    )
    best = report.best
    if best is not None and pruned:
        better = (lambda a, b: a > b) if report.direction == "maximize" else (lambda a, b: a < b)
        ahead = [
            t
            for t in pruned
            if t.pruned_at in t.curve
            and t.pruned_at in best.curve
            and better(t.curve[t.pruned_at], best.curve[t.pruned_at])
        ]
        if ahead:
            said += (
                f"; it stopped {len(ahead)} trial(s) that were ahead of the best one at the epoch they were "
                f"stopped ({', '.join(f'#{t.number}' for t in ahead)}): they might have won"
            )
        else:
            said += "; every trial it stopped was behind the best one at the same epoch"
    return [said + "."] if said else []


def replay_reading(report: SweepReport, replay: Replay) -> str:
    """'Had ASHA been on, it would have stopped 9 of 12 runs, saved 61% of the epochs, and the winner would
    have survived' (or cost the best run), from the replay's numbers."""
    rule = RULE_NAMES[replay.rule]
    n = len([t for t in report.trials if t.curve])
    if not replay.stopped:
        why = (
            " (the median rule waits until 5 runs have finished before it stops any)"
            if replay.rule == "median" and n <= 5
            else ""
        )
        return f"Had {rule} been on, it would have stopped none of these {n} runs{why}: no epochs saved."
    said = (
        f"Had {rule} been on, it would have stopped {len(replay.stopped)} of {n} runs and saved "
        f"{100 * replay.epochs_saved_fraction:.0f}% of the epochs"
    )
    if replay.winner_survives is None:
        return said + "; no run finished, so there is no winner to keep."
    winner = next(t for t in report.trials if t.run == replay.winner)
    if replay.winner_survives:
        return said + f", and the winner ({trial_name(winner)}) would have survived."
    return (
        said + f", but it would have stopped the winner ({trial_name(winner)}) at epoch "
        f"{replay.stopped_at[winner.run]}: with these settings {rule} would have cost you the best run."
    )
