"""Commands that only read or change the registry: list, show, cancel, retry. They never import torch."""

from __future__ import annotations

import argparse
import json
import sys

from engine.cli.common import (
    Command,
    add_results_flag,
    add_run_ref,
    epoch_line,
    open_run,
    open_store,
    pct,
    print_worker_hint,
)
from engine.config import arch_label
from engine.files import read_metrics
from engine.runs import jobs
from engine.runs.records import RunKind


def cmd_list(args: argparse.Namespace) -> int:
    runs = open_store(args).list_runs()
    if args.json:
        print(json.dumps([r.to_json() for r in runs], indent=2))
        return 0
    if not runs:
        print("no runs yet: `python -m engine train` starts one")
        return 0
    print(f"{'id':<28} {'state':<11} {'arch':<14} {'dataset':<14} {'ep':>5} {'bs':>5} {'lr':>8} {'test acc':>9}")
    for r in runs:
        bs, lr = r.config.get("batch_size", "-"), r.config.get("lr")  # a tracked script may give neither
        lr = f"{lr:g}" if isinstance(lr, (int, float)) else "-"
        print(
            f"{r.id:<28} {r.shown_state:<11} {arch_label(r.arch):<14} {r.dataset[:14]:<14} "
            f"{r.epoch:>2}/{r.epochs:<2} {bs:>5} {lr:>8} {pct(r.final_test_acc):>9}"
        )
    return 0


def job_line(job: jobs.Job) -> str:
    who = f" on worker {job.worker}" if job.worker else ""
    who += f" ({jobs.where(job.executor, job.node)})" if job.executor == "ray" and job.node else ""
    flag = ", cancel requested" if job.cancel_requested else ""
    return f"job {job.id} ({job.kind}): {job.state.value}{who}{job.progress.describe()}{flag}"


def cmd_show(args: argparse.Namespace) -> int:
    store, run = open_run(args)
    run_jobs = jobs.jobs_for_run(store, run.id)
    damaged: list[int] = []
    rows = read_metrics(run.paths.metrics, damaged)
    info = run.to_json() | {
        "config": run.config,
        "metrics": rows,
        "jobs": [job.to_json() for job in run_jobs],
        "damaged_metrics_lines": damaged,
    }
    if run.folder_missing:
        print(
            f"warning: the folder of run {run.id} ({run.path}) is gone: its metrics, checkpoints and model are lost",
            file=sys.stderr,
        )
    if damaged:
        print(
            f"warning: line(s) {', '.join(map(str, damaged))} of {run.paths.metrics} are damaged and "
            f"were skipped: those epochs are missing below",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"run {run.id}  [{run.shown_state}]  {run.path}")
    if run.error:
        print(f"error: {run.error}")
    for job in run_jobs:
        if job.state.active:
            print(job_line(job))
    trained = [job for job in run_jobs if job.kind == run.kind and job.node]
    if trained:
        print(f"trained on: {jobs.where(trained[-1].executor, trained[-1].node)}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in run.config.items()))
    for row in info["metrics"]:
        print(
            epoch_line(row, run.epochs)
            if run.kind != RunKind.TRACKED
            else "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
        )
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    store, run = open_run(args)
    print(jobs.cancel(store, run.id))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    store, run = open_run(args)
    run_id = jobs.retry(store, run.id)
    print(f"queued run {run_id}: a retry of {run.id} ({run.state.value})", flush=True)
    print_worker_hint(store)
    print(store.run_dir(run_id), flush=True)
    return 0


def _setup_list(p: argparse.ArgumentParser) -> None:
    add_results_flag(p, json=True)


def _setup_show(p: argparse.ArgumentParser) -> None:
    add_run_ref(p)
    add_results_flag(p, json=True)


def _setup_run_ref(p: argparse.ArgumentParser) -> None:
    add_run_ref(p)
    add_results_flag(p)


COMMANDS: dict[str, Command] = {
    "list": (cmd_list, _setup_list),
    "show": (cmd_show, _setup_show),
    "cancel": (cmd_cancel, _setup_run_ref),
    "retry": (cmd_retry, _setup_run_ref),
}
