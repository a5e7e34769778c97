"""What one open dashboard page costs the server per second while a run trains.

Builds a temporary results root with a few finished runs (records and metrics written
through the Store, as benchmarks/dashboard_render.py does) and one long basic_nn run
that a `python -m engine worker --batch-delay ...` subprocess keeps training for the
whole measurement. Starts `streamlit run streamlit_app.py` on a free 127.0.0.1 port
(LENSBOARD_NO_WORKER=1) and headless Chromium. For each page it opens 1 tab, then
TABS tabs that stay on the page (on Compare the training run is added to the chosen
runs, so the page has something live to show), and measures over a fixed window:

- the Streamlit server process's CPU seconds per wall second (utime + stime from
  /proc/<pid>/stat), divided by the open tabs: the cost of one open page per second;
- the training run's batches per second (from the registry's epoch/batch progress),
  against the same window with no page open.

Everything it starts (server, browser, worker) is stopped at the end, also on error.

    .venv/bin/python benchmarks/page_cost.py [--tabs 4] [--window 12] [--pages runs,compare,embeddings]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import record_learning_curve  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from tests.servers import CHROMIUM, CHROMIUM_ARGS, start_dashboard, stop  # noqa: E402

FINISHED = 6  # finished runs: basic_nn and simple_cnn, three seeds each
EPOCHS = 10
LIVE_EPOCHS = 1000  # the training run never finishes during the benchmark
BATCH_DELAY = 0.05  # seconds slept after each batch: a live run with an epoch every few seconds
PAGES = {"runs": "Runs", "compare": "Compare", "embeddings": "Embeddings", "sweeps": "Sweeps"}
TICK = os.sysconf("SC_CLK_TCK")


def make_root(root: Path) -> None:
    """FINISHED done runs on mnist_sample, written through the Store (no training)."""
    from engine.config import TrainConfig
    from engine.runs.records import RunState
    from engine.runs.store import Store

    store = Store(root)
    t0 = time.time() - 3600
    for i in range(FINISHED):
        config = TrainConfig(
            arch=("basic_nn", "simple_cnn")[i // 3], dataset="mnist_sample", epochs=EPOCHS, val_split=0.1, seed=i % 3
        )
        run_id = store.create_run(config, now=t0 + 60 * i)
        record_learning_curve(store, run_id, EPOCHS, offset=i, seconds=1.0 + i % 2)
        store.set_state(run_id, RunState.DONE)
    store.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5), counted after the name


def batches_done(root: Path, run_id: str) -> float:
    """All batches the live run has trained so far, from the registry's progress columns."""
    from engine.runs.store import Store

    store = Store(root, read_only=True)
    try:
        r = store.get_run(run_id)
    finally:
        store.close()
    return r.epoch * (r.batches or 0) + r.batch


def window(server_pid: int, root: Path, run_id: str, seconds: float) -> tuple[float, float]:
    """(server CPU seconds per second, training batches per second) over `seconds` of wall time."""
    c0, b0, t0 = cpu_seconds(server_pid), batches_done(root, run_id), time.monotonic()
    time.sleep(seconds)
    c1, b1, t1 = cpu_seconds(server_pid), batches_done(root, run_id), time.monotonic()
    return (c1 - c0) / (t1 - t0), (b1 - b0) / (t1 - t0)


def open_tab(context, url: str, path: str, live_label: str) -> float:
    """Open one tab on the page; returns the seconds until its heading and first content showed."""
    page = context.new_page()
    page.set_default_timeout(120_000)
    start = time.monotonic()
    page.goto(f"{url}/{path}")
    page.get_by_role("heading", name=PAGES[path], level=1).wait_for()
    if path == "compare":
        page.locator("[data-testid='stPlotlyChart']").first.wait_for()
        loaded = time.monotonic() - start
        box = page.get_by_role("combobox", name="Runs", exact=True)  # add the training run to the chosen runs
        box.click()
        page.get_by_role("option", name=live_label, exact=False).first.click()
        page.keyboard.press("Escape")
        page.get_by_text("Live: refreshing").wait_for()
        return loaded
    if path == "runs":
        page.locator("[data-testid='stDataFrame']").first.wait_for()
    page.wait_for_timeout(300)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tabs", type=int, default=4, help="tabs open at once in the second window of each page")
    parser.add_argument("--window", type=float, default=12.0, help="seconds of each measurement")
    parser.add_argument("--pages", default="runs,compare,embeddings", help="comma list of " + ",".join(PAGES))
    parser.add_argument("--label", default="", help="a name for this measurement in the table's title")
    args = parser.parse_args()
    pages = [p for p in args.pages.split(",") if p]
    from playwright.sync_api import sync_playwright

    from engine.config import TrainConfig
    from engine.runs.store import Store
    from engine.runs.sweeps import submit

    worker = server = None
    rows: list[tuple[str, int, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        make_root(root)
        store = Store(root)
        live_id = submit(store, TrainConfig(arch="basic_nn", dataset="mnist_sample", epochs=LIVE_EPOCHS, seed=7))
        store.close()
        env = dict(
            os.environ,
            LENSBOARD_RESULTS=str(root),
            LENSBOARD_NO_WORKER="1",
            LENSBOARD_OFFLINE="1",
            PYTHONPATH=str(ROOT),
        )
        try:
            worker = subprocess.Popen(
                [sys.executable, "-m", "engine", "worker", "--results", str(root), "--batch-delay", str(BATCH_DELAY)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(Path(tmp) / "worker.log", "wb"),
                start_new_session=True,
            )
            server, url = start_dashboard(env, open(Path(tmp) / "streamlit.log", "wb"))
            deadline = time.time() + 120
            while batches_done(root, live_id) < 10:  # the worker has loaded torch and is training
                if time.time() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"the worker did not start training: see {tmp}/worker.log")
                time.sleep(0.5)
            live_label = live_id[-4:]
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    warm = browser.new_context()  # imports and caches warm, as on a server in use
                    for path in pages:
                        open_tab(warm, url, path, live_label)
                    warm.close()
                    time.sleep(2)
                    cpu, rate = window(server.pid, root, live_id, args.window)
                    rows.append(("no page open", 0, cpu, rate, 0.0))
                    for path in pages:
                        for tabs in (1, args.tabs):
                            context = browser.new_context(viewport={"width": 1400, "height": 1000})
                            loads = [open_tab(context, url, path, live_label) for _ in range(tabs)]
                            time.sleep(3)  # the loads' own work is over
                            cpu, rate = window(server.pid, root, live_id, args.window)
                            rows.append((PAGES[path], tabs, cpu, rate, statistics.median(loads)))
                            context.close()
                            time.sleep(2)
                finally:
                    browser.close()
        finally:
            stop(server)
            stop(worker)

    idle_cpu, idle_rate = rows[0][2], rows[0][3]
    title = f" ({args.label})" if args.label else ""
    print(f"machine: {describe('streamlit')}")
    print(
        f"page cost{title}: {FINISHED} finished runs x {EPOCHS} epochs + 1 basic_nn run training on mnist_sample "
        f"(worker --batch-delay {BATCH_DELAY}); windows of {args.window:g} s; server CPU from /proc/<pid>/stat"
    )
    print()
    print(
        f"| {'page':<12} | {'tabs':>4} | {'server CPU s/s':>14} | {'per open page':>13} | "
        f"{'training batches/s':>18} | {'vs no page':>10} | {'load s (median)':>15} |"
    )
    print(f"|{'-' * 14}|{'-' * 6}|{'-' * 16}|{'-' * 15}|{'-' * 20}|{'-' * 12}|{'-' * 17}|")
    for name, tabs, cpu, rate, load in rows:
        per = f"{(cpu - idle_cpu) / tabs:.3f}" if tabs else "-"
        print(
            f"| {name:<12} | {tabs:>4} | {cpu:>14.3f} | {per:>13} | {rate:>18.1f} | "
            f"{rate / idle_rate if idle_rate else float('nan'):>10.2f} | {load if tabs else float('nan'):>15.2f} |"
        )
    print()
    print("per open page = (server CPU s/s - the no-page CPU s/s) / tabs: what one open tab costs each second")


if __name__ == "__main__":
    main()
