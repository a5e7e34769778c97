"""Groups of runs for Compare (dashboard/groups.py): seeds together, mean curves, the test between groups."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from dashboard.groups import compare_summary, ema, group_curve, group_table, run_groups
from dashboard.runs_table import runs_frame
from dashboard.tables import SummarySpec, metrics_long, summary_table
from tests.table_runs import epoch_row, seeded


def test_run_groups_put_seeds_together_or_group_by_a_hyperparameter_or_by_sweep(store):
    a0, a1, b0 = seeded(store, [("basic_nn", 0, 0.90), ("basic_nn", 1, 0.91), ("simple_cnn", 0, 0.95)])
    configs = {r.id: r.config for r in store.list_runs()}
    assert run_groups(configs, "config") == [("basic_nn", [a0, a1]), ("simple_cnn", [b0])]
    assert run_groups(configs, "epochs") == [("group 1 · seeds 0, 0, 1", [a0, a1, b0])]
    assert run_groups(configs, "arch") == run_groups(configs, "config")
    by_sweep = run_groups(configs, "sweep", {a0: "sweep-20261130-1a2b", a1: "sweep-20261130-1a2b", b0: None})
    assert by_sweep == [("basic_nn · sweep 20261130-1a2b", [a0, a1]), (f"simple_cnn · sweep none ({b0[-4:]})", [b0])]
    for wrong in ("none", "seed"):  # grouping by seed would split the very runs a group is made of
        with pytest.raises(ValueError, match="group by must be one of config"):
            run_groups(configs, wrong)


def test_a_group_curve_is_the_mean_std_min_and_max_of_its_runs_at_each_epoch():
    long = metrics_long(
        {"a": [epoch_row(1, 1.0, 0.9, 0.5), epoch_row(2, 0.5, 0.6, 0.7)], "b": [epoch_row(1, 1.0, 0.9, 0.7)]}
    )  # b is still at its first epoch
    curve = group_curve(long, ["a", "b"], "test", "acc")
    assert list(curve["epoch"]) == [1, 2] and list(curve["n"]) == [2, 1]
    assert list(curve["mean"]) == pytest.approx([0.6, 0.7])
    assert curve.loc[0, "std"] == pytest.approx(math.sqrt(0.02)) and math.isnan(curve.loc[1, "std"])
    assert (curve.loc[0, "low"], curve.loc[0, "high"]) == pytest.approx((0.5, 0.7))
    assert list(ema([1.0, 0.0], 0.5)) == pytest.approx([1.0, 1 / 3])  # debiased: weights 1 and 0.5
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\)"):
        ema([1.0], 1.0)


def test_the_group_table_has_mean_std_n_and_the_test_against_the_best_group(store):
    ids = seeded(
        store,
        [
            ("basic_nn", 0, 0.912),
            ("basic_nn", 1, 0.921),
            ("basic_nn", 2, 0.905),
            ("simple_cnn", 0, 0.962),
            ("simple_cnn", 1, 0.958),
            ("simple_cnn", 2, 0.969),
        ],
    )
    records = store.list_runs()
    long = metrics_long({r.id: store.metrics(r.id) for r in records})
    spec = SummarySpec(metric="acc")
    summary = summary_table(long, runs_frame(records), spec)
    groups = run_groups({r.id: r.config for r in records}, "config")
    comparison = compare_summary(summary, groups, spec)
    assert [g.values for g in comparison.groups] == [
        pytest.approx((0.912, 0.921, 0.905)),
        pytest.approx((0.962, 0.958, 0.969)),
    ]
    table = group_table(comparison, spec).set_index("group")
    assert table.loc["basic_nn", "n"] == 3 and table.loc["basic_nn", "seeds"] == "seeds 0-2"
    assert table.loc["basic_nn", "mean"] == pytest.approx(91.2667, abs=1e-4)
    assert table.loc["basic_nn", "std"] == pytest.approx(100 * stats.tstd([0.912, 0.921, 0.905]))
    assert table.loc["basic_nn", "p vs best"] == pytest.approx(
        stats.ttest_ind([0.912, 0.921, 0.905], [0.962, 0.958, 0.969], equal_var=False).pvalue
    )
    assert table.loc["basic_nn", "call"] == "real" and table.loc["simple_cnn", "call"] == "best"
    assert table.loc["basic_nn", "vs best"] == pytest.approx(-5.0333, abs=1e-4)
    assert set(ids) == {r for g in comparison.groups for r in g.runs}
