"""Seeds: one configuration repeated with seeds S..S+K-1, from the function to `--seeds K` on the command line."""

from __future__ import annotations

import pytest

from engine.cli.main import main
from engine.config import MAX_SEED, TrainConfig
from engine.errors import ConfigError
from engine.runs.records import RunState
from engine.runs.seeds import MAX_SEEDS, expand_seeds, with_seeds
from engine.runs.store import Store
from engine.settings import OFFLINE_ENV

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--arch", "basic_nn", "--epochs", "1", "--train-limit", "100", "--batch-size", "32"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    monkeypatch.delenv("LENSBOARD_RESULTS", raising=False)


def test_k_seeds_repeat_the_config_with_consecutive_seeds_from_its_own():
    config = TrainConfig(arch="basic_nn", lr=0.01, seed=5)
    seeded = expand_seeds(config, 3)
    assert [c.seed for c in seeded] == [5, 6, 7]
    assert all(c.replace(seed=5) == config for c in seeded)
    assert expand_seeds(config, 1) == [config]


@pytest.mark.parametrize("k", [0, -1, MAX_SEEDS + 1, True, 2.0, "3"])
def test_a_seed_count_outside_1_to_100_is_refused_naming_the_range(k):
    with pytest.raises(ConfigError, match=f"from 1 to {MAX_SEEDS}"):
        expand_seeds(TrainConfig(), k)


def test_seeds_that_would_pass_the_largest_seed_are_refused():
    with pytest.raises(ConfigError, match=f"start from seed {MAX_SEED - 2} or lower"):
        expand_seeds(TrainConfig(seed=MAX_SEED - 1), 3)


def test_with_seeds_expands_a_grid_and_drops_the_seeds_it_already_has():
    grid = [TrainConfig(arch="basic_nn", seed=0), TrainConfig(arch="basic_nn", seed=1), TrainConfig(arch="tiny_cnn")]
    out = with_seeds(grid, 2)
    assert [(c.arch, c.seed) for c in out] == [
        ("basic_nn", 0),
        ("basic_nn", 1),
        ("basic_nn", 2),
        ("tiny_cnn", 0),
        ("tiny_cnn", 1),
    ]


def test_train_with_seeds_trains_one_run_per_seed_one_after_the_other(tmp_path, capsys):
    assert main(["train", *TINY, "--seed", "4", "--seeds", "2", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "seed 4 (1 of 2)" and "seed 5 (2 of 2)" in out
    store = Store(tmp_path)
    runs = store.list_runs()
    assert [r.config["seed"] for r in runs] == [4, 5] and all(r.state == RunState.DONE for r in runs)
    assert out[-1] == str(runs[-1].path)  # the last line is still a run folder


def test_submit_with_seeds_queues_them_together_as_one_sweep(tmp_path, capsys):
    assert main(["submit", *TINY, "--seeds", "3", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    runs = Store(tmp_path).list_runs()
    assert [r.config["seed"] for r in runs] == [0, 1, 2] and all(r.state == RunState.QUEUED for r in runs)
    assert len({r.sweep_id for r in runs}) == 1 and runs[0].sweep_id in out
    assert "python -m engine compare" in out


def test_sweep_with_seeds_multiplies_the_grid(tmp_path, capsys):
    assert (
        main(
            ["sweep", *TINY[2:], "--arch", "basic_nn,tiny_cnn", "--seeds", "3", "--dry-run", "--results", str(tmp_path)]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "dry run: 6 run(s) would be queued"
    assert sum("arch=basic_nn" in line and f"seed={s}" in line for line in lines for s in (0, 1, 2)) == 3


@pytest.mark.parametrize("command", ["train", "submit", "sweep"])
def test_a_bad_seed_count_is_one_line_and_makes_no_run(tmp_path, capsys, command):
    assert main([command, *TINY, "--seeds", "0", "--results", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().count("\n") == 0
    assert err.startswith("error: seeds (runs per configuration) must be from 1 to 100, got 0")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
