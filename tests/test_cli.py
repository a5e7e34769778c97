"""The command line contract: `python -m engine train|list|show`, end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.cli.common import config_from_args
from engine.cli.main import build_parser, main
from engine.config import TrainConfig
from engine.runs.records import RunState
from engine.runs.store import Store
from engine.settings import OFFLINE_ENV
from tests.disk_layouts import write_cifar10, write_mnist_raw

ROOT = Path(__file__).resolve().parents[1]


def engine_env(**extra) -> dict:
    env = dict(os.environ, LENSBOARD_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    env.pop("LENSBOARD_RESULTS", None)
    return env


def run_engine(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    monkeypatch.delenv("LENSBOARD_RESULTS", raising=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_one_line_error(stderr: str, *words: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]}"


# ---------------------------------------------------------------- train, in a real process


def test_train_runs_in_the_foreground_and_ends_by_printing_the_run_folder(tmp_path):
    results = tmp_path / "results"
    proc = run_engine(
        "train",
        "--arch",
        "basic_nn",
        "--epochs",
        "2",
        "--train-limit",
        "200",
        "--val-split",
        "0.1",
        "--results",
        str(results),
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    folder = Path(lines[-1])
    assert folder.parent == results / "runs" and (folder / "model.pt").is_file()
    assert lines[0].startswith(f"run {folder.name}: basic_nn on mnist_sample, 2 epoch(s)")
    assert [l.split()[1] for l in lines[1:-1]] == ["1/2", "2/2"]  # one line per epoch
    assert "val loss" in lines[1] and "test loss" in lines[1] and lines[1].endswith("s")
    assert "Traceback" not in proc.stderr
    store = Store(results)
    run = store.get_run(folder.name)
    assert run.state == RunState.DONE and len(store.metrics(run.id)) == 2
    store.close()


def test_bad_input_is_one_line_on_stderr_with_a_non_zero_exit_and_no_run(tmp_path):
    proc = run_engine("train", "--lr", "-1", "--results", str(tmp_path))
    assert proc.returncode != 0 and proc.stdout == ""
    assert_one_line_error(proc.stderr, "lr must be a finite number > 0, got -1")
    assert not (tmp_path / "runs").exists()  # checked before any run is created


def test_ctrl_c_cancels_after_the_current_batch_and_still_prints_the_folder(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "train",
            "--arch",
            "basic_nn",
            "--epochs",
            "200",
            "--train-limit",
            "200",
            "--results",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=engine_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().startswith("run ")
        assert proc.stdout.readline().startswith("epoch 1/200")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    folder = Path(out.strip().splitlines()[-1])
    assert "run cancelled: cancelled during epoch" in err and "Traceback" not in err
    store = Store(tmp_path)
    run = store.get_run(folder.name)
    assert run.state == RunState.CANCELLED and run.epoch >= 1 and (folder / "checkpoint.pt").is_file()
    store.close()


# ---------------------------------------------------------------- train, in process


def test_train_without_flags_means_simple_cnn_on_mnist_sample_for_five_epochs():
    args = build_parser().parse_args(["train"])
    # The data root is made absolute so that a worker started elsewhere finds the same files.
    assert config_from_args(args) == TrainConfig(data_root=str(Path("data").resolve()))
    assert args.results is None


@pytest.mark.parametrize(
    "argv,words",
    [
        (["train", "--arch", "vgg"], ["unknown arch 'vgg'", "basic_nn"]),
        (["train", "--epochs", "x"], ["--epochs", "invalid int value: 'x'"]),
        (["train", "--device", "tpu"], ["--device", "invalid choice: 'tpu'"]),
        (["train", "--train-limit", "100", "--batch-size", "101"], ["batch_size", "(100)", "101"]),
        (["train", "--val-split", "0.9"], ["val_split", "[0, 0.5]"]),
        (
            ["train", "--dataset", "mnist", "--data-root", "/nonexistent/data"],
            ["'mnist'", "/nonexistent/data/MNIST/raw", "train-images-idx3-ubyte", "mnist_sample"],
        ),
        (["train", "--arch", "resnet18", "--pretrained"], ["ImageNet weights", "without --pretrained"]),
        (["show", "no-such-run"], ["no run 'no-such-run'"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    ],
)
def test_each_kind_of_bad_input_is_one_clear_line(tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    try:
        code = main([*argv, "--results", str(tmp_path)] if argv[0] != "frobnicate" else argv)
    except SystemExit as exc:  # argparse's own errors exit directly
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert_one_line_error(err, *words)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("damage", ["a file", "not a database"])
def test_an_unusable_results_root_is_one_clear_line(tmp_path, capsys, damage):
    if damage == "a file":
        root = tmp_path / "results"
        root.write_text("not a folder")
    else:
        root = tmp_path
        (root / "lensboard.sqlite3").write_text("junk")
    assert main(["list", "--results", str(root)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_error(err, str(root), "results root", "--results")


def test_a_diverged_run_exits_non_zero_and_still_ends_with_its_folder(tmp_path, capsys):
    code = main(
        [
            "train",
            "--arch",
            "basic_nn",
            "--optimizer",
            "sgd",
            "--lr",
            "1e6",
            "--train-limit",
            "64",
            "--epochs",
            "2",
            "--results",
            str(tmp_path),
        ]
    )
    out, err = capsys.readouterr()
    folder = Path(out.strip().splitlines()[-1])
    assert code == 1 and folder.parent == tmp_path / "runs"
    assert err.startswith("run diverged: the loss became") and "learning rate (1e+06)" in err


def test_train_reads_an_mnist_folder_in_torchvision_layout(tmp_path, capsys):
    write_mnist_raw(tmp_path / "data", gz=True, n_train=80, n_test=30)
    code = main(
        [
            "train",
            "--dataset",
            "mnist",
            "--data-root",
            str(tmp_path / "data"),
            "--arch",
            "simple_cnn",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--results",
            str(tmp_path / "results"),
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    folder = Path(out.strip().splitlines()[-1])
    assert json.loads((folder / "config.json").read_text())["dataset"] == "mnist"
    assert len(Store(tmp_path / "results").metrics(folder.name)) == 1


def test_train_reads_a_cifar10_folder_in_the_official_layout(tmp_path, capsys):
    write_cifar10(tmp_path / "data", per_batch=16, n_test=20)
    code = main(
        [
            "train",
            "--dataset",
            "cifar10",
            "--data-root",
            str(tmp_path / "data"),
            "--arch",
            "cifar10_cnn",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--results",
            str(tmp_path / "results"),
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 0
    folder = Path(out.strip().splitlines()[-1])
    model = torch.load(folder / "model.pt", weights_only=True)
    assert model["body.0.weight"].shape[1] == 3  # built for colour input


# ---------------------------------------------------------------- list and show


def test_list_json_gives_each_run_with_state_path_config_and_test_accuracy(finished_root, capsys):
    assert main(["list", "--json", "--results", str(finished_root)]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert sorted(r["arch"] for r in runs) == ["basic_nn", "simple_cnn"]
    for r in runs:
        assert r["state"] == "done" and Path(r["path"]).is_dir() and Path(r["path"]).name == r["id"]
        assert (r["dataset"], r["epochs"], r["batch_size"], r["lr"]) == ("mnist_sample", 2, 64, 1e-3)
        assert 0.5 < r["test_acc"] <= 1


def test_list_prints_a_table(finished_root, capsys):
    assert main(["list", "--results", str(finished_root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["id", "state", "arch", "dataset"] and len(lines) == 3
    assert all(" done " in l and "%" in l for l in lines[1:])


def test_list_of_an_empty_root_says_how_to_start(tmp_path, capsys):
    assert main(["list", "--results", str(tmp_path)]) == 0
    assert "python -m engine train" in capsys.readouterr().out


def test_show_json_finds_a_run_by_id_or_by_its_folder_path(finished_root, capsys, monkeypatch):
    store = Store(finished_root)
    run = store.list_runs()[0]
    store.close()
    assert main(["show", run.id, "--json", "--results", str(finished_root)]) == 0
    by_id = json.loads(capsys.readouterr().out)
    monkeypatch.chdir(finished_root.parent)  # no --results: the folder path names its results root
    assert main(["show", str(run.path), "--json"]) == 0
    by_path = json.loads(capsys.readouterr().out)
    assert by_id == by_path
    assert by_id["id"] == run.id and by_id["state"] == "done" and by_id["error"] is None
    assert by_id["config"] == run.config
    assert [m["epoch"] for m in by_id["metrics"]] == [1, 2]


def test_show_prints_state_config_and_one_line_per_epoch(finished_root, capsys):
    store = Store(finished_root)
    run = store.list_runs()[0]
    store.close()
    assert main(["show", run.id, "--results", str(finished_root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"run {run.id}  [done]") and lines[1].startswith("config: ")
    assert "dataset=mnist_sample" in lines[1] and "arch=" in lines[1]
    assert [l.split()[1] for l in lines[2:]] == ["1/2", "2/2"]


# ---------------------------------------------------------------- numeric flags, prefixes, damaged runs


@pytest.mark.parametrize(
    "argv,words",
    [
        (["worker", "--poll", "nan"], ["--poll", "finite number > 0", "'nan'"]),  # busy-spun
        (["worker", "--stale-after", "nan"], ["--stale-after", "finite number > 0"]),  # was accepted
        (["worker", "--stale-after", "inf"], ["--stale-after", "'inf'"]),
        (["worker", "--idle-exit", "-1"], ["--idle-exit", ">= 0"]),
        (["worker", "--batch-delay", "1e400"], ["--batch-delay", "<= 60"]),
        (["worker", "--poll", "1e300"], ["--poll", "<= 3600"]),  # an Event.wait overflow
        (
            ["tsne", "RUN", "--seed", "-1"],
            ["seed must be an integer from 0 to 4294967295, got -1"],
        ),  # a sklearn traceback
        (["tsne", "RUN", "--perplexity", "nan"], ["perplexity must be a number from 2 to 100, got nan"]),
        (["tsne", "RUN", "--perplexity", "inf"], ["perplexity must be a number from 2 to 100, got inf"]),
        (["tsne", "RUN", "--max-points", "5"], ["max_points must be an integer from 10 to"]),
        (["sweep", "--max-runs", "0"], ["--max-runs", "from 1 to"]),
        (["train", "--lr", "nan"], ["lr must be a finite number > 0, got nan"]),
        (["train", "--lr", "inf"], ["lr must be a finite number > 0, got inf"]),
        (["train", "--momentum", "nan"], ["momentum must be in [0, 1)"]),
        (["train", "--weight-decay=-inf"], ["weight_decay must be a finite number >= 0"]),
        (["train", "--val-split", "nan"], ["val_split must be in [0, 0.5]"]),
        (["train", "--seed", "-1"], ["seed must be from 0 to"]),
        (["train", "--epochs", "0"], ["epochs must be from 1 to 1000"]),
        (["submit", "--batch-size", "0"], ["batch_size must be"]),
        (["sweep", "--lr", "0.1,nan"], ["sweep config 2 of 2", "lr must be a finite number > 0, got nan"]),
    ],
)
def test_every_numeric_flag_refuses_nan_infinities_and_out_of_range_values_in_one_line(tmp_path, capsys, argv, words):
    try:
        code = main([*argv, "--results", str(tmp_path)])
    except SystemExit as exc:  # argparse's own errors exit directly
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert_one_line_error(err, *words)


def test_sweep_refuses_a_huge_grid_before_building_it_and_max_runs_raises_the_limit(tmp_path, capsys, monkeypatch):
    from engine.runs import sweeps

    built = []
    monkeypatch.setattr(sweeps, "plan_sweep", lambda store, grid, reuse=False, download=False: built.append(grid) or [])
    lrs = ",".join(f"{0.001 * (i + 1):g}" for i in range(1000))
    sizes = ",".join(str(i + 1) for i in range(1000))
    code = main(["sweep", "--lr", lrs, "--batch-size", sizes, "--results", str(tmp_path)])
    assert code == 2 and not built  # 10^6 combinations once ran for 90 s at 1.1 GB
    assert_one_line_error(capsys.readouterr().err, "1,000,000 runs", "limit of 100 runs", "--max-runs")
    code = main(["sweep", "--lr", "0.1,0.01,0.001", "--seed", "0,1", "--max-runs", "5", "--results", str(tmp_path)])
    assert code == 2 and "6 runs, over the limit of 5" in capsys.readouterr().err
    code = main(["sweep", "--lr", "0.1,0.01", "--seeds", "60", "--results", str(tmp_path)])  # seeds count too
    assert code == 2 and "120 runs (2 configs x 60 seeds), over the limit of 100" in capsys.readouterr().err
    main(
        ["sweep", "--lr", "0.1,0.01,0.001", "--seed", "0,1", "--max-runs", "6", "--dry-run", "--results", str(tmp_path)]
    )
    assert len(built) == 1 and len(built[0]) == 6


def test_show_names_a_run_by_a_unique_prefix_of_its_id_and_lists_candidates_for_an_ambiguous_one(tmp_path, capsys):
    store = Store(tmp_path)
    a = store.create_run(TrainConfig(), now=1_700_000_000.0)
    b = store.create_run(TrainConfig(), now=1_700_000_000.25)
    store.close()
    assert main(["show", a[:22], "--json", "--results", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == a
    assert main(["show", a[:15], "--results", str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "is ambiguous: 2 runs start with it", a, b)


def test_show_says_when_a_metrics_line_is_damaged_or_the_run_folder_is_gone(finished_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "results"
    shutil.copytree(finished_root, root)
    store = Store(root)
    first, second = store.list_runs()
    store.close()
    metrics = first.path / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text('{"epoch": 1, "train_lo\x00ss": \n' + lines[1])
    assert main(["show", first.id, "--json", "--results", str(root)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["damaged_metrics_lines"] == [1]
    assert "line(s) 1 of" in err and "damaged" in err
    shutil.rmtree(second.path)  # deleted by hand while the run was idle
    assert main(["list", "--results", str(root)]) == 0
    row = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(second.id))
    assert " missing " in row and " done " not in row
    assert main(["show", second.id, "--results", str(root)]) == 0
    assert "is gone" in capsys.readouterr().err
