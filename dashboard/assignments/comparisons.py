"""The answers of assignments 3 and 4, worked out from the measurements: which model did better and
whether it was worth it, and what each hyperparameter change did against the baseline.

With several seeds per run, each answer says whether a difference is beyond seed noise (Welch's
t-test on the final test accuracy of each seed, engine.runs.compare); only the "why" sentences are
fixed text.
"""

from __future__ import annotations

import math

import pandas as pd

from dashboard.assignments.export import Section, md_table
from dashboard.assignments.measures import (
    images_in_test_set,
    largest_layer,
    mean_summary,
    parameter_count,
    pct,
    points,
    seed_group,
    spread,
    steps_per_epoch,
    summarise,
)
from dashboard.assignments.plan import CHANGES, Assignment, RunStatus, seed_runs, status_line
from engine.runs.records import RunState
from engine.runs.verdicts import Call, verdict, welch_p

WORTH_IT_POINTS = 0.5  # an accuracy gain below this many points is called marginal
TEST_WORDS = "Welch's t-test on the final test accuracy of each seed"


def compare_section(
    a: Assignment,
    mlp: RunStatus,
    cnn: RunStatus,
    mlps: list[RunStatus] | None = None,
    cnns: list[RunStatus] | None = None,
) -> Section:
    """Assignment 3: BasicNN against SimpleCNN (every seed of each when given), answered from the measurements."""
    mlps, cnns = mlps or [mlp], cnns or [cnn]
    md = [f"**Task.** {a.task}", ""] + ["- " + status_line(s) for s in mlps + cnns] + [""]
    if not all(s.done for s in mlps + cnns):
        every = "both runs have" if len(mlps + cnns) == 2 else f"all {len(mlps + cnns)} runs (every seed) have"
        md.append(f"The answers are filled in when {every} finished.")
        return Section(a.number, a.title, "\n".join(md), {}, False)
    m, c = mean_summary(mlps), mean_summary(cnns)
    seeded = len(mlps) > 1 and len(cnns) > 1
    mg, cg = seed_group(mlps, "BasicNN"), seed_group(cnns, "SimpleCNN")
    said = verdict(cg, mg, "test_acc") if seeded else None
    pm, pc = parameter_count(mlp.planned.config), parameter_count(cnn.planned.config)
    measures = ["test accuracy %", "final training loss", "seconds per epoch", "parameters"]
    table = pd.DataFrame(
        {
            "measure": [("mean " if seeded else "") + measures[0], *measures[1:]],
            "BasicNN": [round(100 * m.test_acc, 2), round(m.losses[-1], 4), round(m.sec_per_epoch, 2), pm],
            "SimpleCNN": [round(100 * c.test_acc, 2), round(c.losses[-1], 4), round(c.sec_per_epoch, 2), pc],
        }
    )
    if seeded:
        table.loc[len(table)] = ["test accuracy std (points)", round(100 * mg.std, 2), round(100 * cg.std, 2)]
        table.loc[len(table)] = ["seeds", mg.n, cg.n]
    diff = c.test_acc - m.test_acc
    test_size = images_in_test_set(cnn.planned.config.dataset)
    if diff > 0:
        better = (
            f"**SimpleCNN**: {pct(c.test_acc)} test accuracy against {pct(m.test_acc)} for BasicNN, "
            f"{points(diff)} higher"
        )
    elif diff < 0:
        better = (
            f"**BasicNN**, this time: {pct(m.test_acc)} test accuracy against {pct(c.test_acc)} for "
            f"SimpleCNN, {points(diff)} higher"
        )
    else:
        better = f"Neither: both reached {pct(c.test_acc)} test accuracy"
    if test_size and diff and not seeded:
        better += (
            f" ({round(abs(diff) * test_size):,} {'fewer' if diff > 0 else 'more'} of the {test_size:,} "
            "test images wrong for the CNN)"
        )
    if said is not None:
        better = (
            f"{said.text}. Mean test accuracy: {pct(c.test_acc)} for SimpleCNN, {pct(m.test_acc)} for "
            f"BasicNN ({TEST_WORDS})"
        )
    layer = largest_layer(cnn.planned.config)
    why = (
        "A CNN keeps the image's 2-D structure: its small 3x3 filters look at neighbouring pixels and are "
        "shared across all positions, so a stroke is recognised wherever it is, and pooling makes it "
        "tolerant to small shifts. The MLP flattens the image into 784 unrelated numbers and must learn "
        "every position separately."
    )
    why += f" Parameters: BasicNN has {pm:,}, SimpleCNN {pc:,} ({pc / pm:.1f}x)" if pm and pc else ""
    if layer:
        why += (
            f", {layer[1] / pc:.0%} of the CNN's in one layer, {layer[0]}; its convolutions need only a few thousand."
        )
    ratio = c.sec_per_epoch / m.sec_per_epoch if m.sec_per_epoch > 0 else math.nan
    speed = (
        f"**{'Slower' if ratio > 1 else 'Faster'}**: {c.sec_per_epoch:.2f} s per epoch for SimpleCNN against "
        f"{m.sec_per_epoch:.2f} s for BasicNN, {ratio:.2f}x the time"
        f" ({c.sec_per_epoch * c.epochs - m.sec_per_epoch * m.epochs:+.1f} s over {c.epochs} epochs). "
        + (
            "Every convolution slides its filters over every position of the image, which costs far more "
            "arithmetic than the MLP's matrix products."
            if ratio > 1
            else "The convolutions were cheap enough here to beat the MLP's larger first layer."
        )
    )
    if m.error_rate > 0 and diff > 0:
        removed = diff / m.error_rate
        gain = f"it removed {removed:.0%} of BasicNN's mistakes (error rate {pct(m.error_rate)} → {pct(c.error_rate)})"
    else:
        gain = f"error rate {pct(m.error_rate)} for BasicNN, {pct(c.error_rate)} for SimpleCNN"
    if said is not None and said.call != Call.REAL:
        worth = (
            f"**Not shown**: the {'CNN' if diff > 0 else 'MLP'}'s lead of {points(diff)} is within seed noise, "
            f"while the CNN took {ratio:.2f}x the time per epoch. Run more seeds before calling it worth it."
        )
    elif diff * 100 >= WORTH_IT_POINTS:
        worth = (
            f"**Yes**: {gain} for {ratio:.2f}x the time per epoch. A few seconds more per epoch for a model "
            "that makes clearly fewer mistakes is a good trade."
        )
    elif diff > 0:
        worth = (
            f"**Marginal**: {gain}, a gain under {WORTH_IT_POINTS} points, for {ratio:.2f}x the time per "
            "epoch. On harder images the gap grows."
        )
    else:
        worth = (
            f"**No, not in this run**: {gain}, while the CNN took {ratio:.2f}x the time per epoch. "
            "Train both longer or on the full dataset before drawing conclusions."
        )
    md += [
        md_table(table),
        "",
        f"**Which model performed better?** {better}.",
        "",
        f"**Why?** {why}",
        "",
        f"**Did the CNN train slower or faster?** {speed}",
        "",
        f"**Was the improvement worth it?** {worth}",
    ]
    return Section(a.number, a.title, "\n".join(md), {"assignment3_comparison.csv": table}, True)


def observation(
    name: str,
    s: RunStatus,
    base: RunStatus,
    seeds: list[RunStatus] | None = None,
    base_seeds: list[RunStatus] | None = None,
) -> str:
    """One sentence or two about what the change did, from the measurements; with several seeds of
    the change and of the baseline, the mean accuracies and whether the gap is beyond seed noise."""
    why = dict((n, w) for n, _, w in CHANGES)[name]
    seeds, base_seeds = seeds or [s], base_seeds or [base]
    if len(seeds) > 1 and len(base_seeds) > 1 and s.done and base.done:
        unfinished = [r for r in seeds + base_seeds if not r.done]
        if any(r.active for r in unfinished):
            return f"**{name}**: waiting for {len(unfinished)} more seed run(s) of it and of the baseline."
        if unfinished:
            states = ", ".join(sorted({r.state for r in unfinished}))
            return (
                f"**{name}**: {len(unfinished)} seed run(s) of it or of the baseline ended {states}; "
                "run this assignment again to train them."
            )
        group, base_group = seed_group(seeds, name), seed_group(base_seeds, "the baseline")
        if name == "baseline":
            return f"**baseline** ended at {spread(group)}; it is {why}."
        said = verdict(group, base_group, "test_acc")
        alone = observation(name, s, base).split(". Why: ")[0].split("** ", 1)[1]
        return (
            f"**{name}** ended at {spread(group)}; {said.text}. Seed {s.planned.config.seed} alone {alone}. Why: {why}."
        )
    if s.state in (RunState.DIVERGED.value, RunState.FAILED.value):
        return f"**{name}** {s.state}: {s.error or 'no message'}. Why: {why}."
    if not s.done:
        return f"**{name}**: {status_line(s).split(': ', 1)[-1]}"
    r = summarise(s.metrics)
    if name == "baseline":
        return f"**baseline** ended at {pct(r.test_acc)} with {r.sec_per_epoch:.2f} s per epoch; it is {why}."
    b = summarise(base.metrics) if base.done else None
    if b is None:
        return f"**{name}** ended at {pct(r.test_acc)}; the comparison needs the finished baseline."
    d = r.test_acc - b.test_acc
    where = (
        "the same as the baseline"
        if round(100 * d, 2) == 0
        else f"{points(d)} {'above' if d > 0 else 'below'} the baseline ({pct(b.test_acc)})"
    )
    parts = [f"**{name}** ended at {pct(r.test_acc)}, {where}"]
    if name.startswith("batch"):
        steps, steps0 = steps_per_epoch(s), steps_per_epoch(base)
        ratio = r.sec_per_epoch / b.sec_per_epoch if b.sec_per_epoch > 0 else math.nan
        parts.append(
            f"an epoch took {r.sec_per_epoch:.2f} s ({ratio:.2f}x the baseline)"
            + (f" for {steps:,} steps instead of {steps0:,}" if steps and steps0 else "")
        )
    if name.startswith("lr"):
        start = r.losses[0] / b.losses[0] if b.losses[0] > 0 else math.nan
        parts.append(
            f"its first-epoch loss was {r.losses[0]:.4f} against {b.losses[0]:.4f} "
            f"({'a faster' if start < 1 else 'a slower'} start)"
        )
    if name == "10 epochs":
        at5 = summarise([row for row in s.metrics if row["epoch"] <= base.planned.config.epochs])
        parts.append(
            f"the epochs after {base.planned.config.epochs} added {100 * (r.test_acc - at5.test_acc):+.2f} "
            f"points (best {pct(r.best_acc)} at epoch {r.best_epoch})"
        )
        gap, gap0 = r.train_acc - r.test_acc, b.train_acc - b.test_acc
        if gap > gap0:
            parts.append(
                f"the train-test gap grew from {100 * gap0:.2f} to {100 * gap:.2f} points, a sign of overfitting"
            )
    steps_up = max(1, r.epochs - 1)
    if name == "10 epochs":  # the first epochs repeat the baseline; what matters is what came after
        later = [row["test_loss"] for row in sorted(s.metrics, key=lambda row: row["epoch"])][b.epochs - 1 :]
        rises = sum(y > x for x, y in zip(later, later[1:]))
        parts.append(f"its test loss rose in {rises} of the {len(later) - 1} extra epochs")
    elif r.loss_rises > b.loss_rises:
        parts.append(
            f"its test loss was noisier: it rose in {r.loss_rises} of {steps_up} epochs (baseline: {b.loss_rises})"
        )
    elif r.loss_rises < b.loss_rises:
        parts.append(
            f"its test loss was steadier: it rose in {r.loss_rises} of {steps_up} epochs (baseline: {b.loss_rises})"
        )
    return "; ".join(parts) + f". Why: {why}."


def hyper_section(a: Assignment, statuses: dict[str, RunStatus]) -> Section:
    """Assignment 4: one row per change against the baseline, and what each change did, in words."""
    every = [statuses[p.key] for p in a.runs]
    runs = [s for s in every if s.planned.seed_of is None]
    seeds = {s.planned.key: seed_runs({r.planned.key: r for r in every}, s.planned.key) for s in runs}
    seeded = any(len(v) > 1 for v in seeds.values())
    base = statuses["baseline"]
    base_group = seed_group(seeds["baseline"], "the baseline")
    rows = []
    b = summarise(base.metrics) if base.done else None
    for s in runs:
        r = summarise(s.metrics) if s.done else None
        c = s.planned.config
        rows.append(
            {
                "change": s.planned.key,
                "batch size": c.batch_size,
                "lr": c.lr,
                "epochs": c.epochs,
                "state": s.state,
                "test acc %": round(100 * r.test_acc, 2) if r else None,
                "vs baseline (points)": round(100 * (r.test_acc - b.test_acc), 2) if r and b else None,
                "epoch 1 loss": round(r.losses[0], 4) if r else None,
                "final loss": round(r.losses[-1], 4) if r else None,
                "s / epoch": round(r.sec_per_epoch, 2) if r else None,
                "time vs baseline": round(r.sec_per_epoch / b.sec_per_epoch, 2)
                if r and b and b.sec_per_epoch
                else None,
                "test-loss rises": r.loss_rises if r else None,
            }
        )
        if seeded:
            group = seed_group(seeds[s.planned.key], s.planned.key)
            complete = all(x.done for x in seeds[s.planned.key] + seeds["baseline"])
            said = verdict(group, base_group, "test_acc") if complete and s.planned.key != "baseline" else None
            p = welch_p(group.values, base_group.values) if said else None
            rows[-1].update(
                {
                    "seeds": group.n,
                    "mean test acc %": round(100 * group.mean, 2) if group.n else None,
                    "std (points)": round(100 * group.std, 2) if group.std is not None else None,
                    "p vs baseline": round(p, 4) if p is not None else None,
                    "vs baseline": said.call.value if said else None,
                }
            )
    table = pd.DataFrame(rows)
    md = [
        f"**Task.** {a.task}",
        "",
        md_table(table),
        "",
        "*Seconds are wall-clock time on this machine: other programs running at the same time make them noisier.*",
        "",
        "**What changed:**",
        "",
    ]
    md += [f"- {observation(s.planned.key, s, base, seeds[s.planned.key], seeds['baseline'])}" for s in runs]
    if seeded:
        md += ["", f"*Beyond noise: {TEST_WORDS}, each change against the baseline, real when p < 0.05.*"]
    return Section(
        a.number, a.title, "\n".join(md), {"assignment4_hyperparameters.csv": table}, all(s.done for s in every)
    )
