"""Shared helpers of the Streamlit pages: where the results live, the store, cached metrics,
the worker box in the sidebar and the first-run message.

This is the only dashboard module besides the pages that imports Streamlit.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.runs_table import change_signature
from engine.errors import ResultsError, RunNotFound
from engine.files import read_metrics
from engine.runs.cluster import read_snapshot
from engine.runs.records import RunRecord
from engine.runs.store import Store
from engine.runs.supervisor import starting_worker_pid
from engine.runs.workers import worker_status
from engine.settings import Settings

REFRESH_SECONDS = 2.0  # how often live views refresh while something is queued or running

PAGES = {  # file -> (title, icon, url path); a page is registered only when its file exists
    "train.py": ("Train", ":material/model_training:", "train"),
    "runs.py": ("Runs", ":material/list_alt:", "runs"),
    "compare.py": ("Compare", ":material/compare_arrows:", "compare"),
    "sweeps.py": ("Sweeps", ":material/tune:", "sweeps"),
    "assignments.py": ("Assignments", ":material/school:", "assignments"),
    "inspect.py": ("Inspect", ":material/search_insights:", "inspect"),
    "embeddings.py": ("Embeddings", ":material/scatter_plot:", "embeddings"),
    "search.py": ("Search", ":material/image_search:", "search"),
}
PAGES_DIR = Path(__file__).resolve().parent / "pages"


def settings() -> Settings:
    """The dashboard's settings, resolved once per browser session (the router asks first)."""
    if "settings" not in st.session_state:
        st.session_state["settings"] = Settings.from_env()
    return st.session_state["settings"]


def results_dir() -> Path:
    """$LENSBOARD_RESULTS, else ./results."""
    return settings().results


def data_dir() -> Path:
    """$LENSBOARD_DATA, else ./data: where torchvision-layout datasets are looked for."""
    return settings().data_root


def models_dir() -> Path:
    """$LENSBOARD_MODELS, else ./models: your own model files, listed on the Train page."""
    return settings().models_dir


def worker_disabled() -> bool:
    """True when the dashboard must not start a worker ($LENSBOARD_NO_WORKER, for tests or a worker run by hand;
    read-only mode)."""
    return not settings().start_worker or read_only_mode()


def read_only_mode() -> bool:
    """Read-only mode, asked for with LENSBOARD_READ_ONLY=1 (`make run READ_ONLY=1`) or `-- --read-only`."""
    return settings().read_only


_unwritable: dict[str, str] = {}  # results root -> why it could not be opened for writing (shown on every page)


def open_store() -> Store:
    """A fresh connection to the results root for this script run (cheap: one SQLite open).

    In read-only mode, or when the root cannot be written (a read-only disk, another user's
    folder), the connection can only read: SQLite refuses every write, and the store refuses to
    create or delete a run folder, whatever a page asks. ResultsError when it cannot even be read.
    """
    root = results_dir()
    if read_only_mode():
        return Store(root, read_only=True)
    try:
        store = Store(root)
    except ResultsError as exc:
        try:
            store = Store(root, read_only=True)
        except ResultsError:
            raise exc from None  # it cannot be read either: the first reason is the one to fix
        cause = exc.__context__ or exc
        _unwritable[str(root)] = getattr(cause, "strerror", None) or str(cause)  # the OS's or SQLite's own words
        return store
    _unwritable.pop(str(root), None)
    return store


def store_notice(store: Store) -> str | None:
    """One line saying why this results root is read-only here, or None when it can be written."""
    if not store.read_only:
        return None
    if read_only_mode():
        return (
            "Read-only mode: you can look at every run, but nothing can be queued, cancelled, retried, "
            "deleted or uploaded here."
        )
    why = _unwritable.get(str(store.root), "it is not writable")
    return (
        f"The results folder `{store.root}` cannot be written ({why}): showing what can be read; "
        "nothing can be queued, cancelled or deleted until it can."
    )


def writable(store: Store) -> bool:
    """True when this page may show controls that write (queue, cancel, retry, delete, upload)."""
    return not store.read_only


def refuse_when_read_only(store: Store) -> bool:
    """For a write action's handler: True (after saying so) when the store is read-only, so the
    action is refused on the server even if its control was somehow triggered."""
    if store.read_only:
        st.error(store_notice(store) or "This results root is read-only.", icon=":material/lock:")
        return True
    return False


def runs_by_id(run_ids: list[str]) -> list[RunRecord]:
    """These runs' records, read fresh; a run deleted meanwhile (on the Runs page) is left out."""
    store = open_store()
    records = []
    for run_id in run_ids:
        try:
            records.append(store.get_run(run_id))
        except RunNotFound:
            continue
    return records


def page_file(name: str) -> str:
    """The path of a page as st.page_link / st.switch_page expect it (relative to the router)."""
    return f"dashboard/pages/{name}"


def available_pages() -> list[str]:
    """Page files that exist right now, in menu order."""
    return [name for name in PAGES if (PAGES_DIR / name).exists()]


def link(name: str, label: str, icon: str | None = None) -> None:
    """A link to another page, when that page is part of the app."""
    if (PAGES_DIR / name).exists():
        try:
            st.page_link(page_file(name), label=label, icon=icon)
        except Exception:  # the page is run on its own (no router): a link cannot resolve
            st.caption(f"→ {label} ({PAGES[name][0]} page)")


@st.cache_data(max_entries=2000, show_spinner=False)
def _read_metrics_cached(path: str, size: int, mtime_ns: int) -> tuple[list[dict], list[int]]:
    damaged: list[int] = []
    return read_metrics(Path(path), damaged), damaged


def _metrics_file(record: RunRecord) -> tuple[list[dict], list[int]]:
    path = record.paths.metrics
    try:
        stat = path.stat()
    except FileNotFoundError:
        return [], []
    return _read_metrics_cached(str(path), stat.st_size, stat.st_mtime_ns)


def metrics_stat(record: RunRecord) -> tuple[int, int] | None:
    """(size, mtime_ns) of a run's metrics file, None while it has none: what tells that it grew."""
    try:
        stat = record.paths.metrics.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def shown_signature(run_ids: list[str], *, progress: bool = False) -> tuple:
    """The change signature (dashboard.runs_table.change_signature) of these runs: one registry read of their rows
    and one stat of each metrics file, nothing parsed."""
    store = open_store()
    try:
        records = []
        for run_id in run_ids:
            try:
                records.append(store.get_run(run_id))
            except RunNotFound:
                continue  # deleted meanwhile: that too is a change
    finally:
        store.close()
    return change_signature(records, {r.id: metrics_stat(r) for r in records}, progress=progress)


def watch(run_ids: list[str], drawn: tuple, *, active: bool, progress: bool = False) -> None:
    """The live refresh of a page drawn from `run_ids` whose signature was `drawn`: while one of them is active,
    every REFRESH_SECONDS it computes their signature only (no metrics read, no figure built), and reruns the
    page when it moved (an epoch finished, a state changed). Nothing is checked when nothing shown is active."""
    if not active:
        return

    @st.fragment(run_every=REFRESH_SECONDS)
    def check() -> None:
        if shown_signature(run_ids, progress=progress) != drawn:
            st.rerun()

    check()


def run_metrics(record: RunRecord) -> list[dict]:
    """A run's metrics rows; re-read only when the file changed (its size or mtime moved)."""
    return _metrics_file(record)[0]


def damage_notes(records: list[RunRecord]) -> list[str]:
    """One line per run whose folder is gone or whose metrics file has damaged lines."""
    notes = []
    for r in records:
        if r.folder_missing:
            notes.append(
                f"Run `{r.id}`: its folder `{r.path}` is gone (deleted by hand?); its curves and files are lost."
            )
            continue
        damaged = _metrics_file(r)[1]
        if damaged:
            notes.append(
                f"Run `{r.id}`: line{'s' if len(damaged) > 1 else ''} {', '.join(map(str, damaged))} of "
                f"its metrics.jsonl {'are' if len(damaged) > 1 else 'is'} damaged and skipped, so "
                f"{'those epochs are' if len(damaged) > 1 else 'that epoch is'} missing from the curves."
            )
    return notes


def metrics_for(records: list[RunRecord]) -> dict[str, list[dict]]:
    return {r.id: run_metrics(r) for r in records}


def first_run_message(what: str) -> None:
    """The friendly empty state: nothing trained yet, and where to start."""
    st.info(
        f"No runs yet in `{results_dir()}`, so there is nothing to {what}. "
        "Start on the **Train** page: pick a dataset and a model, press **Queue run**, "
        "and come back here while it trains.",
        icon=":material/rocket_launch:",
    )
    link("train.py", "Go to Train", ":material/model_training:")


def worker_box(store: Store) -> None:
    """Sidebar: is a worker serving this results root, what it runs, how long the queue is, and the Ray
    cluster when a `worker --ray` dispatcher serves it (from its snapshot file: no connection to Ray)."""
    status = worker_status(store)
    with st.sidebar:
        st.markdown("#### Background worker")
        if status.alive:
            st.success(
                f"running ({len(status.workers)} process{'es' if len(status.workers) != 1 else ''})",
                icon=":material/check_circle:",
            )
        elif not worker_disabled() and starting_worker_pid(store.root):
            st.info("starting (loading PyTorch, a few seconds)", icon=":material/hourglass_top:")
        elif store.read_only:
            st.caption("No worker is running. This dashboard is read-only, so it starts none.")
        else:
            hint = (
                "Auto-start is off here; run `make worker` in a terminal."
                if worker_disabled()
                else "Reload this page to start one, or run `make worker`."
            )
            st.warning(f"**No worker is running**: queued runs will wait. {hint}", icon=":material/warning:")
        if status.current:
            for job in status.current:
                where = job.progress.describe().removeprefix(" at ") or "starting"
                node = f" on node `{job.node[:8]}`" if job.executor == "ray" and job.node else ""
                st.caption(f"Now: **{job.kind}** of run `{job.run_id}`{node} ({where})")
        else:
            st.caption("Now: idle")
        st.caption(f"Queue: **{status.queued}** job{'s' if status.queued != 1 else ''} waiting")
        cluster = read_snapshot(store.root)  # written by a `worker --ray` dispatcher; None without one
        if cluster is not None:
            for line in cluster.lines():
                st.caption(line)
        st.caption(f"Results: `{store.root}`")
