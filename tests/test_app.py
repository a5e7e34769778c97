"""Every page through Streamlit's AppTest: on a root with finished runs, on an empty root, and the
actions (queue a run, a sweep, cancel, retry, delete) against a results root in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.config import TrainConfig
from engine.runs import claims, jobs
from engine.runs.cluster import ClusterSnapshot, NodeInfo, write_snapshot
from engine.runs.records import RunState
from engine.runs.store import Store

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


def test_the_sidebar_shows_the_ray_cluster_from_its_dispatcher_snapshot_and_the_runs_page_where_each_trained(
    env, finished_copy
):
    env(finished_copy)
    store = Store(finished_copy)
    run_id = store.list_runs()[0].id
    job_id = jobs.submit_job(store, "train", run_id)
    claims.claim(store, "dispatcher")
    claims.place(store, job_id, "dispatcher", "ray", "2acc734b" + "0" * 48)
    store.close()
    write_snapshot(
        finished_copy,
        ClusterSnapshot(
            "10.0.0.5:6379",
            time.time(),
            (NodeInfo("2acc734b" + "0" * 48, "lab-pc-1", 4, 1, 1, 1, (run_id,)),),
            cpus_free=3,
            gpus_free=0,
        ),
    )
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    sidebar = texts(at.sidebar, "caption")
    assert "Ray cluster `10.0.0.5:6379`: **1** node, CPUs 1/4 used (3 free), GPUs 1/1 used (0 free)" in sidebar
    assert f"lab-pc-1 `2acc734b` CPUs 1/4, GPUs 1/1: `{run_id}`" in sidebar
    assert f"Now: **train** of run `{run_id}` on node `2acc734b`" in sidebar
    at.switch_page("dashboard/pages/runs.py").run()
    assert not at.exception
    shown = at.dataframe[0].value
    assert list(shown.loc[shown["id"] == run_id, "trained on"]) == ["ray node 2acc734b"]


def test_router_on_an_empty_root_has_no_exception(env, tmp_path):
    env(tmp_path / "fresh")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception and at.title[0].value == "Train"


def test_runs_page_lists_each_run_from_the_registry_without_opening_a_metrics_file(env, finished_copy):
    store = Store(finished_copy)
    records = store.list_runs()
    store.close()
    for record in records:  # a folder where metrics.jsonl was: whoever opens it to read gets IsADirectoryError
        record.paths.metrics.unlink()
        record.paths.metrics.mkdir()
    env(finished_copy)
    at = page("runs").run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[0].value
    assert len(table) == 2 and set(table["arch"]) == {"basic_nn", "simple_cnn"}
    assert (table["progress"] == 100).all()
    assert sorted(table["final test acc %"]) == pytest.approx(sorted(100 * r.final_test_acc for r in records))


def test_router_shows_a_pages_lensboard_error_as_one_line_instead_of_a_traceback(env, finished_copy):
    store = Store(finished_copy)
    newest = store.list_runs()[-1]  # the run the Inspect page opens first
    store.close()
    newest.paths.model.write_bytes(b"half a model")
    env(finished_copy)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("dashboard/pages/inspect.py").run()
    assert not at.exception, [e.message for e in at.exception]
    [error] = [e.value for e in at.error]
    assert "model.pt cannot be read" in error and "damaged or incomplete" in error and "\n" not in error
    assert at.title[0].value == "Inspect"  # the page up to the error is still shown


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
    from engine.runs.jobs import jobs_for_run

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


def test_train_page_reads_a_folder_under_the_data_root_cheaply_at_its_fixed_size(env, tmp_path, monkeypatch):
    from PIL import Image

    from engine.ml import folders

    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / "data" / "images" / split / label).mkdir(parents=True)
            Image.new("L", (8, 8)).save(tmp_path / "data" / "images" / split / label / "0.png")
    monkeypatch.setenv("LENSBOARD_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(folders, "load", lambda *a: pytest.fail("the page loaded the dataset"))
    env(tmp_path / "results")
    at = page("train").run()
    at.selectbox(key="dataset").set_value("folder:…").run()
    at.text_input(key="folder_path").input("images").run()  # relative to the data root
    at.selectbox(key="arch").set_value("simple_cnn_bn").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "2 classes, images 32x32 with 1 channel(s)" in texts(at, "caption")


def test_train_page_refuses_a_folder_outside_the_data_root(env, tmp_path, monkeypatch):
    from tests.disk_layouts import write_image_folder

    write_image_folder(tmp_path / "private")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path / "private")
    monkeypatch.setenv("LENSBOARD_DATA", str(tmp_path / "data"))
    env(tmp_path / "results")
    at = page("train").run()
    at.selectbox(key="dataset").set_value("folder:…").run()
    for typed in (str(tmp_path / "private"), "../private", "link"):
        at.text_input(key="folder_path").input(typed).run()
        assert not at.exception
        assert "must be inside the data root" in texts(at, "error"), typed
        assert at.button(key="queue_single").disabled


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
        (a, lr, bs) for a in ("basic_nn", "simple_cnn") for lr in (1e-3, 1e-2) for bs in (32, 64)
    }


def test_sweep_tab_explains_a_typo_in_a_list(env, tmp_path):
    env(tmp_path / "results")
    at = page("train").run()
    at.text_input(key="sw_bs").input("32, lots").run()
    assert "batch sizes: 'lots' is not a whole number" in texts(at, "error")
    assert at.button(key="queue_sweep").disabled


def test_train_page_queues_one_run_per_seed_together_when_seeds_is_above_one(env, tmp_path):
    root = env(tmp_path / "results")
    at = page("train").run()
    assert at.number_input(key="seeds").value == 1 and "3 is recommended" in at.number_input(key="seeds").help
    at.number_input(key="seed").set_value(4)
    at.number_input(key="seeds").set_value(3).run()
    assert not at.exception and at.button(key="queue_single").label == "Queue 3 runs"
    at.button(key="queue_single").click().run()
    runs = Store(root).list_runs()
    assert [r.config["seed"] for r in runs] == [4, 5, 6] and len({r.sweep_id for r in runs}) == 1
    assert {json.dumps({**r.config, "seed": 0}, sort_keys=True) for r in runs} == {
        json.dumps({**runs[0].config, "seed": 0}, sort_keys=True)
    }


def test_sweep_tab_multiplies_the_grid_by_the_runs_per_configuration(env, tmp_path):
    root = env(tmp_path / "results")
    at = page("train").run()
    at.text_input(key="sw_lr").input("1e-3")
    at.number_input(key="sw_repeats").set_value(3).run()
    assert not at.exception and "**6 runs** in this grid:" in texts(at, "markdown")
    at.button(key="queue_sweep").click().run()
    runs = Store(root).list_runs()
    assert sorted((r.arch, r.config["seed"]) for r in runs) == [
        (a, s) for a in ("basic_nn", "simple_cnn") for s in (0, 1, 2)
    ]


def test_runs_page_cancels_retries_and_deletes_after_confirmation(env, finished_copy):
    from engine.runs.sweeps import submit

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
    from engine.runs.workers import worker_status

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


def test_train_page_queues_your_own_model_from_the_models_folder_or_a_typed_path(env, tmp_path, monkeypatch):
    from tests.test_user_models import MYNET

    root = env(tmp_path / "results")
    models = tmp_path / "models"
    models.mkdir()
    (models / "mynet.py").write_text(MYNET)
    monkeypatch.setenv("LENSBOARD_MODELS", str(models))
    at = page("train").run()
    at.selectbox(key="arch").set_value("your own model…").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="own_model").options == [
        "mynet.py:MyNet",
        "mynet.py:WithFeatures",
        "another file (type its path)",
    ]
    captions = texts(at, "caption")
    assert "your own model: class MyNet from" in captions and "parameters** for 28x28" in captions
    at.number_input(key="epochs").set_value(1)
    at.number_input(key="train_limit").set_value(200).run()
    at.button(key="queue_single").click().run()
    assert not at.exception and not at.error
    [run] = Store(root).list_runs()
    assert run.arch == f"{(models / 'mynet.py').resolve()}:MyNet" and len(run.config["arch_sha256"]) == 64

    at.selectbox(key="own_model").set_value("another file (type its path)").run()
    at.text_input(key="own_path").input(f"{models / 'mynet.py'}:Nope").run()
    assert "**cannot be used**: no class 'Nope' in" in texts(at, "caption")
    at.button(key="queue_single").click().run()
    assert "Not queued: no class 'Nope'" in texts(at, "error") and len(Store(root).list_runs()) == 1
    at.text_input(key="own_path").input("").run()
    assert "type your model's file and class" in texts(at, "error") and at.button(key="queue_single").disabled


def test_runs_and_compare_show_a_tracked_script_run_beside_engine_runs(env, finished_copy):
    from engine import track

    root = env(finished_copy)
    config = {"arch": "my_cnn", "dataset": "mnist_sample", "lr": 0.01, "batch_size": 32, "epochs": 2, "dropout": 0.3}
    with track.run(config=config, results=root) as run:
        run.log(epoch=1, train_loss=1.2, test_loss=1.0, test_acc=0.62, grad_norm=4.0)
        run.log(epoch=2, train_loss=0.8, test_loss=0.7, test_acc=0.71, grad_norm=2.5)
    at = page("runs").run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[run.id, "arch"] == "my_cnn" and table.loc[run.id, "other settings"] == "dropout=0.3"
    at = page("compare").run()
    assert not at.exception, [e.message for e in at.exception]
    assert run.id in at.multiselect(key="cmp_runs_mnist_sample").value  # the latest done run of its arch
    assert "##### Other logged values" in texts(at, "markdown")
    assert at.selectbox(key="cmp_extra").value == "grad_norm"
    summary = at.dataframe[0].value.set_index("run")
    assert summary.loc[run.id, "value"] == pytest.approx(71.0) and summary.loc[run.id, "settings"] == "dropout=0.3"


# ---------------------------------------------------------------- safety on a shared machine

ALL_PAGES = ["train", "runs", "compare", "sweeps", "assignments", "inspect", "embeddings", "search"]
WRITING_BUTTONS = {
    "queue_single",
    "queue_sweep",
    "do_cancel",
    "do_retry",
    "do_delete",
    "confirm_yes",
    "run_1",
    "run_2",
    "run_3",
    "run_4",
    "run_5",
    "emb_compute",
    "emb_rn_go",
    "search_embed",
    "search_build",
    "drop_damaged",
    "start_search",
    "sw_extend",
    "sw_resume",
}


def test_the_streamlit_config_listens_on_loopback_and_caps_uploads_at_the_engines_limit():
    import tomllib

    from engine.ml.images import MAX_IMAGE_BYTES

    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["address"] == "127.0.0.1"  # a plain `streamlit run` once listened on every interface
    assert server["maxUploadSize"] == MAX_IMAGE_BYTES // (1024 * 1024) == 10


def test_read_only_mode_hides_every_writing_control_on_every_page_and_the_store_refuses_writes(
    env, finished_copy, monkeypatch
):
    from dashboard.state import open_store
    from engine.errors import ResultsError
    from engine.runs.jobs import submit_job

    env(finished_copy)
    monkeypatch.setenv("LENSBOARD_READ_ONLY", "1")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    for name in ALL_PAGES:
        at.switch_page(f"dashboard/pages/{name}.py").run()
        assert not at.exception, (name, [e.message for e in at.exception])
        assert "Read-only mode" in texts(at, "info"), name
        assert not WRITING_BUTTONS & {b.key for b in at.button}, (name, [b.key for b in at.button])
        assert not at.get("file_uploader"), name
    store = open_store()  # what every page writes through
    run_id = store.list_runs()[0].id
    with pytest.raises(ResultsError, match="read-only"):
        store.delete_run(run_id)
    with pytest.raises(ResultsError, match="read-only"):
        store.create_run(TrainConfig())
    with pytest.raises(ResultsError, match="read-only"):
        submit_job(store, "embed", run_id)
    store.close()
    assert (finished_copy / "runs" / run_id).is_dir() and len(Store(finished_copy).list_runs()) == 2


def test_a_read_only_results_root_is_one_line_on_every_page_which_still_show_the_runs(env, finished_copy):
    from tests.read_only import read_only_folder

    env(finished_copy)
    with read_only_folder(finished_copy):
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        for name in ALL_PAGES:
            at.switch_page(f"dashboard/pages/{name}.py").run()
            assert not at.exception, (name, [e.message for e in at.exception])  # once a ResultsError box
            notices = [i for i in texts(at, "info").splitlines() if "cannot be written" in i]
            assert len(notices) == 1, (name, texts(at, "info"))
            assert not WRITING_BUTTONS & {b.key for b in at.button}, name
        at.switch_page("dashboard/pages/runs.py").run()
        assert len(at.dataframe[0].value) == 2


def test_runs_page_shows_a_row_with_a_path_for_an_id_as_damaged_and_deleting_it_touches_no_file(
    env, finished_copy, tmp_path
):
    import json

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    store = Store(finished_copy)
    store.conn.execute(
        "INSERT INTO runs (id, created, updated, state, dataset, arch, config, epochs)"
        " VALUES (?, 0, 0, 'done', 'mnist_sample', 'basic_nn', ?, 1)",
        (f"../../{Path(os.path.relpath(victim, finished_copy / 'runs'))}", json.dumps(TrainConfig().to_dict())),
    )
    env(finished_copy)
    at = page("runs").run()
    assert not at.exception, [e.message for e in at.exception]
    assert "not a valid run id" in texts(at, "error") and "damaged" in texts(at, "error")
    assert len(at.dataframe[0].value) == 2  # the two real runs; the damaged row is never a record
    at.button(key="drop_damaged").click().run()
    assert not at.exception
    assert (victim / "precious.txt").read_text() == "keep me" and store.invalid_rows() == []
    assert len(store.list_runs()) == 2
    store.close()


def test_a_run_folder_deleted_while_the_run_is_idle_shows_as_missing_not_done(env, finished_copy):
    store = Store(finished_copy)
    gone = store.list_runs()[0]
    store.close()
    shutil.rmtree(gone.path)
    env(finished_copy)
    at = page("runs").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert sorted(table["state"]) == ["done", "missing"]
    assert table[table["state"] == "missing"]["message"].iloc[0].endswith("is gone")


def test_compare_page_says_when_a_metrics_line_is_damaged(env, finished_copy):
    store = Store(finished_copy)
    runs = store.list_runs()
    store.close()
    metrics = runs[0].path / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0] + "{broken\n" + "".join(lines[1:]))  # epoch 1, a damaged line, epoch 2
    env(finished_copy)
    at = page("compare").run()
    assert not at.exception
    assert f"Run `{runs[0].id}`: line 2 of its metrics.jsonl is damaged" in texts(at, "warning")
