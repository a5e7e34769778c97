"""The registry's SQLite file: its schema (runs, jobs, workers and searches) and how it is opened.

Read-write connections use WAL mode and a busy timeout; a read-only one (a shared or unwritable
results root) goes through SQLite's read-only mode, or opens the file as immutable when its folder
cannot even hold WAL's shared-memory file. engine.runs.store opens it; the worker's heartbeat `Pulse`
(engine.runs.executor) opens its own connection, so a beat never waits behind a job's transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from engine.errors import ResultsError

DB_NAME = "lensboard.sqlite3"

RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    state TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'train',
    dataset TEXT NOT NULL,
    arch TEXT NOT NULL,
    config TEXT NOT NULL,
    sweep_id TEXT,
    error TEXT,
    epochs INTEGER NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,       -- epochs finished
    batch INTEGER NOT NULL DEFAULT 0,       -- batches done in the current epoch
    batches INTEGER NOT NULL DEFAULT 0,     -- batches per epoch
    final_test_acc REAL,
    best_test_acc REAL,
    final_test_loss REAL,
    sec_per_epoch REAL
);
CREATE INDEX IF NOT EXISTS runs_state ON runs(state);
"""
QUEUE_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- FIFO order
    kind TEXT NOT NULL,                     -- a JobKind: train, embed, project, index
    run_id TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT '{}',     -- JSON: what the job needs beyond the run
    state TEXT NOT NULL,
    created REAL NOT NULL,
    claimed_at REAL,
    finished_at REAL,
    worker TEXT,                            -- id of the claiming worker
    heartbeat REAL,                         -- last sign of life of that worker on this job
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    note TEXT,                              -- what a finished job says about its result
    progress TEXT NOT NULL DEFAULT '{}',    -- JSON of a jobs.Progress
    executor TEXT,                          -- where its work ran: 'local' (the worker's process) or 'ray'
    node TEXT,                              -- the host name (local) or the Ray node id in hex (ray)
    attempts INTEGER NOT NULL DEFAULT 0     -- how many times it was claimed (more than 1 after a requeue)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    job_id INTEGER,                         -- the job it is running, if any
    stopped REAL                            -- set when it exits cleanly
);
"""
SEARCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS searches (       -- a sweep that is a random or TPE search (engine.runs.search)
    sweep_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    spec TEXT NOT NULL                      -- JSON SearchSpec; its `trials` grows when the search is extended
);
CREATE TABLE IF NOT EXISTS search_trials (  -- one per trial of a search; the trial's run is a row of runs
    run_id TEXT PRIMARY KEY,
    sweep_id TEXT NOT NULL,
    number INTEGER NOT NULL,                -- Optuna's trial number: 0, 1, ... in the order they were asked
    params TEXT NOT NULL,                   -- JSON: the searched values this trial trains with
    system_attrs TEXT NOT NULL DEFAULT '{}',  -- JSON: what the pruner remembers about it (ASHA's rungs)
    pruned_at INTEGER,                      -- the epoch after which the pruner stopped it; NULL: not pruned
    UNIQUE (sweep_id, number)
);
"""
SCHEMA = RUNS_SCHEMA + QUEUE_SCHEMA + SEARCH_SCHEMA


BUSY_TIMEOUT = 30.0  # seconds a statement waits for another process's write lock before it fails


def is_busy(exc: BaseException) -> bool:
    """True for SQLite's "database is locked" (another process held the write lock past the busy timeout)."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def connect_read_only(db_path: Path, busy_timeout: float = BUSY_TIMEOUT) -> sqlite3.Connection:
    """A connection that can only read: through SQLite's read-only mode, or, when the folder cannot
    be written (no room for WAL's shared-memory file), as an immutable file."""
    if not db_path.is_file():
        raise ResultsError(f"{db_path.parent} holds no Lensboard database ({DB_NAME}) to read")
    problem: Exception | None = None
    for mode in ("mode=ro", "immutable=1"):
        try:
            conn = sqlite3.connect(
                f"{db_path.as_uri()}?{mode}",
                uri=True,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("SELECT id FROM runs LIMIT 1")
        except sqlite3.DatabaseError as exc:
            problem = exc
            continue
        conn.row_factory = sqlite3.Row
        have = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"jobs", "workers"} <= have:  # a database from before they existed: empty stand-ins to read
            conn.executescript(QUEUE_SCHEMA.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE IF NOT EXISTS"))
        if not {"searches", "search_trials"} <= have:  # the same for a database from before searches
            conn.executescript(SEARCH_SCHEMA.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE IF NOT EXISTS"))
        return conn
    raise ResultsError(f"cannot read {db_path} ({problem}): it must be a Lensboard database")


def connect(db_path: Path, busy_timeout: float = BUSY_TIMEOUT) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def create_tables(conn: sqlite3.Connection) -> None:
    """Every table and index, and the columns an older database lacks (idempotent)."""
    conn.executescript(SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "note" not in columns:  # a database from before the column existed
        conn.execute("ALTER TABLE jobs ADD COLUMN note TEXT")
    for column in ("executor", "node"):  # a database from before jobs recorded where they ran
        if column not in columns:
            conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")
