"""Server-side render time of each dashboard page with 200 runs on disk.

Creates 200 run records with five metrics lines each through the Store (no
training), then times every page with Streamlit's AppTest: one warm-up run, then
the median of REPEATS runs. The reference is a one-line page timed the same way
in the same process, so the ratio says how much work a page adds over Streamlit's
own per-run cost. Target: every page under 1 second on this machine.

    .venv/bin/python benchmarks/dashboard_render.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import record_learning_curve  # noqa: E402
from benchmarks.machine import describe  # noqa: E402

os.environ["LENSBOARD_NO_WORKER"] = "1"  # time the pages, not a worker start
os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")  # AppTest's bare-mode warnings would bury the table

RUNS = 200
EPOCHS = 5
REPEATS = 5
TARGET = 1.0  # seconds per page
ARCHS = ("basic_nn", "simple_cnn", "tiny_cnn", "cnn_dropout")
REFERENCE = "import streamlit as st\nst.title('Reference')\nst.write('one line')\n"


def make_root(root: Path) -> None:
    from engine.config import TrainConfig
    from engine.runs.records import RunState
    from engine.runs.store import Store

    store = Store(root)
    t0 = 1_760_000_000.0
    for i in range(RUNS):
        config = TrainConfig(
            arch=ARCHS[i % len(ARCHS)],
            lr=(1e-3, 1e-2, 3e-2)[i % 3],
            batch_size=(32, 64)[i % 2],
            epochs=EPOCHS,
            val_split=0.1,
            seed=i // 24,
        )
        run_id = store.create_run(config, sweep_id=f"sweep-{i // 24:02d}", now=t0 + 60 * i)
        record_learning_curve(store, run_id, EPOCHS, offset=i % 7, seconds=1.0 + (i % len(ARCHS)))
        store.set_state(run_id, RunState.FAILED if i % 50 == 7 else RunState.DONE)
    store.close()


def time_script(make_test) -> float:
    """Median wall time of AppTest runs after one warm-up; raises if the page raised."""
    make_test().run()  # imports and caches warm, as on a running server
    times = []
    for _ in range(REPEATS):
        at = make_test()
        start = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - start)
        if at.exception:
            raise RuntimeError(f"page raised: {at.exception[0].message}")
    return statistics.median(times)


def main() -> None:
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        start = time.perf_counter()
        make_root(root)
        made = time.perf_counter() - start
        os.environ["LENSBOARD_RESULTS"] = str(root)
        os.chdir(ROOT)
        reference = time_script(lambda: AppTest.from_string(REFERENCE, default_timeout=120))
        rows = [("reference: one-line page", reference)]
        for name in ("train", "runs", "compare", "assignments", "inspect", "embeddings", "search"):
            path = str(ROOT / "dashboard" / "pages" / f"{name}.py")
            rows.append((f"{name} page", time_script(lambda path=path: AppTest.from_file(path, default_timeout=120))))
        rows.append(
            (
                "router + train page",
                time_script(lambda: AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)),
            )
        )

    print(f"machine: {describe('streamlit')}")
    print(
        f"{RUNS} runs x {EPOCHS} metrics lines created through the Store in {made:.2f} s; "
        f"median of {REPEATS} AppTest runs after a warm-up"
    )
    print()
    print(f"| {'page':<26} | {'seconds':>8} | {'x reference':>11} | {'< 1 s':>5} |")
    print(f"|{'-' * 28}|{'-' * 10}|{'-' * 13}|{'-' * 7}|")
    for name, seconds in rows:
        ok = "" if name.startswith("reference") else ("yes" if seconds < TARGET else "NO")
        print(f"| {name:<26} | {seconds:>8.3f} | {seconds / reference:>11.1f} | {ok:>5} |")


if __name__ == "__main__":
    main()
