"""Search spaces: ranges, log ranges and lists parsed from what a person types, and every bad input
as one clear line, from the parser and from `python -m engine sweep`."""

from __future__ import annotations

import pytest

from engine.cli.main import main
from engine.config import TrainConfig
from engine.errors import ConfigError, SearchSpaceError
from engine.runs.search_space import (
    DEFAULT_VAL_SPLIT,
    Dimension,
    SearchSpec,
    build_spec,
    corner_configs,
    default_startup,
    parse_field,
    parse_values,
)
from engine.runs.store import Store

BASE = TrainConfig(val_split=0.1)


def test_a_range_is_low_colon_high_and_log_adds_a_log_scale():
    assert parse_field("lr", "1e-4:1e-1:log") == Dimension("lr", 1e-4, 0.1, True)
    assert parse_field("momentum", " 0.8 : 0.99 ") == Dimension("momentum", 0.8, 0.99, False)
    assert parse_field("weight_decay", "0:1e-3") == Dimension("weight_decay", 0.0, 1e-3, False)


def test_a_comma_list_keeps_its_order_drops_duplicates_and_is_typed_like_the_config_field():
    assert parse_field("lr", "0.01, 0.001,0.01") == [0.01, 0.001]
    assert parse_field("batch_size", "32,128") == [32, 128]
    assert parse_field("arch", "basic_nn,simple_cnn") == ["basic_nn", "simple_cnn"]
    assert parse_values("seed", "3") == [3]


def test_a_dimension_turns_into_the_optuna_distribution_it_is_sampled_from():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    assert Dimension("lr", 1e-4, 0.1, True).distribution() == FloatDistribution(1e-4, 0.1, log=True)
    assert Dimension("arch", choices=("a", "b")).distribution() == CategoricalDistribution(["a", "b"])


def test_a_spec_makes_ranges_and_lists_of_several_values_dimensions_and_fixes_single_values():
    spec = build_spec(
        BASE,
        {"lr": parse_field("lr", "1e-4:1e-1:log"), "arch": ["basic_nn", "simple_cnn"], "batch_size": [32]},
        sampler="random",
        trials=9,
        prune="asha",
        seed=7,
    )
    assert spec.names == ["lr", "arch"]
    assert spec.base.batch_size == 32 and spec.objective == "val_acc" and spec.direction == "maximize"
    assert spec.startup == default_startup(9) == 3
    assert SearchSpec.from_json(spec.to_json()) == spec  # what the registry stores reads back the same
    assert spec.config({"lr": 0.01, "arch": "basic_nn"}).lr == 0.01


def test_corner_configs_touch_both_ends_of_each_range_and_every_listed_value():
    spec = build_spec(BASE, {"lr": parse_field("lr", "1e-4:1e-1:log"), "arch": ["basic_nn", "tiny_cnn"]})
    seen = {(c.lr, c.arch) for c in corner_configs(spec)}
    assert {c.lr for c in corner_configs(spec)} >= {1e-4, 0.1}
    assert {arch for _, arch in seen} >= {"basic_nn", "tiny_cnn"}


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("lr", "0.1:0.001", ["low end 0.1 is above the high end 0.001", "0.001:0.1"]),
        ("weight_decay", "0:0.01:log", ["log range needs both ends > 0", "drop :log"]),
        ("lr", "-1e-3:1e-2:log", ["log range needs both ends > 0"]),
        ("lr", "0:0.1", ["learning rate must be > 0"]),
        ("momentum", "0.5:1", ["momentum must be in [0, 1)"]),
        ("batch_size", "32:128", ["--batch-size takes a list of values", "not a range", "--lr, --weight-decay"]),
        ("arch", "basic_nn:simple_cnn", ["--arch takes a list of values", "not a range"]),
        ("seed", "0:10", ["--seed takes a list", "not a range"]),
        ("lr", "1e-3:1e-2:lin", ["is not a range", "LOW:HIGH:log"]),
        ("lr", "1e-3:abc", ["'abc' is not a number"]),
        ("lr", "0.01:0.01", ["both ends are 0.01", "give one value"]),
        ("lr", "1:2:3:log", ["is not a range"]),
        ("batch_size", "32,big", ["'big' is not a whole number"]),
        ("lr", " , ", ["give at least one value"]),
    ],
)
def test_every_bad_field_is_one_line_naming_what_is_allowed(name, text, words):
    with pytest.raises(SearchSpaceError) as info:
        parse_field(name, text)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(trials=0), ["--trials must be from 1"]),
        (dict(trials=-3), ["--trials must be from 1"]),
        (dict(prune="sometimes"), ["unknown early-stopping rule 'sometimes'", "none, median, asha, hyperband"]),
        (dict(sampler="grid"), ["unknown search 'grid'"]),
        (dict(objective="test_acc"), ["unknown objective 'test_acc'", "never chooses on the test set"]),
        (dict(seed=-1), ["--search-seed"]),
        (dict(parallel=0), ["--parallel"]),
    ],
)
def test_every_bad_search_setting_is_one_line(kwargs, words):
    with pytest.raises(SearchSpaceError) as info:
        build_spec(BASE, {"lr": [0.1, 0.01]}, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_a_search_without_any_range_or_list_says_what_to_give():
    with pytest.raises(SearchSpaceError, match="nothing to search"):
        build_spec(BASE, {"lr": [0.01], "arch": ["basic_nn"]})


def test_a_search_needs_a_validation_split_because_it_never_chooses_on_test():
    with pytest.raises(SearchSpaceError, match="needs one: --val-split must be > 0"):
        build_spec(TrainConfig(val_split=0.0), {"lr": [0.1, 0.01]})


def test_search_space_errors_are_config_errors_so_every_front_end_shows_them_as_one_line():
    assert issubclass(SearchSpaceError, ConfigError)


# ---------------------------------------------------------------- the same through `python -m engine sweep`


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--search", "tpe", "--trials", "4", "--lr", "0.1:0.001"], ["low end 0.1 is above"]),
        (["--search", "tpe", "--trials", "4", "--weight-decay", "0:0.01:log"], ["log range needs both ends > 0"]),
        (["--search", "random", "--trials", "4", "--batch-size", "32:128"], ["--batch-size takes a list"]),
        (["--search", "tpe", "--trials", "0", "--lr", "1e-4:1e-1:log"], ["--trials must be from 1"]),
        (["--search", "tpe", "--trials", "4"], ["nothing to search"]),
        (["--search", "tpe", "--trials", "4", "--lr", "1e-4:1e-1", "--prune", "sometimes"], ["invalid choice"]),
        (["--search", "tpe", "--lr", "1e-4:1e-1"], ["needs --trials N"]),
        (["--search", "tpe", "--trials", "4", "--lr", "1e-4:1e-1", "--epochs", "2,3"], ["--epochs takes one value"]),
        (["--search", "tpe", "--trials", "4", "--lr", "1e-4:1e-1", "--val-split", "0"], ["--val-split must be > 0"]),
        (["--search", "tpe", "--trials", "4", "--lr", "1e-4:1e-1", "--reuse"], ["--reuse is for a grid"]),
        (["--search", "tpe", "--trials", "4", "--lr", "1e-4:1e-1", "--seeds", "3"], ["--seeds 3 repeats each point"]),
        (["--resume", "sweep-x", "--seeds", "3"], ["give --seed a list"]),
        (["--lr", "1e-4:1e-1"], ["ranges need a search", "--search random"]),
        (["--lr", "0.1,0.01", "--trials", "4"], ["--trials is for a search"]),
        (["--lr", "0.1", "--momentum", "0.8,0.9"], ["--momentum takes one value in a grid"]),
        (["--resume", "sweep-nope"], ["no search 'sweep-nope'"]),
    ],
)
def test_sweep_refuses_each_bad_search_in_one_line_and_queues_nothing(tmp_path, capsys, argv, words):
    results = tmp_path / "results"
    try:
        code = main(["sweep", *argv, "--results", str(results)])
    except SystemExit as exc:  # argparse's own one-line usage errors (an unknown choice)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    for word in words:
        assert word in err[0]
    if (results / "lensboard.sqlite3").exists():
        assert Store(results).list_runs() == []


def test_sweep_dry_run_of_a_search_describes_the_space_and_queues_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    assert (
        main(
            [
                "sweep",
                "--search",
                "tpe",
                "--trials",
                "12",
                "--lr",
                "1e-4:1e-1:log",
                "--arch",
                "basic_nn,simple_cnn",
                "--epochs",
                "2",
                "--dry-run",
                "--results",
                str(results),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "tpe search of 12 trial(s)" in out and "lr: 0.0001 to 0.1 (log scale)" in out
    assert "arch: basic_nn, simple_cnn" in out and f"over a {DEFAULT_VAL_SPLIT:g} validation split" in out
    assert out.strip().splitlines()[-1].startswith("dry run: nothing queued")
