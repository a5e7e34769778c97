"""Assignments: the course's five practice assignments, run with one button and reported with measured numbers."""

from __future__ import annotations

import time

import streamlit as st

from dashboard.assignments.export import Section, report_csvs, report_markdown
from dashboard.assignments.overlay import overlay_figure
from dashboard.assignments.plan import MISSING, Assignment, RunStatus, assignments, locate, queue_missing, to_queue
from dashboard.assignments.report import build_report, cifar_instructions, dataset_note
from dashboard.state import (
    REFRESH_SECONDS,
    data_dir,
    open_store,
    refuse_when_read_only,
    run_metrics,
    settings,
    writable,
)
from engine.errors import LensboardError
from engine.ml.data import available_datasets
from engine.runs.seeds import MAX_SEEDS, RECOMMENDED_SEEDS

BADGES = {
    "complete": ":green-badge[:material/check: complete]",
    "running": ":blue-badge[:material/autorenew: in progress]",
    "todo": ":gray-badge[not run yet]",
    "blocked": ":orange-badge[:material/folder_off: needs CIFAR-10]",
}

st.title("Assignments")
st.caption(
    "The course's five practice assignments. Press **Run this assignment** and the runs it still needs "
    "are queued (finished identical runs are reused, never retrained); the report below fills itself in "
    "with the measured numbers as they finish. Export it as Markdown at the bottom."
)

data_root = str(data_dir())
dataset = "mnist" if "mnist" in available_datasets(data_root) else "mnist_sample"
if "cifar_root" not in st.session_state:
    st.session_state["cifar_root"] = data_root
if "a4_arch" not in st.session_state:
    st.session_state["a4_arch"] = "simple_cnn"
if "a_seeds" not in st.session_state:
    st.session_state["a_seeds"] = 1
cifar_root = str(st.session_state["cifar_root"]).strip() or data_root
cifar_available = "cifar10" in available_datasets(cifar_root)

note = dataset_note(dataset, data_root)
if dataset == "mnist":
    st.success(note, icon=":material/dataset:")
else:
    st.info(note + " Put full MNIST there (or set LENSBOARD_DATA) to use it instead.", icon=":material/dataset:")

plan = assignments(
    dataset, data_root, cifar_root, a4_arch=st.session_state["a4_arch"], seeds=int(st.session_state["a_seeds"])
)
_store = open_store()
can_queue = writable(_store)
_store.close()
every_run = [p for a in plan for p in a.runs]


def current_report() -> tuple[dict[str, RunStatus], list[Section]]:
    store = open_store()
    try:
        statuses = locate(store, every_run, metrics=run_metrics)
    finally:
        store.close()
    return statuses, build_report(plan, statuses, cifar_available=cifar_available)


def badge(assignment: Assignment, statuses: dict[str, RunStatus], section: Section) -> str:
    mine = [statuses[p.key] for p in assignment.runs]
    if section.complete:
        return BADGES["complete"]
    if any(s.active for s in mine):
        return BADGES["running"]
    if assignment.number == 5 and not cifar_available and mine[0].state == MISSING:
        return BADGES["blocked"]
    return BADGES["todo"]


def section_view(number: int, polling: bool) -> None:
    """One assignment's part of the report; refreshed every few seconds while its runs train."""
    assignment = plan[number - 1]
    statuses, sections = current_report()
    section = sections[number - 1]
    mine = [statuses[p.key] for p in assignment.runs]
    st.markdown(f"{badge(assignment, statuses, section)}")
    blocked = number == 5 and not cifar_available and mine[0].state == MISSING
    st.markdown(section.markdown.split("\n\n")[0] if blocked else section.markdown)  # the warning above says where
    active = [s for s in mine if s.active]
    for s in active:
        c = s.planned.config
        done_part = (s.epoch + (s.batch / s.batches if s.batches else 0)) / c.epochs
        st.progress(
            min(1.0, done_part), text=f"{s.planned.label}: {s.state}, epoch {min(s.epoch + 1, c.epochs)} of {c.epochs}"
        )
    firsts = [s for s in mine if s.planned.seed_of is None]  # the first seed of each planned run
    if number == 4 and any(s.metrics for s in firsts):
        left, right = st.columns(2)
        left.plotly_chart(overlay_figure(firsts, "test_acc"), key=f"a4_acc_{number}")
        right.plotly_chart(overlay_figure(firsts, "train_loss"), key=f"a4_loss_{number}")
        st.caption(
            "The baseline is the thick dark line. Every other line changes exactly one thing."
            + (
                " The lines are the first seed's; the Compare page draws every seed as a band."
                if len(firsts) < len(mine)
                else ""
            )
        )
    for name, table in section.tables.items():
        if number in (1, 2, 5):
            with st.expander(f"Per-epoch measurements ({name})"):
                st.dataframe(table, hide_index=True, width="stretch")
    finished = [s for s in firsts if s.done]
    if finished and number in (1, 2, 5):
        for s in finished:
            try:
                st.page_link(
                    "dashboard/pages/inspect.py",
                    label=f"Inspect {s.planned.label}: mistakes, shapes, filters",
                    icon=":material/search_insights:",
                    query_params={"run": s.run_id},
                )
            except Exception:  # the page runs on its own, without the router: no link to resolve
                st.caption(f"Inspect page: run `{s.run_id}`")
    if polling and not active:
        st.rerun()  # finished: a full rerun stops the refreshing and updates the export


def run_button(assignment: Assignment, statuses: dict[str, RunStatus]) -> None:
    if not can_queue:
        st.caption(":material/lock: Read-only: runs cannot be queued here.")
        return
    missing = to_queue(statuses, assignment)
    reused = sum(1 for p in assignment.runs if statuses[p.key].done)
    fetch = assignment.number == 5 and not cifar_available and bool(missing)
    if fetch:
        label = "Download CIFAR-10 and run"
        help_text = (
            "CIFAR-10 is not on disk: this tries to download it (about 170 MB) into the data root above, "
            "then queues the run. Without internet, put the files there by hand as described."
        )
    elif missing:
        label = "Run this assignment"
        help_text = f"Queues {len(missing)} run(s); {reused} finished run(s) are reused."
    else:
        label = "Run this assignment"
        help_text = "Nothing to queue: every run of this assignment is finished or already queued."
    left, right = st.columns([1, 3])
    pressed = left.button(
        label,
        key=f"run_{assignment.number}",
        type="primary",
        icon=":material/play_arrow:",
        disabled=not missing,
        help=help_text,
    )
    right.caption(help_text)
    if pressed:
        store = open_store()
        if refuse_when_read_only(store):
            return
        try:
            with st.spinner("Downloading CIFAR-10…" if fetch else "Checking and queueing…"):
                run_ids = queue_missing(store, assignment, statuses, settings().download)
        except LensboardError as exc:
            st.error(f"Could not queue assignment {assignment.number}: {exc}", icon=":material/error:")
        else:
            st.toast(f"Queued {len(run_ids)} run(s) for assignment {assignment.number}.", icon=":material/check:")
            st.rerun()
        finally:
            store.close()


with st.sidebar:
    st.markdown("#### Assignment settings")
    st.selectbox(
        "Model for assignment 4",
        ["simple_cnn", "basic_nn"],
        key="a4_arch",
        help="The course changes the hyperparameters of one model; SimpleCNN by default. "
        "BasicNN trains several times faster on a CPU.",
    )
    st.number_input(
        "Seeds per run",
        1,
        MAX_SEEDS,
        key="a_seeds",
        help=f"Train every run of assignments 1 to 4 with this many seeds ({RECOMMENDED_SEEDS} "
        "recommended). Two runs that differ only in the seed land a few tenths of a point apart "
        "by luck, so with one seed a small difference may be noise. With several, the answers "
        "say whether each difference is beyond seed noise (Welch's t-test on the final test "
        "accuracy). 1 trains each run once, as the course does.",
    )

statuses, sections = current_report()
for assignment in plan:
    with st.container(border=True):
        st.subheader(f"Assignment {assignment.number}: {assignment.title}")
        if assignment.number == 5:
            st.text_input(
                "Data root for CIFAR-10",
                key="cifar_root",
                help="The folder that holds cifar-10-batches-py/ (the official python version).",
            )
            if not cifar_available:
                st.warning(cifar_instructions(cifar_root), icon=":material/folder_off:")
        run_button(assignment, statuses)
        polling = any(statuses[p.key].active for p in assignment.runs)
        st.fragment(run_every=REFRESH_SECONDS if polling else None)(section_view)(assignment.number, polling)

st.subheader("Export the report")
generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
markdown = report_markdown(sections, note=dataset_note(dataset, data_root), generated=generated)
complete = sum(s.complete for s in sections)
st.caption(f"{complete} of {len(sections)} assignments are complete; unfinished parts are exported as `…`.")
st.download_button(
    "Download the report (Markdown)",
    markdown,
    "lensboard-assignments.md",
    "text/markdown",
    icon=":material/download:",
    on_click="ignore",
    key="dl_report",
    type="primary",
)
csvs = report_csvs(sections)
if csvs:
    st.caption("The tables as CSV:")
    for column, (name, text) in zip(st.columns(len(csvs)), csvs.items()):
        number = name.split("_")[0].removeprefix("assignment")
        column.download_button(
            f"Assignment {number}",
            text,
            name,
            "text/csv",
            icon=":material/table:",
            on_click="ignore",
            key=f"dl_{name}",
            help=f"Download {name}",
        )
with st.expander("Preview the Markdown"):
    st.code(markdown, language="markdown")
