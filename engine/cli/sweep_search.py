"""`sweep --search random|tpe`: a search instead of a grid, and `sweep --resume SWEEP [--trials N]`.

    python -m engine sweep --search tpe --trials 24 --lr 1e-4:1e-1:log --arch basic_nn,simple_cnn \\
        --batch-size 32,64,128 --epochs 4 --prune asha

Ranges (LOW:HIGH, LOW:HIGH:log) work for --lr, --weight-decay and --momentum; comma lists for the
categorical fields (and for those three); --epochs is each trial's budget. The search holds out a
validation split (10% unless --val-split says otherwise) and chooses on --objective. Its first
trials are queued at once; the worker asks Optuna for the next ones as trials end. The last stdout
line ends with the sweep id. `sweep` (engine/cli/queue.py) hands its search flags to this module.
"""

from __future__ import annotations

import argparse

from engine.cli.common import config_from_args, print_worker_hint, settings_from
from engine.config import TrainConfig
from engine.errors import SearchSpaceError, SweepNotFound
from engine.runs import search, sweeps
from engine.runs.search_space import (
    DEFAULT_PARALLEL,
    DEFAULT_VAL_SPLIT,
    OBJECTIVES,
    RANGE_FIELDS,
    RULES,
    SEARCHABLE,
    SEARCHES,
    SearchSpec,
    build_spec,
    flag,
    parse_field,
    parse_values,
)
from engine.runs.store import Store

SEARCH_ONLY = ("trials", "prune", "objective", "search_seed", "parallel")  # flags a grid does not take
SPACE_FLAGS = (*SEARCHABLE, "dataset", "epochs", "val_split", "train_limit")  # fixed when a search starts

EPILOG = """a search: --search random|tpe --trials N; ranges LOW:HIGH or LOW:HIGH:log for --lr, --weight-decay,
--momentum; comma lists for --arch, --batch-size, --optimizer, --seed (and those three); --epochs is each
trial's budget. Extend or continue a search with --resume SWEEP [--trials MORE]."""


def add_search_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--search",
        choices=SEARCHES,
        default="grid",
        help="grid: every combination of the lists (default); random or tpe: sample --trials trials",
    )
    p.add_argument("--trials", type=int, default=None, help="a search: how many trials (with --resume: how many more)")
    p.add_argument(
        "--prune",
        choices=RULES,
        default=None,
        help="a search: stop bad trials early: none (default), median, asha (successive halving), hyperband",
    )
    p.add_argument(
        "--objective",
        choices=tuple(OBJECTIVES),
        default=None,
        help="a search: what to optimise on the validation split: val_acc (default) or val_loss",
    )
    p.add_argument(
        "--search-seed",
        type=int,
        default=None,
        metavar="S",
        help="a search: seeds the sampler (default 0); --seed stays the training seed",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=None,
        metavar="P",
        help=f"a search: trials queued or running at once (default {DEFAULT_PARALLEL}; one per worker)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="SWEEP",
        help="continue a search (after a crash, or a cancel); with --trials N, add N more trials",
    )
    p.epilog = EPILOG


def grid_args(args: argparse.Namespace) -> None:
    """For a grid: the search flags are refused, --momentum and --weight-decay take one number, and
    --val-split is 0 unless set (as before searches existed)."""
    for name in SEARCH_ONLY:
        if getattr(args, name) is not None:
            raise SearchSpaceError(
                f"{flag(name)} is for a search: add --search random or --search tpe "
                "(the default --search grid trains every combination of the lists)"
            )
    for name in RANGE_FIELDS:
        raw = getattr(args, name)
        if raw is not None and ":" in str(raw):
            raise SearchSpaceError(
                f"{flag(name)} {raw} is a range, and ranges need a search: add --search random "
                "or --search tpe (a grid takes comma lists)"
            )
    defaults = TrainConfig()
    for name in ("momentum", "weight_decay"):
        raw = getattr(args, name)
        if raw is None:
            setattr(args, name, getattr(defaults, name))
            continue
        values = parse_values(name, raw)
        if len(values) > 1:
            raise SearchSpaceError(
                f"{flag(name)} takes one value in a grid, got {raw!r}; lists and ranges of it "
                "need --search random or --search tpe"
            )
        setattr(args, name, values[0])
    if args.val_split is None:
        args.val_split = defaults.val_split


def spec_from_args(args: argparse.Namespace) -> SearchSpec:
    """The search the flags describe, checked (SearchSpaceError on any bad value)."""
    if args.reuse:
        raise SearchSpaceError("--reuse is for a grid; every trial of a search is a new run")
    _no_seeds(args)
    if args.trials is None:
        raise SearchSpaceError(f"a {args.search} search needs --trials N (how many trials to run)")
    defaults = TrainConfig()
    fields = {name: parse_field(name, getattr(args, name)) for name in SEARCHABLE if getattr(args, name) is not None}
    fixed = {}
    for name in ("dataset", "epochs"):
        raw = getattr(args, name)
        values = parse_values(name, raw) if raw is not None else [getattr(defaults, name)]
        if len(values) > 1 or ":" in str(raw or ""):
            why = "each trial's budget" if name == "epochs" else "the data every trial is compared on"
            raise SearchSpaceError(f"{flag(name)} takes one value in a search ({why}), got {raw!r}")
        fixed[name] = values[0]
    # the base takes every default; build_spec fixes the one-value fields and makes the rest dimensions
    base = config_from_args(
        args,
        **fixed,
        **{name: getattr(defaults, name) for name in SEARCHABLE},
        val_split=DEFAULT_VAL_SPLIT if args.val_split is None else args.val_split,
    )
    return build_spec(
        base,
        fields,
        sampler=args.search,
        trials=args.trials,
        prune=args.prune or "none",
        objective=args.objective or "val_acc",
        seed=0 if args.search_seed is None else args.search_seed,
        parallel=DEFAULT_PARALLEL if args.parallel is None else args.parallel,
    )


def _no_seeds(args: argparse.Namespace) -> None:
    if args.seeds != 1:
        raise SearchSpaceError(
            f"--seeds {args.seeds} repeats each point of a grid; a search samples its seeds "
            "instead: give --seed a list (e.g. --seed 0,1,2) to make it one more dimension"
        )


def params_text(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def describe(spec: SearchSpec) -> list[str]:
    b = spec.base
    lines = [
        f"{spec.sampler} search of {spec.trials} trial(s), sampler seed {spec.seed}; each trial up to "
        f"{b.epochs} epoch(s) of {b.arch if 'arch' not in spec.names else 'each arch'} on {b.dataset}; "
        f"early stopping: {spec.prune}; chooses on {spec.objective} over a {b.val_split:g} validation split"
    ]
    lines += [f"  {d.name}: {d.describe()}" for d in spec.dimensions]
    return lines


def cmd_search(args: argparse.Namespace) -> int:
    if args.resume:
        return _resume(args)
    spec = spec_from_args(args)
    settings = settings_from(args)
    if args.dry_run:
        sweeps.check_space(spec, settings.download)
        print("\n".join(describe(spec)))
        print(f"dry run: nothing queued; {min(spec.parallel, spec.trials)} trial(s) would be queued at once")
        return 0
    store = Store(settings.results)
    sweep_id, run_ids = sweeps.start_search(store, spec, download=settings.download)
    print("\n".join(describe(spec)))
    _print_queued(store, sweep_id, run_ids)
    print(
        f"queued {len(run_ids)} of {spec.trials} trial(s); the worker queues the rest as trials end. "
        f"Watch: python -m engine sweep-report {sweep_id}. Search {sweep_id}"
    )
    return 0


def _resume(args: argparse.Namespace) -> int:
    _no_seeds(args)
    given = [flag(n) for n in (*SPACE_FLAGS, "prune", "objective", "search_seed") if getattr(args, n) is not None]
    if given:
        raise SearchSpaceError(
            f"--resume keeps the search's own space and settings; drop {', '.join(given)} "
            "(only --trials N, to add N trials, and --parallel go with it)"
        )
    store = Store(settings_from(args).results)
    sweep_id = args.resume
    spec = search.load_spec(store, sweep_id)
    if spec is None:
        exists = store.conn.execute("SELECT 1 FROM runs WHERE sweep_id = ? LIMIT 1", (sweep_id,)).fetchone()
        raise SweepNotFound(
            f"sweep {sweep_id!r} is a grid: only a search can be resumed or extended"
            if exists
            else f"no search {sweep_id!r} in {store.root}"
        )
    if args.parallel is not None:
        search.set_parallel(store, sweep_id, args.parallel)
    run_ids = (
        search.top_up(store, sweep_id) if args.trials is None else search.extend_search(store, sweep_id, args.trials)
    )
    _print_queued(store, sweep_id, run_ids)
    made = len(search.load_trials(store, sweep_id, metrics=lambda run_id: []))
    total = (search.load_spec(store, sweep_id) or spec).trials  # the trials after an extension
    print(f"queued {len(run_ids)} trial(s); {made} of {total} trial(s) made so far. Search {sweep_id}")
    return 0


def _print_queued(store: Store, sweep_id: str, run_ids: list[str]) -> None:
    by_run = {t.run_id: t for t in search.load_trials(store, sweep_id, metrics=lambda run_id: [])}
    for run_id in run_ids:
        t = by_run[run_id]
        print(f"queued trial {t.number} {run_id}  {params_text(t.params)}")
    if run_ids:
        print_worker_hint(store)
