"""dashboard.state: settings once per session, the store (read-only when it must be), cached metrics,
damage notes, the pages, and what the sidebar and the write actions show.

Plain functions are called directly (Streamlit's session state and caches work without a running app);
what they render is checked through AppTest.from_function.
"""

from __future__ import annotations

import os

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import state
from engine.config import TrainConfig
from engine.errors import ResultsError
from engine.files import append_metrics
from engine.runs.store import Store
from engine.runs.sweeps import submit
from tests.read_only import read_only_folder


@pytest.fixture
def session(monkeypatch, tmp_path):
    """A fresh browser session on a results root in tmp_path, never starting a worker."""
    st.session_state.clear()
    monkeypatch.setenv("LENSBOARD_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("LENSBOARD_NO_WORKER", "1")
    monkeypatch.delenv("LENSBOARD_READ_ONLY", raising=False)
    yield tmp_path / "results"
    st.session_state.clear()


def a_run(root, rows: int) -> str:
    store = Store(root)
    try:
        run_id = store.create_run(TrainConfig(epochs=rows))
        for e in range(1, rows + 1):
            append_metrics(store.paths(run_id).metrics, {"epoch": e, "test_acc": 0.5 + e / 100})
        return run_id
    finally:
        store.close()


def record(root, run_id: str):
    store = Store(root)
    try:
        return store.get_run(run_id)
    finally:
        store.close()


def test_settings_are_resolved_once_per_session_from_the_environment(session, monkeypatch, tmp_path):
    assert state.results_dir() == session and state.worker_disabled()
    monkeypatch.setenv("LENSBOARD_RESULTS", str(tmp_path / "elsewhere"))
    assert state.results_dir() == session  # this session keeps what it started with
    st.session_state.clear()  # a new session reads the environment again
    assert state.results_dir() == tmp_path / "elsewhere"


def test_read_only_mode_opens_a_store_that_refuses_writes_and_says_why(session, monkeypatch):
    store = state.open_store()
    assert state.writable(store) and state.store_notice(store) is None
    store.close()
    st.session_state.clear()
    monkeypatch.setenv("LENSBOARD_READ_ONLY", "1")
    store = state.open_store()
    try:
        assert not state.writable(store) and state.worker_disabled()
        assert state.store_notice(store).startswith("Read-only mode: you can look at every run")
        with pytest.raises(ResultsError, match="read-only"):
            store.create_run(TrainConfig())
    finally:
        store.close()


def test_a_results_root_that_cannot_be_written_is_opened_to_read_with_the_reason(session):
    a_run(session, 1)
    with read_only_folder(session):
        store = state.open_store()
        try:
            assert store.read_only and len(store.list_runs()) == 1
            notice = state.store_notice(store)
            assert notice.startswith(f"The results folder `{session}` cannot be written (")
            assert "nothing can be queued, cancelled or deleted until it can" in notice
        finally:
            store.close()


def test_run_metrics_are_read_again_only_when_the_file_changes(session):
    run_id = a_run(session, 2)
    r = record(session, run_id)
    assert [row["epoch"] for row in state.run_metrics(r)] == [1, 2]
    append_metrics(r.paths.metrics, {"epoch": 3, "test_acc": 0.6})
    assert [row["epoch"] for row in state.run_metrics(r)] == [1, 2, 3]  # it grew: read again
    stat = r.paths.metrics.stat()
    text = r.paths.metrics.read_text()
    r.paths.metrics.write_text(text.replace('"epoch": 3', '"epoch": 9'))  # same size ...
    os.utime(r.paths.metrics, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and the same time: not read
    assert [row["epoch"] for row in state.run_metrics(r)] == [1, 2, 3]
    assert state.metrics_for([r]) == {run_id: state.run_metrics(r)}


def test_damage_notes_name_the_damaged_lines_and_a_missing_folder(session):
    damaged, gone = a_run(session, 3), a_run(session, 1)
    path = record(session, damaged).paths.metrics
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    for f in record(session, gone).path.iterdir():
        f.unlink()
    record(session, gone).path.rmdir()
    notes = state.damage_notes([record(session, damaged), record(session, gone)])
    assert notes[0] == (
        f"Run `{damaged}`: line 2 of its metrics.jsonl is damaged and skipped, so that epoch is "
        "missing from the curves."
    )
    assert notes[1].startswith(f"Run `{gone}`: its folder") and notes[1].endswith("its curves and files are lost.")
    assert [row["epoch"] for row in state.run_metrics(record(session, damaged))] == [1, 2, 3]


def test_runs_by_id_leaves_out_a_run_deleted_meanwhile(session):
    kept, deleted = a_run(session, 1), a_run(session, 1)
    store = Store(session)
    store.delete_run(deleted)
    store.close()
    assert [r.id for r in state.runs_by_id([deleted, kept])] == [kept]


def test_every_page_is_listed_in_menu_order_with_its_path_for_the_router():
    assert state.available_pages() == list(state.PAGES)
    assert state.page_file("inspect.py") == "dashboard/pages/inspect.py"
    assert len({url for _, _, url in state.PAGES.values()}) == len(state.PAGES)


def sidebar_worker_box():
    from dashboard.state import open_store, worker_box

    worker_box(open_store())


def test_the_worker_box_says_no_worker_serves_the_root_and_how_many_jobs_wait(session):
    store = Store(session)
    submit(store, TrainConfig(epochs=1))
    store.close()
    at = AppTest.from_function(sidebar_worker_box).run()
    assert not at.exception
    assert "**No worker is running**: queued runs will wait. Auto-start is off here" in at.sidebar.warning[0].value
    captions = [c.value for c in at.sidebar.caption]
    assert "Now: idle" in captions and "Queue: **1** job waiting" in captions and f"Results: `{session}`" in captions


def write_action():
    import streamlit as st

    from dashboard.state import open_store, refuse_when_read_only

    st.write("refused" if refuse_when_read_only(open_store()) else "allowed")


def test_a_write_action_is_refused_on_the_server_in_read_only_mode(session, monkeypatch):
    at = AppTest.from_function(write_action).run()
    assert [m.value for m in at.markdown] == ["allowed"] and not at.error
    monkeypatch.setenv("LENSBOARD_READ_ONLY", "1")
    at = AppTest.from_function(write_action).run()
    assert [m.value for m in at.markdown] == ["refused"] and "Read-only mode" in at.error[0].value


def empty_root_message():
    from dashboard.state import first_run_message

    first_run_message("compare")


def test_the_first_run_message_says_where_the_runs_would_be_and_where_to_start(session):
    at = AppTest.from_function(empty_root_message).run()
    assert not at.exception
    assert at.info[0].value.startswith(f"No runs yet in `{session}`, so there is nothing to compare.")


def watched_page():
    """A page drawn from st.session_state['ids'] whose live check is `watch`; it counts its draws."""
    import streamlit as st

    from dashboard import state

    ids = st.session_state["ids"]
    drawn = st.session_state.get("stale") or state.shown_signature(ids)
    st.session_state["stale"] = None
    st.session_state["draws"] = st.session_state.get("draws", 0) + 1
    state.watch(ids, drawn, active=st.session_state.get("active", True))


def test_the_live_check_reads_no_metrics_file_and_moves_only_when_an_epoch_was_added(session, monkeypatch):
    run_id = a_run(session, 2)
    monkeypatch.setattr(state, "read_metrics", lambda *a: pytest.fail("the live check read a metrics file"))
    before = state.shown_signature([run_id])
    store = Store(session)
    store.set_progress(run_id, 0, 5, 60)  # a batch: what Compare shows has not changed
    store.close()
    assert state.shown_signature([run_id]) == before
    assert state.shown_signature([run_id], progress=True) != state.shown_signature([run_id])
    append_metrics(record(session, run_id).paths.metrics, {"epoch": 3, "test_acc": 0.6})
    assert state.shown_signature([run_id]) != before


def test_a_watched_page_is_redrawn_only_when_what_it_shows_changed_and_only_while_it_is_active(session, monkeypatch):
    run_id = a_run(session, 2)
    monkeypatch.setattr(state, "read_metrics", lambda *a: pytest.fail("the live check read a metrics file"))
    at = AppTest.from_function(watched_page, default_timeout=30)
    at.session_state["ids"] = [run_id]
    at.run()
    assert not at.exception and at.session_state["draws"] == 1  # nothing changed since it was drawn: no rerun
    at.session_state["stale"] = state.shown_signature([run_id])
    append_metrics(record(session, run_id).paths.metrics, {"epoch": 3, "test_acc": 0.6})
    at.run()
    assert not at.exception and at.session_state["draws"] == 3  # an epoch finished: the check reran the page
    at.session_state["stale"] = ("not", "what is on disk")
    at.session_state["active"] = False
    at.run()
    assert at.session_state["draws"] == 4  # nothing shown is active: nothing is checked, nothing redrawn
