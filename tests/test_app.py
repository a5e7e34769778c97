"""Every page through Streamlit's AppTest: on a root with finished runs, on an empty root, and the
actions (queue a run, a sweep, cancel, retry, delete) against a results root in tmp_path."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.config import TrainConfig
from engine.store import RunState, Store

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
PAGES = ["train", "runs", "compare"]
TIMEOUT = 60


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "dashboard" / "pages" / f"{name}.py"), default_timeout=TIMEOUT)



@pytest.fixture
def finished_copy(finished_root, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(finished_root, root)
    return root


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_runs_made_by_fit_without_an_exception(env, finished_root, name):
    env(finished_root)
    at = page(name).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == name.capitalize()


@pytest.mark.parametrize("name", ["runs", "compare"])
def test_pages_on_an_empty_root_greet_a_new_user_instead_of_failing(env, tmp_path, name):
    env(tmp_path / "fresh")
    at = page(name).run()
    assert not at.exception
    assert "No runs yet" in texts(at, "info") and "Train" in texts(at, "info")


def test_router_opens_train_and_switches_to_every_page_with_the_worker_state_in_the_sidebar(env, finished_root):
    env(finished_root)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception and at.title[0].value == "Train"
    sidebar = texts(at.sidebar, "warning") + texts(at.sidebar, "caption")
    assert "No worker is running" in sidebar and "Queue: **0** jobs waiting" in sidebar
    for name in PAGES:
        at.switch_page(f"dashboard/pages/{name}.py").run()
        assert not at.exception, (name, [e.message for e in at.exception])
        assert at.title[0].value == name.capitalize()


def test_router_on_an_empty_root_has_no_exception(env, tmp_path):
    env(tmp_path / "fresh")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception and at.title[0].value == "Train"


def test_runs_page_lists_each_run_from_the_registry_without_reading_metrics_files(env, finished_root, monkeypatch):
    import dashboard.state

    def forbidden(path):
        raise AssertionError(f"the Runs page read {path}")

    monkeypatch.setattr(dashboard.state, "read_metrics", forbidden)
    env(finished_root)
    at = page("runs").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 2 and set(table["arch"]) == {"basic_nn", "simple_cnn"}
    assert (table["progress"] == 100).all()


def test_compare_page_overlays_the_default_runs_and_says_who_won(env, finished_root):
    env(finished_root)
    at = page("compare").run()
    assert not at.exception
    assert len(at.multiselect(key="cmp_runs_mnist_sample").value) == 2  # one done run per arch
    assert "Winner" in texts(at, "success") or "Tie" in texts(at, "info")
    assert "Speed" in texts(at, "info")
    summary = at.dataframe[0].value
    assert len(summary) == 2 and summary["value"].between(0, 100).all()
    at.radio(key="cmp_metric").set_value("loss").run()
    at.radio(key="cmp_x").set_value("elapsed").run()
    at.selectbox(key="cmp_color").set_value("lr").run()
    assert not at.exception


def test_train_page_queues_a_run_and_shows_it_live(env, tmp_path):
    root = env(tmp_path / "results")
    at = page("train").run()
    at.selectbox(key="arch").set_value("basic_nn")
    at.number_input(key="epochs").set_value(1)
    at.expander[0]  # the advanced settings exist
    at.number_input(key="train_limit").set_value(200).run()
    assert not at.exception and not at.error
    at.button(key="queue_single").click().run()
    assert not at.exception, [e.message for e in at.exception]
    store = Store(root)
    runs = store.list_runs()
    assert len(runs) == 1 and runs[0].state == RunState.QUEUED
    assert runs[0].config["arch"] == "basic_nn" and runs[0].config["train_limit"] == 200
    from engine.jobs import jobs_for_run

    assert [j.kind for j in jobs_for_run(store, runs[0].id)] == ["train"]
    assert "What you launched" in [h.value for h in at.subheader]
    assert any("queued" in str(p.proto.text) for p in at.get("progress"))


def test_train_page_explains_a_bad_learning_rate_and_queues_nothing(env, tmp_path):
    root = env(tmp_path / "results")
    at = page("train").run()
    at.text_input(key="lr_text").input("fast").run()
    assert "learning rate must be a number" in texts(at, "error")
    assert at.button(key="queue_single").disabled
    at.text_input(key="lr_text").input("-1").run()
    assert "lr must be a finite number > 0" in texts(at, "error")
    assert Store(root).list_runs() == []


def test_train_page_says_when_an_architecture_cannot_take_a_folders_small_images(env, tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / "images" / split / label).mkdir(parents=True)
            Image.new("L", (8, 8)).save(tmp_path / "images" / split / label / "0.png")
    env(tmp_path / "results")
    at = page("train").run()
    at.selectbox(key="dataset").set_value("folder:…").run()
    at.text_input(key="folder_path").input(str(tmp_path / "images")).run()
    at.selectbox(key="arch").set_value("simple_cnn_bn").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "cannot take 1x8x8 images" in texts(at, "caption")


def test_sweep_tab_previews_the_grid_and_queues_it_as_one_sweep(env, tmp_path):
    root = env(tmp_path / "results")
    at = page("train").run()
    at.text_input(key="sw_lr").input("1e-3, 1e-2")
    at.text_input(key="sw_bs").input("32, 64")
    at.text_input(key="sw_epochs").input("1")
    at.number_input(key="sw_limit").set_value(200).run()
    assert not at.exception and "**8 runs** in this grid:" in texts(at, "markdown")
    assert len(at.dataframe[0].value) == 8
    at.button(key="queue_sweep").click().run()
    assert not at.exception
    runs = Store(root).list_runs()
    assert len(runs) == 8 and len({r.sweep_id for r in runs}) == 1 and runs[0].sweep_id
    assert {(r.arch, r.config["lr"], r.config["batch_size"]) for r in runs} == {
        (a, lr, bs) for a in ("basic_nn", "simple_cnn") for lr in (1e-3, 1e-2) for bs in (32, 64)}


def test_sweep_tab_explains_a_typo_in_a_list(env, tmp_path):
    env(tmp_path / "results")
    at = page("train").run()
    at.text_input(key="sw_bs").input("32, lots").run()
    assert "batch sizes: 'lots' is not a whole number" in texts(at, "error")
    assert at.button(key="queue_sweep").disabled


def test_runs_page_cancels_retries_and_deletes_after_confirmation(env, finished_copy):
    from engine.jobs import submit

    root = env(finished_copy)
    store = Store(root)
    done = store.list_runs()[0]
    queued = submit(store, TrainConfig(arch="basic_nn", epochs=1, train_limit=100))
    at = page("runs").run()

    at.multiselect(key="chosen").set_value([queued]).run()
    at.button(key="do_cancel").click().run()
    assert not at.exception and store.get_run(queued).state == RunState.CANCELLED
    assert "removed queued train job" in texts(at, "info")

    at.multiselect(key="chosen").set_value([done.id]).run()
    at.button(key="do_retry").click().run()
    assert not at.exception and "queued again as" in texts(at, "info")
    again = [r for r in store.list_runs() if r.state == RunState.QUEUED]
    assert len(again) == 1 and again[0].config == done.config

    at.multiselect(key="chosen").set_value([done.id]).run()
    at.button(key="do_delete").click().run()
    assert "cannot be undone" in texts(at, "warning") and done.path.exists()
    at.button(key="confirm_yes").click().run()
    assert not at.exception and "Deleted 1 run(s)." in texts(at, "success")
    assert not done.path.exists() and done.id not in {r.id for r in store.list_runs()}


def test_runs_page_keeps_a_run_when_deletion_is_not_confirmed(env, finished_copy):
    root = env(finished_copy)
    store = Store(root)
    run = store.list_runs()[0]
    at = page("runs").run()
    at.multiselect(key="chosen").set_value([run.id]).run()
    at.button(key="do_delete").click().run()
    at.button(key="confirm_no").click().run()
    assert not at.exception and run.path.exists() and len(store.list_runs()) == 2


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_router_starts_exactly_one_worker_however_many_sessions_open(monkeypatch, tmp_path):
    from engine.runs.slots import plan_slots
    from engine.worker import worker_status

    root = tmp_path / "results"
    monkeypatch.setenv("LENSBOARD_RESULTS", str(root))
    monkeypatch.delenv("LENSBOARD_NO_WORKER", raising=False)
    monkeypatch.chdir(ROOT)
    sessions = [AppTest.from_file(APP, default_timeout=TIMEOUT).run() for _ in range(3)]
    try:
        assert not any(s.exception for s in sessions)
        store = Store(root)
        slots = plan_slots("auto").slots  # the router starts one worker command with --slots auto
        deadline = time.time() + 60
        while len(worker_status(store).workers) < slots and time.time() < deadline:
            time.sleep(0.5)
        status = worker_status(store)
        started = int((root / "worker.pid").read_text())
        assert status.alive and len(status.workers) == slots
        # one worker command: the worker itself, or the supervisor of its slots
        assert {w.pid if slots == 1 else parent_pid(w.pid) for w in status.workers} == {started}
        AppTest.from_file(APP, default_timeout=TIMEOUT).run()  # a fresh session sees the live worker
        assert len(worker_status(store).workers) == slots
    finally:
        pid_file = root / "worker.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def test_compare_page_shows_hyperparameter_views_for_the_runs_of_one_sweep(env, finished_copy):
    root = env(finished_copy)
    at = page("compare").run()
    assert "Hyperparameters against the result" not in texts(at, "markdown")  # two unrelated runs
    store = Store(root)
    store.conn.execute("UPDATE runs SET sweep_id = 'sweep-test'")
    at = page("compare").run()
    assert not at.exception
    assert "Hyperparameters against the result" in texts(at, "markdown")
    assert at.selectbox(key="cmp_param").options == ["arch"]
