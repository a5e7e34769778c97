"""engine.track: a script's own training loop recorded as a Lensboard run, live, beside workers and other scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine import track
from engine.config import TrainConfig
from engine.errors import ConfigError
from engine.runs import jobs, sweeps
from engine.runs.procs import HOST
from engine.runs.records import RunKind, RunState
from engine.runs.store import Store
from engine.runs.worker import Worker
from engine.track import TrackError
from tests.waiting import WAIT, wait_until

PROJECT = Path(__file__).resolve().parent.parent
CONFIG = {
    "arch": "my_cnn",
    "lr": 1e-3,
    "batch_size": 64,
    "epochs": 3,
    "dataset": "mnist_sample",
    "seed": 1,
    "dropout": 0.25,
    "hidden": [128, 64],
}


def script(tmp_path: Path, body: str, name: str = "train_mine.py") -> Path:
    """A user's training script; it waits for files named in `go` before each step the test controls."""
    path = tmp_path / name
    path.write_text(
        "import sys, time\nfrom pathlib import Path\nfrom engine import track\n\n"
        "def wait_for(name):\n    while not Path(name).exists():\n        time.sleep(0.02)\n\n" + textwrap.dedent(body)
    )
    return path


@pytest.fixture
def start():
    """Start a script with LENSBOARD_RESULTS set; every one still running is killed at the end of the test."""
    procs: list[subprocess.Popen] = []

    def launch(path: Path, results: Path, *args: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(PROJECT), LENSBOARD_RESULTS=str(results))
        proc = subprocess.Popen(
            [sys.executable, str(path), *args],
            cwd=path.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield launch
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def tracked_runs(store: Store) -> list:
    return store.list_runs(kind=RunKind.TRACKED)


# ---------------------------------------------------------------- in this process


def test_a_run_shows_its_epochs_while_it_runs_and_ends_done(tmp_path):
    reader = Store(tmp_path / "results")
    with track.run(config=CONFIG, results=tmp_path / "results") as run:
        [record] = tracked_runs(reader)
        assert record.id == run.id and record.state == RunState.RUNNING and record.kind == "tracked"
        assert (record.arch, record.dataset, record.epochs, record.config) == ("my_cnn", "mnist_sample", 3, CONFIG)
        run.log(epoch=1, train_loss=1.5, test_loss=1.2, test_acc=0.61, grad_norm=3.5)
        run.log(epoch=2, train_loss=0.9, test_loss=0.8, test_acc=0.74, seconds=2.0)
        live = reader.get_run(run.id)
        assert (live.state, live.epoch, live.final_test_acc, live.best_test_acc) == (RunState.RUNNING, 2, 0.74, 0.74)
        assert live.progress == pytest.approx(2 / 3)
        (run.dir / "notes.txt").write_text("the script's own file")
    done = reader.get_run(run.id)
    rows = reader.metrics(run.id)
    assert done.state == RunState.DONE and done.error is None
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["grad_norm"] == 3.5 and rows[1]["seconds"] == 2.0
    assert rows[0]["seconds"] >= 0  # measured when not given
    assert done.sec_per_epoch == pytest.approx((rows[0]["seconds"] + 2.0) / 2)
    assert json.loads((run.dir / "config.json").read_text()) == CONFIG
    assert sorted(p.name for p in run.dir.iterdir()) == ["config.json", "metrics.jsonl", "notes.txt"]


def test_an_exception_in_the_block_leaves_the_run_failed_with_its_message_and_epochs(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with track.run(config={"lr": 0.1}, results=tmp_path, name="exploding") as run:
            run.log(epoch=1, train_loss=2.0)
            run.log(epoch=2, train_loss=1 / 0)
    record = Store(tmp_path).get_run(run.id)
    assert record.state == RunState.FAILED
    assert record.error == "ZeroDivisionError: division by zero; 1 logged epoch(s) kept"
    assert "1 / 0" in (run.dir / "traceback.txt").read_text()
    assert [r["epoch"] for r in Store(tmp_path).metrics(run.id)] == [1]
    assert record.arch == "exploding" and record.config == {"lr": 0.1, "name": "exploding"}
    assert not run.paths.foreground.exists()


def test_ctrl_c_in_the_block_leaves_the_run_cancelled(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with track.run(results=tmp_path) as run:
            raise KeyboardInterrupt
    record = Store(tmp_path).get_run(run.id)
    assert record.state == RunState.CANCELLED and "Ctrl+C" in record.error


@pytest.mark.parametrize(
    "metrics, message",
    [
        ({"train_loss": 1.0}, "needs epoch=N"),
        ({"epoch": 2, "train_loss": "low"}, "train_loss must be a number"),
        ({"epoch": 2, "train_loss": [1.0, 2.0]}, "train_loss must be a number"),
        ({"epoch": 2, "test_acc": 97.5}, r"test_acc must be a fraction in \[0, 1\] \(97.5 looks like a percentage"),
        ({"epoch": 1, "train_loss": 1.0}, "epoch 1 is not after the last logged epoch 1"),
        ({"epoch": 0, "train_loss": 1.0}, "epoch 0 is not after the last logged epoch 1"),
        ({"epoch": 2.5, "train_loss": 1.0}, "epoch must be a whole number"),
        ({"epoch": 2}, "has no metric"),
    ],
)
def test_bad_log_input_is_a_clear_error_that_loses_nothing_logged(tmp_path, metrics, message):
    with track.run(results=tmp_path) as run:
        run.log(epoch=1, train_loss=1.0, test_acc=0.5)
        with pytest.raises(TrackError, match=message):
            run.log(**metrics)
        run.log(epoch=2, train_loss=0.5, test_acc=0.6)  # the run goes on
    store = Store(tmp_path)
    assert [r["epoch"] for r in store.metrics(run.id)] == [1, 2]
    assert store.get_run(run.id).state == RunState.DONE


def test_numpy_scalars_and_one_element_tensors_are_logged_as_numbers(tmp_path):
    import numpy as np
    import torch

    with track.run(config={"lr": np.float32(0.5), "epochs": np.int64(2)}, results=tmp_path) as run:
        row = run.log(epoch=np.int64(1), train_loss=torch.tensor(0.25, requires_grad=True), test_acc=np.float64(0.5))
    assert row == {"epoch": 1, "train_loss": 0.25, "test_acc": 0.5, "seconds": row["seconds"]}
    assert Store(tmp_path).get_run(run.id).config == {"lr": 0.5, "epochs": 2}


@pytest.mark.parametrize(
    "config, message",
    [
        ([("lr", 0.1)], "config must be a dict of plain values"),
        ({"model": object()}, r"config\['model'\] is a object; config values must be plain"),
        ({"layers": [[1, 2]]}, r"config\['layers'\] is a list"),
        ({"lr": float("nan")}, r"config\['lr'\] must be a finite number"),
        ({"lr": "1e-3"}, r"config\['lr'\] must be a number \(Lensboard shows it beside its own runs' lr\)"),
        ({"epochs": 2.5}, r"config\['epochs'\] must be an integer"),
        ({"epochs": 0}, r"config\['epochs'\] is how many epochs"),
        ({"dataset": 7}, r"config\['dataset'\] must be a string"),
        ({1: "one"}, "config keys must be non-empty strings"),
    ],
)
def test_a_config_that_is_not_a_dict_of_plain_values_is_refused_before_any_run_is_made(tmp_path, config, message):
    with pytest.raises(TrackError, match=message):
        track.run(config=config, results=tmp_path)
    assert Store(tmp_path).list_runs() == []


def test_name_twice_with_two_values_is_refused(tmp_path):
    with pytest.raises(TrackError, match="give the name once"):
        track.run(config={"name": "a"}, name="b", results=tmp_path)


def test_logging_after_the_block_is_refused(tmp_path):
    with track.run(results=tmp_path) as run:
        run.log(epoch=1, train_loss=1.0)
    with pytest.raises(TrackError, match="has ended"):
        run.log(epoch=2, train_loss=0.5)


def test_a_run_deleted_from_the_dashboard_lets_the_script_go_on(tmp_path):
    with track.run(results=tmp_path) as run:
        run.log(epoch=1, train_loss=1.0)
        Store(tmp_path).delete_run(run.id)
        with pytest.warns(UserWarning, match="was deleted from Lensboard"):
            run.log(epoch=2, train_loss=0.5)
        run.log(epoch=3, train_loss=0.4)
    assert Store(tmp_path).list_runs() == [] and not run.dir.exists()


def test_every_reader_of_a_run_copes_with_a_tracked_one(tmp_path, capsys):
    from engine.cli.main import main
    from engine.runs.embedding import embedder_for_run

    with track.run(config=CONFIG, results=tmp_path) as run:
        run.log(epoch=1, train_loss=1.0, test_acc=0.5)
    store = Store(tmp_path)
    record = store.get_run(run.id)
    with pytest.raises(ConfigError, match="recorded by a script .* no training config or model"):
        record.train_config()
    with pytest.raises(ConfigError, match="recorded by a script"):
        embedder_for_run(record)
    with pytest.raises(jobs.JobError, match="only train runs can be retried"):
        jobs.retry(store, run.id)
    assert sweeps.find_finished(store, TrainConfig()) is None
    assert main(["list", "--results", str(tmp_path)]) == 0 and "my_cnn" in capsys.readouterr().out
    assert main(["show", run.id, "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dropout=0.25" in out and "epoch 1  seconds " in out and "test_acc 0.5  train_loss 1\n" in out
    assert main(["embed", run.id, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "recorded by a script" in err and err.count("\n") == 1


def test_cancel_of_a_running_tracked_run_says_to_stop_the_script(tmp_path):
    with track.run(results=tmp_path) as run:
        with pytest.raises(jobs.JobError, match="recorded by a running script"):
            jobs.cancel(Store(tmp_path), run.id)


def test_the_tracking_module_never_imports_torch(tmp_path):
    code = (
        "import sys\nfrom engine import track\n"
        f"with track.run(config={{'lr': 0.1}}, results={str(tmp_path)!r}) as run:\n"
        "    run.log(epoch=1, train_loss=1.0)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(PROJECT)),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- scripts in their own processes


LIVE = """
with track.run(config={"arch": "my_cnn", "epochs": 2, "lr": 0.01}) as run:
    print(run.id, flush=True)
    run.log(epoch=1, train_loss=1.0, test_loss=0.9, test_acc=0.6)
    wait_for("go")
    run.log(epoch=2, train_loss=0.5, test_loss=0.6, test_acc=0.8)
    if sys.argv[1:] == ["fail"]:
        raise ValueError("out of memory, pretend")
"""


def test_a_scripts_rows_are_visible_to_a_reader_while_it_runs_and_it_ends_done(tmp_path, start):
    results = tmp_path / "results"
    proc = start(script(tmp_path, LIVE), results)
    run_id = proc.stdout.readline().decode().strip()
    store = Store(results)
    record = wait_until(lambda: (r := store.get_run(run_id)).epoch == 1 and r, what="the first epoch")
    assert [row["epoch"] for row in store.metrics(run_id)] == [1]
    assert record.state == RunState.RUNNING and record.epoch == 1 and record.final_test_acc == 0.6
    (tmp_path / "go").touch()
    assert proc.wait(timeout=WAIT) == 0
    record = store.get_run(run_id)
    assert record.state == RunState.DONE and record.epoch == 2 and record.best_test_acc == 0.8


def test_a_script_that_raises_leaves_its_run_failed_with_the_message(tmp_path, start):
    results = tmp_path / "results"
    (tmp_path / "go").touch()
    proc = start(script(tmp_path, LIVE), results, "fail")
    run_id = proc.stdout.readline().decode().strip()
    assert proc.wait(timeout=WAIT) == 1 and b"out of memory, pretend" in proc.stderr.read()
    record = Store(results).get_run(run_id)
    assert record.state == RunState.FAILED and record.error.startswith("ValueError: out of memory, pretend")
    assert [r["epoch"] for r in Store(results).metrics(run_id)] == [1, 2]


def test_a_killed_script_leaves_its_run_interrupted_and_a_live_one_is_left_alone(tmp_path, start):
    results = tmp_path / "results"
    killed = start(script(tmp_path, LIVE), results)
    alive = start(script(tmp_path, LIVE, "other.py"), results)
    killed_id, alive_id = (p.stdout.readline().decode().strip() for p in (killed, alive))
    store = Store(results)
    wait_until(lambda: store.get_run(killed_id).epoch == store.get_run(alive_id).epoch == 1, what="both first epochs")
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=WAIT)
    assert store.get_run(killed_id).state == RunState.RUNNING  # nobody told the database

    Worker(store, log=lambda m: None).recover()  # what a worker does every few seconds

    record = store.get_run(killed_id)
    assert record.state == RunState.INTERRUPTED and f"pid {killed.pid}" in record.error
    assert [r["epoch"] for r in store.metrics(killed_id)] == [1]  # what it logged is kept
    assert jobs.jobs_for_run(store, killed_id) == []  # nothing to resume: it was the script's own loop
    assert store.get_run(alive_id).state == RunState.RUNNING
    (tmp_path / "go").touch()
    assert alive.wait(timeout=WAIT) == 0 and store.get_run(alive_id).state == RunState.DONE


def test_a_reused_pid_is_not_taken_for_the_script_that_died(tmp_path):
    with track.run(results=tmp_path) as run:
        info = json.loads(run.paths.foreground.read_text())
        assert info["host"] == HOST and info["pid"] == os.getpid() and info["started"]
        store = Store(tmp_path)
        assert track.interrupt_orphaned_scripts(store) == []  # this process is alive: left alone
        run.paths.foreground.write_text(json.dumps(dict(info, started=info["started"] - 1)))
        [(run_id, reason)] = track.interrupt_orphaned_scripts(store)  # same pid, another process
        assert run_id == run.id and store.get_run(run.id).state == RunState.INTERRUPTED


BUSY = """
with track.run(config={"arch": sys.argv[1], "epochs": 20, "seed": int(sys.argv[2])}) as run:
    for epoch in range(1, 21):
        run.log(epoch=epoch, train_loss=1 / epoch, test_loss=1.1 / epoch, test_acc=0.5 + epoch / 50)
        if epoch == 10:
            wait_for("go")
"""


def test_two_scripts_at_once_beside_a_worker_training_a_run_all_finish_whole(tmp_path, start):
    from engine.runs.workers import worker_status

    results = tmp_path / "results"
    store = Store(results)
    run_id = sweeps.submit(store, TrainConfig(arch="basic_nn", epochs=3, batch_size=32, train_limit=128))
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "worker",
                "--results",
                str(results),
                "--poll",
                "0.1",
                "--stale-after",
                "1",
                "--batch-delay",
                "0.05",
                "--idle-exit",
                "120",
            ],
            cwd=PROJECT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: worker_status(store).alive, what="the worker to register")
        path = script(tmp_path, BUSY)
        scripts = [start(path, results, "mine_a", "1"), start(path, results, "mine_b", "2")]
        wait_until(
            lambda: (
                len(tracked := tracked_runs(store)) == 2
                and all(r.epoch == 10 for r in tracked)
                and store.get_run(run_id).state.finished
            ),
            what="both scripts halfway and the worker's run done",
        )
        # The idle worker looks for dead foreground processes every 0.5 s (--stale-after 1); let it look a few times.
        since = time.time()
        wait_until(lambda: worker_status(store).workers[0].heartbeat > since + 2, what="the worker's idle loop")
        Worker(store, log=lambda m: None).recover()
        assert all(r.state == RunState.RUNNING for r in tracked_runs(store))
        (tmp_path / "go").touch()
        assert [p.wait(timeout=WAIT) for p in scripts] == [0, 0], [p.stderr.read() for p in scripts]
    finally:
        worker.kill()
        worker.wait(timeout=WAIT)
    tracked = tracked_runs(store)
    assert sorted(r.arch for r in tracked) == ["mine_a", "mine_b"]
    assert all(r.state == RunState.DONE and r.epoch == 20 and r.error is None for r in tracked)
    assert all([row["epoch"] for row in store.metrics(r.id)] == list(range(1, 21)) for r in tracked)
    assert store.get_run(run_id).state == RunState.DONE and len(store.metrics(run_id)) == 3
