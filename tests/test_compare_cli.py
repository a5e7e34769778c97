"""`python -m engine compare`: the JSON it prints, its readable form, every bad input, and no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from engine.cli.main import COMMANDS, main
from engine.config import TrainConfig
from engine.files import append_metrics
from engine.runs.records import RunState
from engine.runs.store import Store

ROOT = Path(__file__).resolve().parents[1]
MLP = (0.912, 0.921, 0.905)
CNN = (0.962, 0.958, 0.969)


def add_run(store: Store, arch: str, seed: int, acc: float) -> str:
    run_id = store.create_run(TrainConfig(arch=arch, seed=seed, epochs=2, train_limit=300))
    for epoch, value in ((1, acc - 0.05), (2, acc)):
        append_metrics(
            store.paths(run_id).metrics,
            {
                "epoch": epoch,
                "train_loss": 1.0 / epoch,
                "train_acc": value,
                "test_loss": 1 - value,
                "test_acc": value,
                "seconds": 1.0,
            },
        )
    store.set_state(run_id, RunState.DONE)
    return run_id


@pytest.fixture
def root(tmp_path):
    store = Store(tmp_path / "results")
    mlp = [add_run(store, "basic_nn", s, acc) for s, acc in enumerate(MLP)]
    cnn = [add_run(store, "simple_cnn", s, acc) for s, acc in enumerate(CNN)]
    store.close()
    return tmp_path / "results", mlp, cnn


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors exit directly
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_the_metric_the_groups_and_the_pairs_with_exactly_the_issues_keys(root, capsys):
    results, mlp, cnn = root
    code, out, err = run(capsys, "compare", *mlp, *cnn, "--results", str(results), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert list(data) == ["metric", "groups", "pairs"] and data["metric"] == "test_acc"
    assert [sorted(g) for g in data["groups"]] == [sorted(["label", "runs", "n", "mean", "std"])] * 2
    assert [(g["label"], g["runs"], g["n"]) for g in data["groups"]] == [("basic_nn", mlp, 3), ("simple_cnn", cnn, 3)]
    assert data["groups"][1]["mean"] == pytest.approx(sum(CNN) / 3)  # a fraction, as in the metrics files
    assert data["groups"][1]["std"] == pytest.approx(stats.tstd(CNN))
    (pair,) = data["pairs"]
    assert sorted(pair) == ["a", "b", "diff", "p", "real"]
    assert (pair["a"], pair["b"], pair["real"]) == (0, 1, True)
    assert pair["diff"] == pytest.approx((sum(MLP) - sum(CNN)) / 3)
    assert pair["p"] == pytest.approx(stats.ttest_ind(MLP, CNN, equal_var=False).pvalue)


def test_group_lists_metric_rule_and_threshold_are_used_as_given(root, capsys):
    results, mlp, cnn = root
    code, out, _ = run(
        capsys,
        "compare",
        "--group",
        f"{mlp[0]},{mlp[1]}",
        "--group",
        f"{cnn[0]},{mlp[2]}",
        "--metric",
        "test_loss",
        "--rule",
        "best",
        "--threshold",
        "0.001",
        "--results",
        str(results),
        "--json",
    )
    data = json.loads(out)
    assert code == 0 and data["metric"] == "test_loss"
    assert [g["runs"] for g in data["groups"]] == [mlp[:2], [cnn[0], mlp[2]]]
    assert data["groups"][0]["mean"] == pytest.approx(1 - (MLP[0] + MLP[1]) / 2)
    (pair,) = data["pairs"]
    assert pair["real"] == (pair["p"] < 0.001)


def test_a_group_of_one_gets_no_p_and_no_verdict(root, capsys):
    results, mlp, cnn = root
    code, out, _ = run(capsys, "compare", mlp[0], *cnn, "--results", str(results), "--json")
    (pair,) = json.loads(out)["pairs"]
    assert code == 0 and pair["p"] is None and pair["real"] is None
    assert json.loads(out)["groups"][0]["std"] is None


def test_readable_output_has_a_row_per_group_and_the_verdict_in_words(root, capsys):
    results, mlp, cnn = root
    code, out, _ = run(capsys, "compare", *mlp, *cnn, "--results", str(results))
    assert code == 0
    assert "final test_acc (%), Welch's t-test: a difference is real when p < 0.05" in out
    assert " 1  basic_nn" in out and " 2  simple_cnn" in out and "seeds 0-2" in out
    assert "1 vs 2: simple_cnn is 5.03 points ahead of basic_nn, far beyond seed noise (3 seeds each, p = " in out


@pytest.mark.parametrize(
    "make_argv,words",
    [
        (lambda mlp, cnn: [mlp[0], "no-such-run", "other"], ["unknown run(s) no-such-run, other", "engine list"]),
        (
            lambda mlp, cnn: ["--group", f"{mlp[0]},{mlp[1]}", "--group", f"{mlp[1]},{cnn[0]}"],
            ["is in two groups (1 and 2)", "one group only"],
        ),
        (lambda mlp, cnn: [mlp[0], "--group", f"{mlp[0]},{cnn[0]}"], ["given on its own and in group 1"]),
        (lambda mlp, cnn: [*mlp], ["at least two groups, and these 3 run(s) make one", "--group"]),
        (lambda mlp, cnn: ["--group", ",".join(mlp)], ["at least two groups"]),
        (lambda mlp, cnn: [*mlp, *cnn, "--metric", "val_acc"], ["has no val_acc", "without a validation split"]),
        (lambda mlp, cnn: [*mlp, *cnn, "--metric", "f1"], ["--metric", "invalid choice: 'f1'"]),
        (lambda mlp, cnn: [*mlp, *cnn, "--threshold", "1.5"], ["threshold", "between 0 and 1"]),
        (lambda mlp, cnn: ["--group", f"{mlp[0]},,{mlp[1]}", "--group", cnn[0]], ["empty run id"]),
        (lambda mlp, cnn: [], ["give the runs to compare"]),
    ],
)
def test_each_bad_input_is_one_clear_line_with_exit_2(root, capsys, make_argv, words):
    results, mlp, cnn = root
    code, out, err = run(capsys, "compare", *make_argv(mlp, cnn), "--results", str(results), "--json")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0]


def test_the_command_is_registered_in_main_with_its_module_and_one_line_of_help():
    module, help = COMMANDS["compare"]
    assert module == "engine.cli.compare" and "\n" not in help and "seed noise" in help


def test_the_command_never_imports_torch(root):
    results, mlp, cnn = root
    script = (
        "import json, sys\n"
        "from engine.cli.main import main\n"
        f"code = main({['compare', *mlp, *cnn, '--results', str(results), '--json']!r})\n"
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, "
        "'module': 'engine.cli.compare' in sys.modules}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status == {"code": 0, "torch": False, "module": True}
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line]
    assert "engine.runs.compare" in imported and "scipy.stats" in imported
    assert not any(name.split(".")[0] == "torch" for name in imported)
