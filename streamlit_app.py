"""Lensboard: the router. `streamlit run streamlit_app.py` (or `make run`) starts here.

It sets up the page, makes sure one background worker serves the results root
(the dashboard itself never trains), shows the worker in the sidebar, and runs
the page the user picked: a LensboardError from any page is shown as its one-line
message, never as a traceback.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import streamlit as st

from dashboard.state import (
    PAGES,
    available_pages,
    open_store,
    page_file,
    settings,
    store_notice,
    worker_box,
    worker_disabled,
)
from engine.errors import LensboardError, ResultsError
from engine.runs.supervisor import ensure_worker_for

WORKER_CHECK_EVERY = 10.0  # seconds between checks that the worker is still alive (it is restarted if not)

if "--read-only" in sys.argv[1:] and not settings().read_only:  # streamlit run streamlit_app.py -- --read-only
    st.session_state["settings"] = dataclasses.replace(settings(), read_only=True)

st.set_page_config(
    page_title="Lensboard", page_icon=":material/insights:", layout="wide", initial_sidebar_state="expanded"
)

try:
    store = open_store()
except ResultsError as exc:  # not even readable: say it in one line instead of a traceback on every page
    st.error(f"Lensboard cannot use its results folder: {exc}", icon=":material/error:")
    st.stop()
notice = store_notice(store)

if (
    not worker_disabled()
    and not store.read_only
    and time.time() - st.session_state.get("worker_checked", 0.0) > WORKER_CHECK_EVERY
):
    try:
        ensure_worker_for(settings())  # on the Ray cluster of $LENSBOARD_RAY (make run RAY=...) when set
    except Exception as exc:  # never take the dashboard down: say it, runs will wait in the queue
        st.sidebar.error(f"Could not start the background worker: {exc}")
    st.session_state["worker_checked"] = time.time()

pages = [
    st.Page(page_file(name), title=PAGES[name][0], icon=PAGES[name][1], url_path=PAGES[name][2])
    for name in available_pages()
]


def home() -> None:
    """The bare address opens the Train page under its own url (/train), so every page has a path."""
    st.switch_page(pages[0])


page = st.navigation(
    [st.Page(home, title="Home", url_path="home", default=True, visibility="hidden"), *pages], position="sidebar"
)
st.sidebar.markdown("### :material/insights: Lensboard")
st.sidebar.caption("Train small image classifiers, watch them learn, compare what worked.")
try:
    worker_box(store)
finally:
    store.close()
if notice:
    st.info(notice, icon=":material/lock:")
try:
    page.run()
except LensboardError as exc:  # every page's boundary: a message meant for the person, in one line, no traceback
    st.error(str(exc), icon=":material/error:")
