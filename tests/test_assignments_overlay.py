"""dashboard.assignments.overlay: assignment 4's figure, one line per change, the baseline on top."""

from __future__ import annotations

import pytest

from dashboard.assignments.overlay import overlay_figure
from dashboard.assignments.plan import assignments
from tests.assignment_runs import ROOT, everything_done, statuses_for


def test_overlay_figure_draws_one_line_per_finished_change(store):
    plan = assignments("mnist_sample", ROOT, cifar_root=ROOT)
    made = everything_done(store, plan)
    statuses = statuses_for(store, plan)
    fig = overlay_figure([statuses[p.key] for p in plan[3].runs], "test_acc")
    assert [t.name for t in fig.data] == [p.key for p in plan[3].runs[1:]] + ["baseline"]  # baseline on top
    assert fig.data[-1].line.width > fig.data[0].line.width and fig.data[-1].legendrank == 1
    assert len(fig.data[-2].x) == 10
    assert list(fig.data[-1].y) == pytest.approx([100 * r["test_acc"] for r in made["simple_cnn"]])
    loss = overlay_figure([statuses["baseline"]], "train_loss")
    assert list(loss.data[0].y) == [r["train_loss"] for r in made["simple_cnn"]]
    with pytest.raises(ValueError, match="metric must be one of"):
        overlay_figure([], "speed")


def test_runs_without_metrics_draw_no_line(store):
    plan = assignments("mnist_sample", ROOT)
    statuses = statuses_for(store, plan)  # nothing trained yet
    assert overlay_figure([statuses[p.key] for p in plan[3].runs]).data == ()
