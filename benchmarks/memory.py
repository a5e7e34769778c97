"""Memory: a worker training cifar10_cnn on a 50,000-image CIFAR-10 layout, and the dashboard queueing it.

A CIFAR-10 layout of random images (the official python pickles, 50,000 train / 10,000 test) is written
to a temporary folder unless the real files are under --data-root. Then, each in its own process:

1. the dashboard: the Train page (Streamlit's AppTest, in that process) picks cifar10 and cifar10_cnn
   and presses "Queue run"; its resident memory is read before and after the press, and its peak
   during it. Target: it grows by less than 100 MB (it used to load the whole dataset: ~0.7 GB).
2. the worker: `python -m engine worker --once` trains that run (1 epoch) to the end; its peak
   resident memory (VmHWM, read while it runs) is the figure. Target: under 1 GB.
3. references measured the same way: a process that only imports torch and the engine, and one that
   holds the same dataset as the normalised float32 tensors the engine used to keep.

    python benchmarks/memory.py [--data-root data] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PROJECT, child_env, cifar10_layout, load_average  # noqa: E402

MB = 1 << 20


def rss() -> int:
    """Resident bytes of this process now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def peak_of(command: list[str], env: dict) -> tuple[int, int]:
    """Peak resident bytes of `command` run to the end, as (VmHWM read while it ran, the kernel's
    ru_maxrss at its exit); this wrapper process has no other child. ru_maxrss also counts what the
    interpreter touches while it shuts down (~120 MB more for a bare `import torch`)."""
    out = subprocess.run(
        [sys.executable, __file__, "--peak-of", json.dumps(command)],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    running, at_exit = out.stdout.strip().splitlines()[-1].split()
    return int(running), int(at_exit)


def child_peak(command: list[str]) -> None:
    proc = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    status = Path(f"/proc/{proc.pid}/status")
    running = 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    running = max(running, int(line.split()[1]) * 1024)
        except (OSError, ValueError, IndexError):
            pass  # exiting
        time.sleep(0.1)
    stderr = proc.stderr.read()
    if proc.returncode != 0:
        print(stderr[-3000:], file=sys.stderr)
        sys.exit(proc.returncode)
    print(running, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)  # ru_maxrss is in KB


def dashboard_queue(epochs: int) -> dict:
    """In this process: the Train page queues cifar10_cnn on cifar10; memory around the button press."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PROJECT / "dashboard" / "pages" / "train.py"), default_timeout=300)
    at.run()
    at.selectbox(key="dataset").select("cifar10").run()
    at.selectbox(key="arch").select("cifar10_cnn").run()
    at.number_input(key="epochs").set_value(epochs).run()
    assert not at.exception, at.exception
    before = rss()
    reset_peak()
    at.button(key="queue_single").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    after, top = rss(), peak()
    return {"before": before, "after": after, "peak": top}


def float_reference(root: str) -> None:
    """Hold the dataset as the engine used to: both splits normalised to float32."""
    from engine.ml.data import load_dataset

    ds = load_dataset("cifar10", root)
    held = [ds.normalise(ds.train.x), ds.normalise(ds.test.x)]
    print(sum(t.numel() * 4 for t in held))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)
    parser.add_argument("--dashboard", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--float-reference", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_of:
        child_peak(json.loads(args.peak_of))
        return 0
    if args.dashboard:
        print(json.dumps(dashboard_queue(args.epochs)))
        return 0
    if args.float_reference:
        float_reference(args.float_reference)
        return 0

    from benchmarks.machine import describe

    with tempfile.TemporaryDirectory(prefix="lensboard-memory-") as tmp:
        tmp = Path(tmp)
        if (Path(args.data_root) / "cifar-10-batches-py" / "data_batch_1").exists():
            root, source = Path(args.data_root).resolve(), f"real CIFAR-10 from {args.data_root}"
        else:
            root, source = cifar10_layout(tmp / "data"), "a generated CIFAR-10 layout of random images"
        results = tmp / "results"
        env = child_env(LENSBOARD_DATA=str(root), LENSBOARD_RESULTS=str(results), LENSBOARD_NO_WORKER="1")
        conditions = load_average()
        out = subprocess.run(
            [sys.executable, __file__, "--dashboard", "--epochs", str(args.epochs)],
            env=env,
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        dash = json.loads(out.stdout.strip().splitlines()[-1])
        worker = peak_of([sys.executable, "-m", "engine", "worker", "--once", "--results", str(results)], env)
        from engine.runs.records import RunState
        from engine.runs.store import Store

        store = Store(results)
        (run,) = store.list_runs()
        assert run.state == RunState.DONE, f"the run ended {run.state.value}: {run.error}"
        store.close()
        bare = peak_of([sys.executable, "-c", "import engine.ml.train, engine.runs.worker"], env)
        old = peak_of([sys.executable, __file__, "--float-reference", str(root)], env)

    print(f"Memory: cifar10_cnn on {source} (50,000 train / 10,000 test, 3x32x32), {args.epochs} epoch(s)")
    print(f"machine: {describe()}")
    print(f"conditions: {conditions} before")
    print()
    print("| process | resident memory | target | met |")
    print("| --- | ---: | ---: | :---: |")
    growth = dash["after"] - dash["before"]
    top = dash["peak"] - dash["before"]
    print(
        f"| dashboard: growth when the Train page queues the run (peak during it: +{top / MB:.0f} MB) | "
        f"+{growth / MB:.0f} MB | < 100 MB | {'yes' if growth < 100 * MB else 'NO'} |"
    )
    print(
        f"| worker: peak while training the run to the end (at its exit: {worker[1] / MB:.0f} MB) | "
        f"{worker[0] / MB:.0f} MB | < 1024 MB | {'yes' if worker[0] < 1024 * MB else 'NO'} |"
    )
    print(
        f"| reference: a process that only imports torch and the engine (at its exit: {bare[1] / MB:.0f} MB) | "
        f"{bare[0] / MB:.0f} MB | | |"
    )
    print(
        f"| reference: the dataset held as normalised float32, as before (at its exit: {old[1] / MB:.0f} MB) | "
        f"{old[0] / MB:.0f} MB | | |"
    )
    print()
    print("Peaks are VmHWM read every 0.1 s while the process runs; 'at its exit' is the kernel's ru_maxrss,")
    print("which also counts what the interpreter touches while it shuts down.")
    return 0 if growth < 100 * MB and worker[0] < 1024 * MB else 1


if __name__ == "__main__":
    sys.exit(main())
