"""The command line: python -m engine COMMAND ...

Bad input prints one clear line on stderr and exits non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from engine.config import ConfigError, TrainConfig
from engine.data import DatasetError
from engine.jobs import SWEEPABLE
from engine.models import ModelError
from engine.store import ResultsError, RunNotFound, RunState, Store, store_for_run

USER_ERRORS = (ConfigError, DatasetError, ModelError, RunNotFound, ResultsError, FileNotFoundError)


class UserError(Exception):
    """A problem with what the user asked for; printed as one line."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (subcommand parsers inherit this)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


# ---------------------------------------------------------------- shared flags


def add_train_flags(p: argparse.ArgumentParser, multi: bool = False) -> None:
    """The training flags; with multi=True the sweepable ones take comma-separated lists."""
    d = TrainConfig()
    text = str if multi else None

    def sweepable(flag, kind, default, help):
        p.add_argument(flag, type=text or kind, default=None if multi else default,
                       help=help + (" (comma-separated values)" if multi else f" (default {default})"))

    sweepable("--dataset", str, d.dataset, "mnist_sample, mnist, fashion_mnist, cifar10 or folder:PATH")
    p.add_argument("--data-root", default=d.data_root, help=f"where datasets live (default {d.data_root})")
    sweepable("--arch", str, d.arch, "model architecture")
    sweepable("--epochs", int, d.epochs, "epochs, 1..1000")
    sweepable("--batch-size", int, d.batch_size, "batch size")
    sweepable("--lr", float, d.lr, "learning rate")
    sweepable("--optimizer", str, d.optimizer, "adam, sgd or adamw")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="weight decay")
    p.add_argument("--val-split", type=float, default=d.val_split, help="validation fraction, 0..0.5")
    sweepable("--seed", int, d.seed, "random seed")
    p.add_argument("--train-limit", type=int, default=None, help="train on the first N images (stratified)")
    p.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default=d.precision, choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 autocast where the CPU (AVX512-BF16, AMX) or GPU does bf16 natively, "
                        f"else fp32 (default {d.precision})")
    p.add_argument("--pretrained", action="store_true", help="resnet18: start from ImageNet weights")


def add_results_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=None, help="results root (default $LENSBOARD_RESULTS or ./results)")


def config_from_args(args: argparse.Namespace, **overrides) -> TrainConfig:
    values = dict(
        # Absolute, so a worker started elsewhere finds the same files (and --reuse matches the dashboard's).
        dataset=args.dataset, data_root=str(Path(args.data_root).expanduser().resolve()), arch=args.arch, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
        weight_decay=args.weight_decay, val_split=args.val_split, seed=args.seed,
        train_limit=args.train_limit, device=args.device, pretrained=args.pretrained,
        precision=args.precision,
    )
    values.update(overrides)
    return TrainConfig(**values)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}",
             f"train loss {row['train_loss']:.4f} acc {pct(row['train_acc'])}"]
    if "val_loss" in row:
        parts.append(f"val loss {row['val_loss']:.4f} acc {pct(row['val_acc'])}")
    parts.append(f"test loss {row['test_loss']:.4f} acc {pct(row['test_acc'])}")
    parts.append(f"{row['seconds']:.1f}s")
    return "  ".join(parts)


class ProgressBar:
    """A one-line batch progress bar on stderr, redrawn in place."""

    def __init__(self, epochs: int, stream=sys.stderr, width: int = 30):
        self.epochs, self.stream, self.width = epochs, stream, width

    def __call__(self, epoch: int, batch: int, batches: int) -> None:
        if not self.stream.isatty():
            return  # a redrawn bar is noise in a log file
        if batch != batches and batch % max(1, batches // 50):
            return
        filled = round(self.width * batch / batches)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r  epoch {epoch}/{self.epochs} [{bar}] {batch}/{batches}")
        if batch == batches:
            self.stream.write("\r" + " " * (self.width + 40) + "\r")
        self.stream.flush()


@contextlib.contextmanager
def stop_on_ctrl_c(stop: threading.Event):
    """The first Ctrl+C sets `stop` (the run ends cleanly after the current batch); a second one
    raises KeyboardInterrupt as usual. Outside the main thread, signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # only flags: printing here could re-enter a write to the same stream
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from engine.runner import run_training
    from engine.train import preflight

    config = config_from_args(args)
    preflight(config)
    from engine.worker import FOREGROUND_FILE, mark_foreground

    store = Store(args.results)
    run_id = store.create_run(config, RunState.RUNNING)
    # If this process dies (killed, terminal closed), a worker sees the file and resumes the run.
    mark_foreground(store.run_dir(run_id))
    print(f"run {run_id}: {config.arch} on {config.dataset}, {config.epochs} epoch(s)", flush=True)
    stop = threading.Event()
    with stop_on_ctrl_c(stop):
        try:
            state, message = run_training(
                store, run_id, on_batch=ProgressBar(config.epochs), should_stop=stop.is_set,
                on_epoch=lambda row: print(epoch_line(row, config.epochs), flush=True))
        except KeyboardInterrupt:  # a second Ctrl+C: stop now, the run keeps its finished epochs
            state, message = RunState.CANCELLED, "interrupted by the user"
            store.set_state(run_id, state, message)
    with contextlib.suppress(OSError):
        (store.run_dir(run_id) / FOREGROUND_FILE).unlink()
    if state != RunState.DONE:
        print(f"run {state.value}: {message}", file=sys.stderr)
    print(store.run_dir(run_id), flush=True)
    return 0 if state == RunState.DONE else 1


def cmd_list(args: argparse.Namespace) -> int:
    runs = Store(args.results).list_runs()
    if args.json:
        print(json.dumps([r.to_json() for r in runs], indent=2))
        return 0
    if not runs:
        print("no runs yet: `python -m engine train` starts one")
        return 0
    print(f"{'id':<28} {'state':<11} {'arch':<14} {'dataset':<14} {'ep':>5} {'bs':>5} {'lr':>8} {'test acc':>9}")
    for r in runs:
        print(f"{r.id:<28} {r.state.value:<11} {r.arch:<14} {r.dataset[:14]:<14} "
              f"{r.epoch:>2}/{r.epochs:<2} {r.config['batch_size']:>5} {r.config['lr']:>8g} {pct(r.final_test_acc):>9}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = store_for_run(args.run, args.results)
    run = store.resolve(args.run)
    info = run.to_json() | {"config": run.config, "metrics": store.metrics(run.id), "jobs": _run_jobs(store, run.id)}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"run {run.id}  [{run.state.value}]  {run.path}")
    if run.error:
        print(f"error: {run.error}")
    for job in info["jobs"]:
        if job["state"] in ("queued", "running"):
            print(_job_line(job))
    print("config: " + ", ".join(f"{k}={v}" for k, v in run.config.items()))
    for row in info["metrics"]:
        print(epoch_line(row, run.epochs))
    return 0


def _setup_train(p):
    add_train_flags(p)
    add_results_flag(p)


def _setup_list(p):
    add_results_flag(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _setup_show(p):
    p.add_argument("run", help="a run id or its folder path")
    _setup_list(p)


# ---------------------------------------------------------------- jobs commands (worker and queue)

# the sweepable training fields (the queue's list) and the type of one value (that of its default)
SWEEP_FIELDS = {name: type(getattr(TrainConfig(), name)) for name in SWEEPABLE}


def _worker_hint(store: Store) -> str | None:
    from engine.worker import worker_status

    if worker_status(store).alive:
        return None
    return "note: no worker is running, so nothing runs yet: start one with `python -m engine worker` or `make worker`"


def _split_values(flag: str, raw: str, kind: type) -> list:
    values = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            raise UserError(f"{flag}: empty value in {raw!r}; give comma-separated values, e.g. {flag} 0.1,0.01")
        try:
            values.append(kind(part))
        except ValueError:
            raise UserError(f"{flag}: {part!r} is not {'an integer' if kind is int else 'a number'}") from None
    return values


def _run_jobs(store: Store, run_id: str) -> list[dict]:
    """The queue's jobs on a run (train, embed, ...), for `show`."""
    from engine.jobs import jobs_for_run

    return [job.to_json() for job in jobs_for_run(store, run_id)]


def _job_line(job: dict) -> str:
    p = job["progress"]
    if "epoch" in p:
        where = f" at epoch {p['epoch']}, batch {p['batch']}/{p['batches']}"
    elif "total" in p:
        where = f" at {p['done']}/{p['total']}" + (f" ({p['stage']})" if p.get("stage") else "")
    else:
        where = ""
    who = f" on worker {job['worker']}" if job["worker"] else ""
    flag = ", cancel requested" if job["cancel_requested"] else ""
    return f"job {job['id']} ({job['kind']}): {job['state']}{who}{where}{flag}"


def _describe(config: TrainConfig) -> str:
    return " ".join(f"{name}={getattr(config, name)}" for name in SWEEP_FIELDS)


def cmd_submit(args: argparse.Namespace) -> int:
    from engine import jobs

    config = config_from_args(args)
    store = Store(args.results)
    run_id = jobs.submit(store, config)  # the same preflight as `train`
    ahead = jobs.queue_length(store) - 1
    print(f"queued run {run_id}: {config.arch} on {config.dataset}, {config.epochs} epoch(s)"
          f"{f'; {ahead} job(s) ahead of it' if ahead else ''}", flush=True)
    hint = _worker_hint(store)
    if hint:
        print(hint, file=sys.stderr)
    print(store.run_dir(run_id), flush=True)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from engine import jobs

    defaults = TrainConfig()
    lists = {name: (_split_values("--" + name.replace("_", "-"), getattr(args, name), kind)
                    if getattr(args, name) is not None else [getattr(defaults, name)])
             for name, kind in SWEEP_FIELDS.items()}
    base = config_from_args(args, **{name: values[0] for name, values in lists.items()})
    grid = jobs.sweep_grid(base, **lists)
    store = Store(args.results)
    plan = jobs.plan_sweep(store, grid, reuse=args.reuse)  # validates every config before queueing any
    if args.dry_run:
        for i, p in enumerate(plan, start=1):
            print(f"{i:>3}. {_describe(p.config)}" + (f"  (reuses finished run {p.reuse})" if p.reuse else ""))
        reused = sum(p.reuse is not None for p in plan)
        print(f"dry run: {len(plan) - reused} run(s) would be queued" + (f", {reused} reused" if reused else ""))
        return 0
    sweep_id, run_ids = jobs.submit_sweep(store, grid, reuse=args.reuse)
    reused = 0
    for run_id, config in zip(run_ids, grid):
        if store.get_run(run_id).sweep_id == sweep_id:
            print(f"queued {run_id}  {_describe(config)}")
        else:
            reused += 1
            print(f"reused {run_id}  {_describe(config)}  (an identical finished run)")
    hint = _worker_hint(store)
    if hint:
        print(hint, file=sys.stderr)
    print(f"queued {len(run_ids) - reused} run(s) as sweep {sweep_id}" + (f", reused {reused}" if reused else ""))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.ml.threads import configure_threads
    from engine.runs.slots import plan_slots, run_slots

    for flag in ("idle_exit", "stale_after", "poll", "batch_delay"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 0, got {value}")
    if args.poll <= 0 or args.stale_after <= 0:
        raise UserError("--poll and --stale-after must be > 0")
    try:
        plan = plan_slots(args.slots, args.threads, once=args.once)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if plan.slots > 1:  # a supervisor of ordinary one-slot workers
        passed = ["--stale-after", str(args.stale_after), "--poll", str(args.poll),
                  "--batch-delay", str(args.batch_delay)]
        if args.results:
            passed += ["--results", args.results]
        if args.idle_exit is not None:
            passed += ["--idle-exit", str(args.idle_exit)]
        return run_slots(plan, passed)
    configure_threads(plan.threads)
    from engine.worker import run_worker

    run_worker(args.results, once=args.once, idle_exit=args.idle_exit, stale_after=args.stale_after,
               poll=args.poll, batch_delay=args.batch_delay)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from engine import jobs

    store = store_for_run(args.run, args.results)
    run = store.resolve(args.run)
    try:
        print(jobs.cancel(store, run.id))
    except jobs.JobError as exc:
        raise UserError(str(exc)) from None
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from engine import jobs

    store = store_for_run(args.run, args.results)
    run = store.resolve(args.run)
    try:
        run_id = jobs.retry(store, run.id)
    except jobs.JobError as exc:
        raise UserError(str(exc)) from None
    print(f"queued run {run_id}: a retry of {run.id} ({run.state.value})", flush=True)
    hint = _worker_hint(store)
    if hint:
        print(hint, file=sys.stderr)
    print(store.run_dir(run_id), flush=True)
    return 0


def _setup_submit(p):
    add_train_flags(p)
    add_results_flag(p)


def _setup_sweep(p):
    add_train_flags(p, multi=True)
    add_results_flag(p)
    p.add_argument("--dry-run", action="store_true", help="list the grid (validated) without queueing it")
    p.add_argument("--reuse", action="store_true",
                   help="reuse finished runs with an identical config instead of training them again")


def _setup_worker(p):
    from engine.jobs import STALE_AFTER
    from engine.worker import POLL_EVERY

    add_results_flag(p)
    p.add_argument("--once", action="store_true", help="run one job, then exit (at once when the queue is empty)")
    p.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                   help="exit after this many seconds with nothing to do")
    p.add_argument("--stale-after", type=float, default=STALE_AFTER, metavar="SECONDS",
                   help=f"requeue running jobs without a heartbeat for this long (default {STALE_AFTER:g})")
    p.add_argument("--poll", type=float, default=POLL_EVERY, metavar="SECONDS",
                   help=f"how often an idle worker looks at the queue (default {POLL_EVERY:g})")
    p.add_argument("--batch-delay", type=float, default=0.0, metavar="SECONDS",
                   help="sleep this long after every training batch (slows runs down for demos and tests)")
    p.add_argument("--slots", default="1", metavar="N",
                   help="train N runs at once, each in its own worker process with its share of the CPUs; "
                        "'auto' (what `make run` uses): one per 2 CPUs, at most 4 (default 1)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads per slot (default: the CPUs split evenly between the slots)")


def _setup_run_ref(p):
    p.add_argument("run", help="a run id or its folder path")
    add_results_flag(p)


JOB_COMMANDS = {
    "submit": (cmd_submit, "queue one training run for the worker", _setup_submit),
    "sweep": (cmd_sweep, "queue a grid of runs (comma-separated values) as one sweep", _setup_sweep),
    "worker": (cmd_worker, "run queued jobs in this process until stopped", _setup_worker),
    "cancel": (cmd_cancel, "cancel a queued or running run", _setup_run_ref),
    "retry": (cmd_retry, "queue a run's config again as a new run", _setup_run_ref),
}


# ---------------------------------------------------------------- embeddings and search commands

from engine.cli_search import SEARCH_COMMANDS  # embed, tsne, search, retrieval-eval


# ---------------------------------------------------------------- the registry

# name -> (run, one-line help, flag setup)
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, Callable[[argparse.ArgumentParser], None]]] = {
    "train": (cmd_train, "train one run in the foreground", _setup_train),
    "list": (cmd_list, "list the runs and their state", _setup_list),
    "show": (cmd_show, "one run: state, config, metrics", _setup_show),
    **SEARCH_COMMANDS,
    **JOB_COMMANDS,
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m engine", description="Lensboard engine")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help, setup) in COMMANDS.items():
        setup(sub.add_parser(name, help=help, description=help))
    return parser


# commands that compute with torch: their thread policy is set before they run (`worker` sets its own)
COMPUTE_COMMANDS = ("train", "embed", "tsne", "search", "retrieval-eval")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run = COMMANDS[args.command][0]
    if args.command in COMPUTE_COMMANDS:
        from engine.ml.threads import configure_threads

        configure_threads()
    try:
        return run(args)
    except (UserError, *USER_ERRORS) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head` closed our stdout: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1


if __name__ == "__main__":
    sys.exit(main())
