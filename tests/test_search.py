"""Random and TPE searches on real tiny runs: reproducible with a fixed seed, pruning that keeps the
finished epochs, resuming after a killed worker, extending a finished search, the early-stopping
replay on hand-made curves, and `sweep-report`'s JSON."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.cli.main import main
from engine.config import TrainConfig
from engine.errors import ReplayError
from engine.runs import jobs, search, sweeps
from engine.runs.jobs import JobState
from engine.runs.records import RunState
from engine.runs.replay import ReplayRun, replay
from engine.runs.search_space import SearchSpec, build_spec, parse_field
from engine.runs.store import Store
from engine.runs.study import Trial
from engine.runs.sweep_report import list_sweeps, sweep_report
from engine.runs.worker import Worker
from tests.test_worker import epochs_in, spawn, wait_until  # noqa: F401  (spawn is a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TINY = TrainConfig(arch="basic_nn", dataset="mnist_sample", epochs=3, batch_size=32, train_limit=200, val_split=0.2)
REPORT_KEYS = {"sweep", "search", "objective", "trials", "best", "importance", "epochs_run", "epochs_budget"}


def drain(store: Store) -> int:
    """Run queued jobs in this process until the queue is empty; returns how many ran."""
    worker, ran = Worker(store, log=lambda message: None), 0
    while worker.step() is not None:
        ran += 1
    return ran


def lr_search(**kwargs) -> SearchSpec:
    base = kwargs.pop("base", TINY)
    return build_spec(base, {"lr": parse_field("lr", kwargs.pop("lr", "1e-5:1e-1:log"))}, **kwargs)


def made(store: Store, sweep_id: str) -> list[Trial]:
    return search.load_trials(store, sweep_id)


# ---------------------------------------------------------------- reproducible


def test_a_tpe_search_with_a_fixed_seed_makes_the_same_trials_end_to_end(tmp_path):
    spec = lr_search(base=TINY.replace(epochs=1), sampler="tpe", trials=5, seed=11)
    assert spec.startup < spec.trials  # the last trials come from TPE's model, not at random
    outcomes = []
    for name in ("a", "b"):
        store = Store(tmp_path / name)
        sweep_id, _ = sweeps.start_search(store, spec)
        drain(store)
        report = sweep_report(store, sweep_id)
        outcomes.append([(t.params, t.value, t.state) for t in report.trials])
    assert outcomes[0] == outcomes[1] and len(outcomes[0]) == 5
    assert len({json.dumps(p) for p, _, _ in outcomes[0]}) == 5  # five different learning rates


# ---------------------------------------------------------------- pruning


@pytest.fixture(scope="module")
def pruned_root(tmp_path_factory):
    """A finished ASHA search of two trials: a good learning rate first, then one far too small
    (enqueued, so the answer is known): ASHA stops the second after epoch 1 of 3."""
    root = tmp_path_factory.mktemp("pruned") / "results"
    store = Store(root)
    spec = lr_search(sampler="random", trials=2, prune="asha", parallel=1, enqueued=({"lr": 1e-2}, {"lr": 1e-5}))
    sweep_id, _ = sweeps.start_search(store, spec)
    drain(store)
    store.close()
    return root, sweep_id


def test_a_pruned_trial_keeps_its_finished_epochs_and_ends_in_the_state_pruned(pruned_root):
    root, sweep_id = pruned_root
    store = Store(root)
    good, bad = made(store, sweep_id)
    assert (good.params, good.state, len(good.rows)) == ({"lr": 1e-2}, "done", 3)
    assert (bad.params, bad.state, bad.pruned_at) == ({"lr": 1e-5}, "pruned", 1)
    run = store.get_run(bad.run_id)
    assert run.state == RunState.PRUNED and run.state.finished
    assert [r["epoch"] for r in store.metrics(run.id)] == [1] and run.epoch == 1
    assert "stopped early by ASHA after epoch 1 of 3" in run.error and "1 finished epoch(s) kept" in run.error
    assert (run.path / "checkpoint.pt").exists() and not (run.path / "model.pt").exists()
    [job] = jobs.jobs_for_run(store, run.id)
    assert job.state == JobState.DONE and "stopped early" in job.note


def test_a_pruned_trial_whose_worker_died_before_it_stopped_is_pruned_again_at_once(pruned_root, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(pruned_root[0], root)
    store = Store(root)
    _, bad = made(store, pruned_root[1])
    # as a worker that died right after the pruning decision leaves it: the run interrupted, its job requeued
    store.set_state(bad.run_id, RunState.INTERRUPTED, "worker stopped responding")
    store.conn.execute("UPDATE jobs SET state = 'queued', worker = NULL WHERE run_id = ?", (bad.run_id,))
    assert drain(store) == 1
    run = store.get_run(bad.run_id)
    assert run.state == RunState.PRUNED and [r["epoch"] for r in store.metrics(run.id)] == [1]
    assert len(made(store, pruned_root[1])) == 2  # the search had all its trials: nothing new asked for


def test_list_and_show_json_report_pruned_as_the_state_of_a_pruned_run(pruned_root, capsys):
    root, sweep_id = pruned_root
    assert main(["list", "--json", "--results", str(root)]) == 0
    states = {r["id"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    pruned = [t.run_id for t in made(Store(root), sweep_id) if t.state == "pruned"]
    assert [states[r] for r in pruned] == ["pruned"]
    assert main(["show", pruned[0], "--json", "--results", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "pruned"


def test_sweep_report_json_has_exactly_the_keys_of_the_issue(pruned_root, capsys):
    root, sweep_id = pruned_root
    assert main(["sweep-report", sweep_id, "--json", "--results", str(root)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == REPORT_KEYS
    assert (report["sweep"], report["search"], report["objective"]) == (sweep_id, "random", "val_acc")
    assert [set(t) for t in report["trials"]] == [{"run", "state", "params", "value", "epochs"}] * 2
    assert [(t["state"], t["epochs"], t["params"]) for t in report["trials"]] == [
        ("done", 3, {"lr": 0.01}),
        ("pruned", 1, {"lr": 1e-5}),
    ]
    assert set(report["best"]) == {"run", "params", "value"} and report["best"]["params"] == {"lr": 0.01}
    assert report["best"]["value"] == report["trials"][0]["value"]  # val_acc at its last epoch
    assert (report["epochs_run"], report["epochs_budget"]) == (4, 6)


def test_a_search_that_already_stopped_trials_early_cannot_be_replayed(pruned_root):
    root, sweep_id = pruned_root
    with pytest.raises(ReplayError, match="already stopped trials early"):
        sweep_report(Store(root), sweep_id, "asha")


# ---------------------------------------------------------------- resume, extend, pause


def test_a_search_resumes_after_its_worker_is_killed_and_loses_no_trial_or_epoch(tmp_path, spawn):  # noqa: F811
    root = tmp_path / "results"
    store = Store(root)
    spec = lr_search(base=TINY.replace(train_limit=256), sampler="tpe", trials=3, parallel=1, seed=5)
    sweep_id, [first_run] = sweeps.start_search(store, spec)
    first = spawn(root, "--batch-delay", "0.05")
    wait_until(lambda: epochs_in(store, first_run), what="the first trial's first epoch")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    before = store.metrics(first_run)
    assert 1 <= len(before) < 3, "the worker must die in the middle of the first trial"

    second = spawn(root, "--stale-after", "2")
    wait_until(
        lambda: len(made(store, sweep_id)) == 3 and all(RunState(t.state).finished for t in made(store, sweep_id)),
        what="the search to finish",
    )
    second.send_signal(signal.SIGTERM)
    trials = made(store, sweep_id)
    assert [t.number for t in trials] == [0, 1, 2] and [t.state for t in trials] == ["done"] * 3
    assert all([r["epoch"] for r in t.rows] == [1, 2, 3] for t in trials)
    assert trials[0].rows[: len(before)] == before  # its finished epochs were kept, not trained again
    assert [j.attempts for j in jobs.jobs_for_run(store, first_run)] == [2]
    assert jobs.queue_length(store) == 0


def test_a_finished_search_is_extended_with_more_trials_keeping_the_ones_it_has(tmp_path, capsys):
    root = tmp_path / "results"
    store = Store(root)
    spec = lr_search(base=TINY.replace(epochs=1), sampler="tpe", trials=2, seed=2)
    sweep_id, _ = sweeps.start_search(store, spec)
    drain(store)
    before = [(t.run_id, t.params) for t in made(store, sweep_id)]
    assert len(before) == 2 and search.top_up(store, sweep_id) == []  # finished: nothing more to ask

    assert main(["sweep", "--resume", sweep_id, "--trials", "3", "--results", str(root)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].endswith(sweep_id) and "4 of 5 trial(s) made" in out[-1]
    assert sum(line.startswith("queued trial ") for line in out) == 2  # two at once (parallel 2)
    drain(store)
    trials = made(store, sweep_id)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert [(t.run_id, t.params) for t in trials[:2]] == before
    assert all(t.state == "done" for t in trials) and search.load_spec(store, sweep_id).trials == 5


def test_cancelling_a_trial_pauses_the_search_and_resume_goes_on(tmp_path, capsys):
    root = tmp_path / "results"
    store = Store(root)
    spec = lr_search(base=TINY.replace(epochs=1), sampler="random", trials=3, parallel=1)
    sweep_id, [first] = sweeps.start_search(store, spec)
    jobs.cancel(store, first)
    assert drain(store) == 0 and len(made(store, sweep_id)) == 1  # paused: nobody asks for more

    assert main(["sweep", "--resume", sweep_id, "--results", str(root)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(sweep_id)
    drain(store)
    assert [t.state for t in made(store, sweep_id)] == ["cancelled", "done", "done"]


def test_two_workers_ending_trials_at_once_never_ask_for_the_same_slot(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    sweep_id, runs = sweeps.start_search(store, lr_search(trials=3, parallel=2), check=False)
    for run_id in runs:  # both trials end at the same moment, on two workers
        store.set_state(run_id, RunState.DONE)
    stores = [Store(root), Store(root)]
    queued: list[list[str]] = []
    threads = [threading.Thread(target=lambda s=s: queued.append(search.top_up(s, sweep_id))) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(q) for q in queued) == [0, 1]  # one slot was left, and it was filled once
    assert [t.number for t in made(store, sweep_id)] == [0, 1, 2]


def test_a_trial_stopped_by_a_full_disk_resumes_before_the_search_asks_for_the_next_one(tmp_path, full_disk):
    store = Store(tmp_path / "results")
    spec = lr_search(base=TINY.replace(epochs=2), sampler="random", trials=2, parallel=1)
    sweep_id, [first] = sweeps.start_search(store, spec, check=False)
    full_disk.fill()
    worker = Worker(store, retry_backoff=(0.0, 0.0), log=lambda message: None)
    assert worker.step().state == JobState.QUEUED  # back on the queue, not failed
    assert store.get_run(first).state == RunState.INTERRUPTED
    assert len(made(store, sweep_id)) == 1  # the trial is not over: no slot is free for the next one

    full_disk.free()  # space is back
    while worker.step() is not None:
        pass
    trials = made(store, sweep_id)
    assert [t.state for t in trials] == ["done", "done"] and [len(t.rows) for t in trials] == [2, 2]


# ---------------------------------------------------------------- replay on hand-made curves


def rising(run: str, first: float, step: float = 0.02, epochs: int = 3) -> ReplayRun:
    return ReplayRun(run, {e: first + step * (e - 1) for e in range(1, epochs + 1)}, epochs, True)


def test_asha_replay_stops_what_falls_outside_the_best_third_and_keeps_the_winner():
    runs = [
        rising("r0", 0.5),
        rising("r1", 0.9),
        rising("r2", 0.4),
        rising("r3", 0.8),
        rising("r4", 0.95),
        rising("r5", 0.3),
    ]
    # epoch 1, in order: r0 first is promoted; r1 beats it; r2 and r3 are below the best of 3 and 4;
    # r4 is the new best; r5 is below the second best of six (the top third)
    result = replay(runs, "asha", "val_acc")
    assert result.stopped == ("r2", "r3", "r5") and set(result.stopped_at.values()) == {1}
    assert (result.epochs_run, result.epochs_replayed) == (18, 12)
    assert result.epochs_saved_fraction == pytest.approx(1 / 3)
    assert result.winner == "r4" and result.winner_survives is True
    assert result.to_json() == {
        "rule": "asha",
        "stopped": ["r2", "r3", "r5"],
        "epochs_saved_fraction": 0.3333,
        "winner_survives": True,
    }


def test_asha_replay_says_when_it_would_have_stopped_a_late_bloomer_that_won():
    runs = [rising("r0", 0.5), rising("r1", 0.9), rising("r2", 0.4), rising("r3", 0.8, step=0.1)]
    result = replay(runs, "asha", "val_acc")
    assert result.winner == "r3" and result.stopped_at["r3"] == 1 and result.winner_survives is False


def test_median_replay_stops_a_run_below_the_median_of_the_finished_ones_at_the_same_epoch():
    runs = [rising(f"r{i}", v, step=0.05) for i, v in enumerate((0.5, 0.6, 0.7, 0.8, 0.9))]
    runs += [rising("below", 0.65), ReplayRun("above", {1: 0.75, 2: 0.76, 3: 0.77}, 3, True)]
    result = replay(runs, "median", "val_acc")
    assert result.stopped == ("below",) and result.stopped_at == {"below": 1}
    assert result.winner == "r4" and result.winner_survives


def test_replay_on_a_loss_minimises_it():
    runs = [ReplayRun("a", {1: 0.5, 2: 0.4}, 2, True), ReplayRun("b", {1: 0.9, 2: 0.1}, 2, True)]
    result = replay(runs, "asha", "val_loss")
    assert result.stopped == ("b",) and result.winner == "b" and result.winner_survives is False


def test_hyperband_replay_is_deterministic_and_never_saves_more_than_it_ran():
    runs = [rising(f"r{i}", v, epochs=9) for i, v in enumerate((0.5, 0.7, 0.6, 0.9, 0.4, 0.8, 0.3, 0.85, 0.2))]
    a, b = replay(runs, "hyperband", "val_acc", "sweep-x"), replay(runs, "hyperband", "val_acc", "sweep-x")
    assert a == b and 0 < a.epochs_saved_fraction < 1 and set(a.stopped) < {r.run for r in runs}


def test_an_unknown_replay_rule_names_the_valid_ones():
    with pytest.raises(ReplayError, match="median, asha, hyperband"):
        replay([rising("a", 0.5)], "none", "val_acc")


# ---------------------------------------------------------------- grids


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory):
    """A finished 2 x 2 grid (lr x batch size) with a validation split, and one without."""
    root = tmp_path_factory.mktemp("grid") / "results"
    store = Store(root)
    with_val, _ = sweeps.submit_sweep(
        store, sweeps.sweep_grid(TINY.replace(epochs=2), lr=[1e-2, 1e-4], batch_size=[32, 64])
    )
    without, _ = sweeps.submit_sweep(store, sweeps.sweep_grid(TINY.replace(epochs=2, val_split=0.0), lr=[1e-2, 1e-4]))
    drain(store)
    store.close()
    return root, with_val, without


def test_a_grid_report_judges_on_validation_accuracy_with_importance_summing_to_one(grid_root, capsys):
    root, sweep_id, _ = grid_root
    assert main(["sweep-report", sweep_id, "--replay", "asha", "--json", "--results", str(root)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == REPORT_KEYS | {"replay"}
    assert (report["search"], report["objective"]) == ("grid", "val_acc")
    assert [set(t["params"]) for t in report["trials"]] == [{"lr", "batch_size"}] * 4
    assert set(report["importance"]) == {"lr", "batch_size"}
    assert sum(report["importance"].values()) == pytest.approx(1.0)
    assert set(report["replay"]) == {"rule", "stopped", "epochs_saved_fraction", "winner_survives"}
    assert (report["epochs_run"], report["epochs_budget"]) == (8, 8)


def test_a_grid_without_a_validation_split_falls_back_to_test_accuracy_and_says_so(grid_root, capsys):
    root, _, sweep_id = grid_root
    report = sweep_report(Store(root), sweep_id, "median")
    assert report.objective == "test_acc" and not report.on_validation
    assert main(["sweep-report", sweep_id, "--results", str(root)]) == 0
    assert "TEST set: these runs held out no validation split" in capsys.readouterr().out


def test_list_sweeps_names_grids_and_searches_newest_first(grid_root, pruned_root):
    root, with_val, without = grid_root
    sweeps = list_sweeps(Store(root))
    assert [s.sweep for s in sweeps] == [without, with_val] and {s.search for s in sweeps} == {"grid"}
    [found] = list_sweeps(Store(pruned_root[0]))
    assert (found.search, found.runs, found.planned, found.states) == ("random", 2, 2, {"done": 1, "pruned": 1})


def test_sweep_report_of_an_unknown_sweep_is_one_line(tmp_path, capsys):
    assert main(["sweep-report", "sweep-nope", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no sweep 'sweep-nope'" in err[0]


def test_a_search_starts_from_the_command_line_and_its_last_line_ends_with_the_sweep_id(tmp_path, capsys):
    root = tmp_path / "results"
    assert (
        main(
            [
                "sweep",
                "--search",
                "random",
                "--trials",
                "3",
                "--lr",
                "1e-4:1e-1:log",
                "--arch",
                "basic_nn,tiny_cnn",
                "--epochs",
                "1",
                "--train-limit",
                "100",
                "--results",
                str(root),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    sweep_id = out[-1].split()[-1]
    spec = search.load_spec(Store(root), sweep_id)
    assert spec.sampler == "random" and spec.names == ["lr", "arch"] and spec.base.val_split == 0.1
    assert sum(line.startswith("queued trial ") for line in out) == 2


def test_sweep_report_answers_without_importing_torch(grid_root):
    root, sweep_id, _ = grid_root  # a finished grid: the report computes Optuna's importance too
    code = (
        "import sys; from engine.cli.main import main; code = main(sys.argv[1:]); "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "sweep-report", sweep_id, "--json", "--results", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.strip().splitlines()[-1] == "NO-TORCH 0", (out.stdout, out.stderr)
    assert '"importance"' in out.stdout


def test_a_search_over_your_own_model_file_records_its_absolute_path_and_hash_on_each_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.py").write_text(
        "from torch import nn\n\n\nclass Mine(nn.Module):\n    def __init__(self, num_classes):\n"
        "        super().__init__()\n        self.fc = nn.Linear(784, num_classes)\n\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n"
    )
    store = Store(tmp_path / "results")
    spec = build_spec(
        TINY.replace(epochs=1),
        {"arch": ["basic_nn", "models/mine.py:Mine"]},
        sampler="random",
        trials=2,
        parallel=2,
        enqueued=({"arch": "models/mine.py:Mine"}, {"arch": "basic_nn"}),
    )
    sweep_id, (mine, builtin) = sweeps.start_search(store, spec)
    absolute = f"{(tmp_path / 'models' / 'mine.py').resolve()}:Mine"
    assert search.load_spec(store, sweep_id).dimensions[0].choices == ("basic_nn", absolute)
    config = store.get_run(mine).train_config()
    assert config.arch == absolute and config.arch_sha256 is not None
    assert store.get_run(builtin).train_config().arch_sha256 is None
    monkeypatch.chdir(ROOT)  # a worker started in another folder still finds the file
    drain(store)
    assert [t.state for t in made(store, sweep_id)] == ["done", "done"]


def test_a_read_only_registry_from_before_searches_still_lists_and_reports_its_grids(tmp_path):
    root = tmp_path / "results"
    store = Store(root)
    store.create_run(TINY, sweep_id="sweep-old")
    store.close()
    conn = sqlite3.connect(root / "lensboard.sqlite3")
    conn.executescript("DROP TABLE searches; DROP TABLE search_trials;")  # as a database made before searches
    conn.close()
    reader = Store(root, read_only=True)
    [summary] = list_sweeps(reader)
    assert (summary.sweep, summary.search, summary.runs) == ("sweep-old", "grid", 1)
    assert sweep_report(reader, "sweep-old").search == "grid"
