"""`python -m engine delete RUN`: remove a run's record and folder, as the Runs page's Delete does.

A queued or running run is cancelled first. The run is named by its id, a unique prefix of it, or
its folder. A registry row whose id is not a valid run id (`../../victim`) can be named exactly: only
its record goes, no path is built from it. A delete never leaves the results root. No torch import.
"""

from __future__ import annotations

import argparse

from engine.cli.common import Command, add_results_flag, add_run_ref, store_of_run
from engine.errors import JobError
from engine.runs import jobs
from engine.runs.records import ACTIVE_STATES


def cmd_delete(args: argparse.Namespace) -> int:
    store = store_of_run(args)
    try:
        if any(run_id == args.run for run_id, _ in store.invalid_rows()):
            store.delete_run(args.run)
            print(f"removed the damaged registry row {args.run!r}: not a valid run id, so no file was touched")
            return 0
        run = store.resolve(args.run)
        if run.state in ACTIVE_STATES:
            try:
                print(jobs.cancel(store, run.id))
            except JobError:
                pass  # not on the queue any more: deleting is what was asked
        store.delete_run(run.id)
        print(f"deleted run {run.id} ({run.arch} on {run.dataset}, {run.state.value}) and its folder {run.path}")
        return 0
    finally:
        store.close()


def _setup_delete(p: argparse.ArgumentParser) -> None:
    add_run_ref(p)
    add_results_flag(p)


COMMANDS: dict[str, Command] = {
    "delete": (cmd_delete, _setup_delete),
}
