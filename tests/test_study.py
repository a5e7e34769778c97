"""engine.runs.study: the Optuna study rebuilt from a search's trials asks for the same trial given the
same results and the same search seed."""

from __future__ import annotations

import math

from engine.runs.search_space import SearchSpec
from engine.runs.study import Trial, ask, padded
from tests.test_search import lr_search


def fake_history(n: int) -> list[Trial]:
    """n finished trials of an lr search whose val_acc peaks at lr = 1e-3."""
    out = []
    for i in range(n):
        lr = 10 ** (-5 + 4 * i / max(1, n - 1))
        value = 0.9 - 0.1 * abs(math.log10(lr) + 3)
        out.append(Trial(i, f"run-{i}", {"lr": lr}, "done", 1, [{"epoch": 1, "val_acc": value}]))
    return out


def test_tpe_with_a_fixed_search_seed_asks_for_the_same_trial_given_the_same_results():
    spec = lr_search(sampler="tpe", trials=20, seed=3)
    history = padded(fake_history(12))  # past TPE's random start-up trials: its model decides
    first = ask(spec, "sweep-a", history)
    assert ask(spec, "sweep-a", history) == first
    other = ask(SearchSpec.from_json({**spec.to_json(), "seed": 4}), "sweep-a", history)
    assert other != first
    assert 1e-5 <= first["lr"] <= 1e-1
