"""The Sweeps page, the Train page's search mode and the Runs page's pruned state, in Streamlit's AppTest,
on sweeps made by the real engine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.sweeps import replay_reading
from engine.config import TrainConfig
from engine.runs import jobs, search, sweeps
from engine.runs.search_space import build_spec, parse_field
from engine.runs.store import Store
from engine.runs.sweep_report import list_sweeps, replay_report, sweep_report
from engine.runs.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
TINY = TrainConfig(arch="basic_nn", dataset="mnist_sample", epochs=2, batch_size=32, train_limit=200, val_split=0.2)

pytestmark = pytest.mark.usefixtures("one_thread")


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "dashboard" / "pages" / f"{name}.py"), default_timeout=120)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def texts(at: AppTest, *kinds: str) -> str:
    return "\n".join(str(e.value) for kind in kinds for e in getattr(at, kind))


@pytest.fixture(scope="module")
def sweeps_root(tmp_path_factory):
    """A finished 2 x 2 grid (lr x batch size), then a finished ASHA search whose second trial is pruned."""
    root = tmp_path_factory.mktemp("sweeps_page") / "results"
    store = Store(root)
    grid, _ = sweeps.submit_sweep(store, sweeps.sweep_grid(TINY, lr=[1e-2, 1e-4], batch_size=[32, 64]))
    spec = build_spec(
        TINY.replace(epochs=3),
        {"lr": parse_field("lr", "1e-5:1e-1:log")},
        sampler="tpe",
        trials=2,
        prune="asha",
        parallel=1,
        enqueued=({"lr": 1e-2}, {"lr": 1e-5}),
    )
    found, _ = sweeps.start_search(store, spec)
    worker = Worker(store, log=lambda message: None)
    while worker.step() is not None:
        pass
    store.close()
    return root, grid, found


@pytest.fixture
def copy(sweeps_root, tmp_path):
    root, grid, found = sweeps_root
    shutil.copytree(root, tmp_path / "results")
    return tmp_path / "results", grid, found


def test_the_sweeps_page_without_sweeps_says_where_to_start(env, tmp_path):
    env(tmp_path / "results")
    at = page("sweeps").run()
    assert not at.exception and "No sweeps yet" in texts(at, "info")


def test_a_search_shows_its_numbers_its_reading_and_every_figure(env, sweeps_root):
    root, _, found = sweeps_root
    env(root)
    at = page("sweeps").run()  # the newest sweep, the search, comes first
    assert not at.exception, [e.message for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Trials made"] == "2 / 2" and metrics["Done / stopped early"] == "1 / 1"
    assert metrics["Epochs spent / budget"] == "4 / 6"
    said = texts(at, "markdown")
    assert "The best trial so far is #0 · lr 0.01" in said
    assert "Early stopping (ASHA) stopped 1 of 2 finished trials and saved 33% of their epochs" in said
    assert len(at.get("plotly_chart")) >= 5
    assert "already stopped trials early" in texts(at, "caption")
    assert set(at.dataframe[0].value["state"]) == {"done", "pruned"}


def test_a_grid_replays_early_stopping_and_says_what_it_would_have_saved(env, sweeps_root):
    root, grid, _ = sweeps_root
    env(root)
    at = page("sweeps").run()
    at.selectbox(key="sweep_pick").set_value(grid).run()
    assert not at.exception, [e.message for e in at.exception]
    report = sweep_report(Store(root), grid)
    expected = replay_reading(report, replay_report(report, "asha"))  # the same numbers the CLI prints
    assert expected.startswith("Had ASHA been on, it would have stopped")
    assert expected in texts(at, "success", "warning")
    assert metric(at, "Trials made") == "4 / 4" and report.objective == "val_acc"
    at.radio(key="sw_replay").set_value("median").run()
    assert "the median rule waits until 5 runs have finished" in texts(at, "success", "warning")


def test_adding_trials_from_the_page_queues_them_at_once(env, copy):
    root, _, found = copy
    env(root)
    at = page("sweeps").run()
    at.number_input(key="sw_more").set_value(3).run()
    at.button(key="sw_extend").click().run()
    assert not at.exception
    store = Store(root)
    assert search.load_spec(store, found).trials == 5
    assert len(search.load_trials(store, found)) == 3  # one queued (parallel 1); the worker asks for the rest
    assert jobs.queue_length(store) == 1


def test_the_train_page_starts_a_search_from_ranges_and_opens_the_sweeps_page_on_it(env, tmp_path):
    root = env(tmp_path / "results")
    at = page("train").run()
    at.toggle(key="sw_search").set_value(True).run()
    at.multiselect(key="se_arch").set_value(["basic_nn"])
    at.text_input(key="se_lr").input("1e-4:1e-1:log")
    at.text_input(key="se_bs").input("32, 64")
    at.number_input(key="se_trials").set_value(6)
    at.selectbox(key="se_prune").set_value("median").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "**6 trials** of up to 3 epoch(s) each" in texts(at, "markdown")
    at.button(key="start_search").click().run()
    assert not at.exception, [e.message for e in at.exception]
    [found] = list_sweeps(Store(root))
    spec = search.load_spec(Store(root), found.sweep)
    assert (spec.sampler, spec.trials, spec.prune, spec.objective) == ("tpe", 6, "median", "val_acc")
    assert spec.names == ["lr", "batch_size"] and spec.base.val_split == 0.1
    assert found.runs == 2 and at.session_state["sweep"] == found.sweep


def test_the_train_page_explains_a_backwards_range_before_anything_is_started(env, tmp_path):
    env(tmp_path / "results")
    at = page("train").run()
    at.toggle(key="sw_search").set_value(True).run()
    at.text_input(key="se_lr").input("0.1:0.001").run()
    assert "learning rate 0.1:0.001: the low end 0.1 is above the high end 0.001" in texts(at, "error")
    assert at.button(key="start_search").disabled


def test_the_runs_page_shows_a_pruned_run_as_pruned(env, sweeps_root):
    root, _, _ = sweeps_root
    env(root)
    at = page("runs").run()
    assert not at.exception and "pruned" in set(at.dataframe[0].value["state"])


def test_read_only_mode_reads_a_search_but_hides_every_control_that_would_extend_or_start_one(
    env, sweeps_root, monkeypatch
):
    root, _, found = sweeps_root
    env(root)
    monkeypatch.setenv("LENSBOARD_READ_ONLY", "1")
    at = page("sweeps").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "The best trial so far is #0" in texts(at, "markdown")  # everything is still read
    assert not {"sw_extend", "sw_resume"} & {b.key for b in at.button}
    at = page("train").run()
    at.toggle(key="sw_search").set_value(True).run()
    assert not at.exception and "start_search" not in {b.key for b in at.button}
    assert "a search cannot be started here" in texts(at, "caption")
