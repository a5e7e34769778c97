"""`python -m engine delete RUN`: remove a run's record and folder, as the Runs page's Delete does.

A queued or running run is cancelled first. The run is named by its id, a unique prefix of it, or
its folder. A registry row whose id is not a valid run id (`../../victim`) can be named exactly: only
its record goes, no path is built from it. A delete never leaves the results root. No torch import.
"""

from __future__ import annotations

import argparse

from engine.store import RunState, store_for_run

ACTIVE = (RunState.QUEUED, RunState.RUNNING, RunState.INTERRUPTED)


def cmd_delete(args: argparse.Namespace) -> int:
    from engine import jobs

    store = store_for_run(args.run, args.results)
    try:
        if any(run_id == args.run for run_id, _ in store.invalid_rows()):
            store.delete_run(args.run)
            print(f"removed the damaged registry row {args.run!r}: not a valid run id, so no file was touched")
            return 0
        run = store.resolve(args.run)
        if run.state in ACTIVE:
            try:
                print(jobs.cancel(store, run.id))
            except jobs.JobError:
                pass  # not on the queue any more: deleting is what was asked
        store.delete_run(run.id)
        print(f"deleted run {run.id} ({run.arch} on {run.dataset}, {run.state.value}) and its folder {run.path}")
        return 0
    finally:
        store.close()


def _setup_delete(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run id, a unique prefix of one, or its folder path")
    p.add_argument("--results", default=None, help="results root (default $LENSBOARD_RESULTS or ./results)")


# name -> (run, one-line help, flag setup), merged into engine.__main__.COMMANDS
COMMANDS = {
    "delete": (cmd_delete, "delete a run: its record and its folder (a queued or running run is cancelled first)",
               _setup_delete),
}
