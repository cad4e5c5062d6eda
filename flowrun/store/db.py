"""A run's directory and database file, as both the recording and the reading side see them.

Layout: ``<state_dir>/runs/<run_id>/state.db`` plus a ``lock`` file that the process recording the
run holds (``flock``), so two flowrun processes never write the same run. This module owns the
names, the schema and its versions (made for a new run, checked on every open, migrated when an
older run is reopened), connecting, and the lock. Every sqlite3 error met while connecting or
reading is translated into a ``StateError`` that names the database file (`translated`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flowrun.errors import StateError

SCHEMA_VERSION = 3  # 2: item_chunks; 3: logs, spans, samples. Older runs get them when reopened
DB_NAME = "state.db"
LOCK_NAME = "lock"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (seq INTEGER PRIMARY KEY, started REAL NOT NULL, resumed INTEGER NOT NULL,
                   status TEXT, duration_ms REAL);
CREATE TABLE nodes (node TEXT PRIMARY KEY, batch TEXT, idx INTEGER, status TEXT NOT NULL,
                    attempt INTEGER, duration_ms REAL, action TEXT, output TEXT, error_type TEXT,
                    message TEXT, traceback TEXT, updates TEXT, fallback TEXT, ts REAL NOT NULL);
CREATE TABLE batches (batch TEXT PRIMARY KEY, total INTEGER NOT NULL, status TEXT NOT NULL,
                      succeeded INTEGER, failed INTEGER, output_key TEXT, ts REAL NOT NULL);
"""
# Successful batch items, a group per row; each TEXT column but `batch` holds a JSON array with
# one element per item, or is NULL for the common case: `attempts` when every item succeeded at
# its first attempt, `actions` when none chose an action. Durations are whole microseconds:
# encoding ints costs a quarter of encoding floats, the most of what a chunk costs.
_CHUNKS_SCHEMA = """
CREATE TABLE item_chunks (batch TEXT NOT NULL, size INTEGER NOT NULL, indices TEXT NOT NULL,
                          attempts TEXT, durations_us TEXT NOT NULL, actions TEXT,
                          outputs TEXT NOT NULL, ts REAL NOT NULL);
"""
# 3: what each attempt printed (`logs`), when each task node and batch ran (`spans`), and each
# batch's items running over time (`samples`: the peak per `step` seconds from `start`, a JSON
# array of at most a few thousand ints whatever the batch's size).
_V3_SCHEMA = """
CREATE TABLE logs (node TEXT NOT NULL, attempt INTEGER NOT NULL, text TEXT NOT NULL,
                   ts REAL NOT NULL, PRIMARY KEY (node, attempt));
CREATE TABLE spans (node TEXT PRIMARY KEY, batch TEXT, started REAL NOT NULL, finished REAL,
                    status TEXT);
CREATE TABLE samples (batch TEXT PRIMARY KEY, start REAL NOT NULL, step REAL NOT NULL,
                      peaks TEXT NOT NULL);
"""
V3_TABLES = frozenset({"logs", "spans", "samples"})


def runs_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "runs"


def run_ids(state_dir: Path) -> list[str]:
    """The ids of the runs under `state_dir`, in no particular order."""
    try:
        # A name starting with '.' is a run being created (see `RunStore.create`).
        return [p.name for p in runs_dir(state_dir).iterdir() if p.is_dir() and p.name[:1] != "."]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateError(f"cannot list runs in {runs_dir(state_dir)}: {exc}") from exc


MAX_ID = 128  # characters of a run id; flowrun's own are 20


def checked_id(run_id: str) -> str:
    """`run_id`, once it is known to be safe as a directory name."""
    # A run id becomes a directory name: nothing that could climb out of runs/.
    if not run_id or run_id.startswith(".") or not all(c.isalnum() or c in "_.-" for c in run_id):
        raise StateError(f"invalid run id {run_id!r}: use letters, digits, '_', '.' and '-'")
    if len(run_id) > MAX_ID:  # a file system refuses longer names (255 bytes on most)
        raise StateError(f"invalid run id {run_id[:40]!r}...: longer than {MAX_ID} characters")
    return run_id


def lock_run(run_dir: Path, run_id: str) -> int:
    """Hold the run's lock file for as long as the store is open (the kernel drops it on exit)."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(f"cannot lock run {run_id!r} in {run_dir}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StateError(f"run {run_id} is in use by another flowrun process") from None
    return fd


def in_use(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock. The probe takes a shared lock for an
    instant; an `open` racing with it in that instant would see the run as in use."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock too
    return False


@contextmanager
def translated(db: Path) -> Iterator[None]:
    """The boundary: sqlite3 and JSON decoding errors become a StateError naming the file."""
    try:
        yield
    except (sqlite3.Error, ValueError) as exc:
        raise StateError(f"cannot read run state {db}: {exc}") from exc


def connect(db: Path, mode: str) -> sqlite3.Connection:
    """A connection to `db` (``mode``: an SQLite URI mode), with no implicit transactions."""
    # `mode` rw/ro never creates a missing file; autocommit, as the writer issues BEGIN itself.
    uri = f"{db.resolve().as_uri()}?mode={mode}"
    if mode != "ro":
        return _connect(uri)
    try:
        conn = _connect(uri)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")  # opens the WAL index, if it can
        return conn
    except sqlite3.OperationalError:
        # A read-only directory (a read-only mount, a copy without write permission): SQLite
        # cannot create the WAL index beside a database in WAL mode, and refuses to read it.
        # A run closed cleanly has no WAL left, so its file alone is the whole run: read it
        # as immutable. With a WAL left (a run killed, or still running) that would silently
        # miss its last commits, so the error stands.
        wal = db.with_name(db.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise
        return _connect(uri + "&immutable=1")


def _connect(uri: str) -> sqlite3.Connection:
    # check_same_thread=False: the connection is checked here, then handed to the writer
    # thread, which alone uses it from then on.
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def prepared(db: Path, lock_fd: int, create: str | None) -> sqlite3.Connection:
    """A connection in WAL mode, with the schema made (`create`: the meta row) or checked.
    On failure it closes what it opened and releases the lock `lock_fd`."""
    conn: sqlite3.Connection | None = None
    try:
        with translated(db):
            conn = connect(db, mode="rwc" if create is not None else "rw")
            if create is not None:
                _make(conn, db, create)
                return conn
            # Checked before any pragma: never convert a foreign file.
            version = check_schema(conn, db)
            # WAL + synchronous=NORMAL: a commit is durable once in the WAL file, which a killed
            # process cannot undo; only an OS crash or power loss can drop the last commits.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if version < SCHEMA_VERSION:
                # A run recorded by an older flowrun: its rows read as they always did, and it
                # is resumed with the new tables (which that older flowrun would not read).
                added = (_CHUNKS_SCHEMA if version < 2 else "") + _V3_SCHEMA
                conn.executescript(
                    f"BEGIN; {added} UPDATE meta SET value = '{SCHEMA_VERSION}'"
                    " WHERE key = 'schema_version'; COMMIT;"
                )
        return conn
    except BaseException:
        if conn is not None:
            conn.close()
        os.close(lock_fd)
        raise


def _make(conn: sqlite3.Connection, db: Path, meta_row: str) -> None:
    """The schema and the meta rows of a new run as one transaction, then WAL mode, then the
    file flushed to disk once.

    The run is invisible until its directory is renamed: no statement here needs to be on
    disk before the next one, only the finished file before the rename. Synced statement by
    statement, the same work flushed to disk eight times (turning on WAL in a new file is a
    rollback-journal transaction of its own, then the schema went through the WAL and its
    checkpoint); a flush is milliseconds, the most of what a one-shot run's store cost."""
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(f"BEGIN; {_SCHEMA} {_CHUNKS_SCHEMA} {_V3_SCHEMA}")
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("schema_version", str(SCHEMA_VERSION)), ("run", meta_row)],
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")  # empty WAL: the file holds everything
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        fd = os.open(db, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateError(f"cannot write run state {db}: {exc}") from exc


def check_schema(conn: sqlite3.Connection, db: Path) -> int:
    """The run's schema version, once it is known to be one this flowrun reads."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    if not {"meta", "runs", "nodes", "batches"} <= tables:
        raise StateError(f"{db} is an SQLite database but not a flowrun run (no flowrun tables)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row and str(row[0]).isdigit() else 0
    if version < 1:
        raise StateError(f"{db} is not a flowrun run (no schema version)")
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{db} was written by a newer flowrun (schema version {version}; this flowrun"
            f" reads up to {SCHEMA_VERSION}): upgrade flowrun to read it"
        )
    if version >= 2 and "item_chunks" not in tables:
        raise StateError(f"{db}: the run is damaged (schema version {version}, no item_chunks)")
    if version >= 3 and not tables >= V3_TABLES:
        raise StateError(f"{db}: the run is damaged (schema version {version}, no logs/spans)")
    return version
