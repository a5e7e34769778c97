"""Lensboard: the router. `streamlit run streamlit_app.py` (or `make run`) starts here.

It sets up the page, makes sure one background worker serves the results root
(the dashboard itself never trains), shows the worker in the sidebar, and runs
the page the user picked.
"""

from __future__ import annotations

import time

import streamlit as st

from dashboard.state import PAGES, available_pages, open_store, page_file, settings, worker_box
from engine.runs.supervisor import ensure_worker_for

WORKER_CHECK_EVERY = 10.0  # seconds between checks that the worker is still alive (it is restarted if not)

st.set_page_config(page_title="Lensboard", page_icon=":material/insights:", layout="wide",
                   initial_sidebar_state="expanded")

if settings().start_worker and time.time() - st.session_state.get("worker_checked", 0.0) > WORKER_CHECK_EVERY:
    try:
        ensure_worker_for(settings())  # on the Ray cluster of $LENSBOARD_RAY (make run RAY=...) when set
    except Exception as exc:  # never take the dashboard down: say it, runs will wait in the queue
        st.sidebar.error(f"Could not start the background worker: {exc}")
    st.session_state["worker_checked"] = time.time()

pages = [st.Page(page_file(name), title=PAGES[name][0], icon=PAGES[name][1], url_path=PAGES[name][2])
         for name in available_pages()]


def home() -> None:
    """The bare address opens the Train page under its own url (/train), so every page has a path."""
    st.switch_page(pages[0])


page = st.navigation([st.Page(home, title="Home", url_path="home", default=True, visibility="hidden"), *pages],
                     position="sidebar")
st.sidebar.markdown("### :material/insights: Lensboard")
st.sidebar.caption("Train small image classifiers, watch them learn, compare what worked.")
store = open_store()
try:
    worker_box(store)
finally:
    store.close()
page.run()
