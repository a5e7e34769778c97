"""engine.runs.verdicts: the statistics of groups of seeds against numpy and scipy, and the verdicts' wording."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats

from engine.runs.verdicts import Call, Group, compare_groups, verdict, welch_p

# Known numbers: final test accuracies of three seeds each.
MLP = (0.912, 0.921, 0.905)
CNN = (0.962, 0.958, 0.969)


def test_mean_std_and_p_match_numpy_and_scipy_on_known_numbers():
    mlp, cnn = Group("basic_nn", ("m0", "m1", "m2"), MLP), Group("simple_cnn", ("c0", "c1", "c2"), CNN)
    assert mlp.mean == pytest.approx(np.mean(MLP)) and mlp.mean == pytest.approx(0.912666, abs=1e-6)
    assert mlp.std == pytest.approx(np.std(MLP, ddof=1)) and cnn.std == pytest.approx(stats.tstd(CNN))
    expected = stats.ttest_ind(MLP, CNN, equal_var=False).pvalue
    assert welch_p(MLP, CNN) == pytest.approx(expected)
    # Welch by hand: t over the unpooled standard error, Welch-Satterthwaite degrees of freedom.
    va, vb = statistics.variance(MLP) / 3, statistics.variance(CNN) / 3
    t = (mlp.mean - cnn.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    assert welch_p(MLP, CNN) == pytest.approx(2 * stats.t.sf(abs(t), df))
    (pair,) = compare_groups([mlp, cnn])
    assert (pair.a, pair.b, pair.real) == (0, 1, True) and pair.diff == pytest.approx(mlp.mean - cnn.mean)


def test_a_group_of_one_has_no_spread_no_p_and_no_verdict():
    one, three = Group("basic_nn", ("m0",), MLP[:1]), Group("simple_cnn", ("c0", "c1", "c2"), CNN)
    assert one.std is None and welch_p(one.values, three.values) is None
    (pair,) = compare_groups([one, three])
    assert pair.p is None and pair.real is None
    said = verdict(three, one, "test_acc")
    assert said.call == Call.UNKNOWN
    assert said.text.startswith(
        "simple_cnn is 5.10 points ahead of basic_nn, but with one seed of basic_nn the seed noise is unknown"
    )
    assert "beyond" not in said.text and "within" not in said.text
    both = verdict(Group("a", ("x",), (0.9,)), Group("b", ("y",), (0.8,)), "test_acc")
    assert "with one seed each the seed noise is unknown" in both.text


def test_a_real_difference_is_said_to_be_beyond_seed_noise_with_its_p_value():
    said = verdict(Group("basic_nn", ("m0", "m1", "m2"), MLP), Group("simple_cnn", ("c0", "c1", "c2"), CNN), "test_acc")
    p = stats.ttest_ind(MLP, CNN, equal_var=False).pvalue
    assert said.call == Call.REAL and p < 0.01
    assert said.text == (
        f"simple_cnn is 5.03 points ahead of basic_nn, far beyond seed noise (3 seeds each, p = {p:.3f})"
    )


def test_a_small_gap_is_said_to_be_within_seed_noise():
    a, b = (0.962, 0.958, 0.969), (0.960, 0.955, 0.966)
    said = verdict(Group("cnn_dropout", ("a",) * 3, a), Group("simple_cnn", ("b",) * 3, b), "test_acc")
    spread = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2)
    assert said.call == Call.NOISE
    assert said.text.startswith(
        f"cnn_dropout is 0.27 points ahead of simple_cnn, within seed noise (seeds vary "
        f"by {100 * spread:.2f} points, 3 seeds each, p = "
    )
    assert said.text.endswith("); run more seeds to tell")


def test_on_a_loss_the_lower_group_is_ahead_and_the_threshold_decides():
    low, high = Group("cnn", ("a",) * 3, (0.10, 0.12, 0.11)), Group("mlp", ("b",) * 4, (0.20, 0.25, 0.22, 0.21))
    said = verdict(high, low, "test_loss")
    assert said.text == (
        "cnn's test loss is 0.1100 lower than mlp's, far beyond seed noise (3 seeds of cnn, 4 of mlp, p < 0.001)"
    )
    p = welch_p(low.values, high.values)
    assert verdict(low, high, "test_loss", threshold=p / 2).call == Call.NOISE
