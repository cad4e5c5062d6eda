"""The durable run store: one SQLite database per run, written by one background thread.

Layout: ``<state_dir>/runs/<run_id>/state.db`` plus a ``lock`` file that the process recording the
run holds (``flock``), so two flowrun processes never write the same run. The store is a sink of
the event stream: calling it costs the run's thread one ``queue.put`` of a small tuple; the writer
thread owns the connection and commits records in groups, in the order they were recorded, so a
``kill -9`` loses at most the records of one commit in progress. Outputs are JSON text,
decoded with ``json.loads`` only: nothing is ever unpickled. ``load`` reads a run back for
``--resume``; ``list_runs`` summarises the runs of a state directory. Every sqlite3 error is
translated here into a ``StateError`` that names the database file.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from flowrun.errors import StateError
from flowrun.events import (
    BatchFinished,
    BatchStarted,
    Event,
    NodeFailed,
    NodeRecovered,
    NodeSkipped,
    NodeSucceeded,
    RunFinished,
    RunStarted,
)

COMMIT_MAX_RECORDS = 1000  # records per transaction, at most
# Records queued but not yet committed, at most: past it the run waits for the writer. Without
# it a fast batch outruns the writer (it gets little of the GIL), memory grows with the batch,
# and a kill -9 would lose most finished items. 10,000 is ~30 ms of the writer's work.
MAX_BACKLOG = 10_000
SCHEMA_VERSION = 1
DB_NAME = "state.db"
LOCK_NAME = "lock"
_SECOND = len("20261128-055533")  # run ids sharing this prefix started in the same second

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

# A queued record is one tuple whose first element is its kind; the statements number their
# parameters from ?2, so that very tuple is the row (sqlite binds ?1 and never reads it).
_NODE, _RECOVERED, _BATCH_STARTED, _BATCH_FINISHED, _RUN_STARTED, _RUN_FINISHED = range(6)
_FLUSH, _STOP = "flush", "stop"
_SQL = {
    # REPLACE gives the row a new rowid, so rowid order is the order of the latest records.
    _NODE: "INSERT OR REPLACE INTO nodes (node, batch, idx, status, attempt, duration_ms, action,"
    " output, error_type, message, traceback, updates, ts)"
    " VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    # Keeps the failure's attempts and error next to the fallback's output.
    _RECOVERED: "INSERT INTO nodes (node, status, output, fallback, ts)"
    " VALUES (?2, 'recovered', ?3, ?4, ?5) ON CONFLICT (node) DO UPDATE SET"
    " status = 'recovered', output = ?3, fallback = ?4, ts = ?5",
    _BATCH_STARTED: "INSERT INTO batches (batch, total, status, ts) VALUES (?2, ?3, 'running', ?4)"
    " ON CONFLICT (batch) DO UPDATE SET total = ?3, status = 'running', ts = ?4",
    _BATCH_FINISHED: "INSERT OR REPLACE INTO batches"
    " (batch, status, total, succeeded, failed, output_key, ts)"
    " VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    _RUN_STARTED: "INSERT INTO runs (started, resumed) VALUES (?2, ?3)",
    # Finishes the latest start; a run that never recorded RunStarted gets its row here.
    _RUN_FINISHED: "INSERT INTO runs (seq, started, resumed, status, duration_ms)"
    " VALUES (COALESCE((SELECT MAX(seq) FROM runs), 1), ?2 - ?4 / 1000.0, 0, ?3, ?4)"
    " ON CONFLICT (seq) DO UPDATE SET status = ?3, duration_ms = ?4",
}


def new_run_id(now: float | None = None) -> str:
    """A run id sortable by start time and unique enough: ``20261128-055533-3f9a`` (UTC)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class RunMeta:
    """What a run was started with; stored once, read back on ``--resume``."""

    run_id: str
    blueprint_id: str
    blueprint_path: str
    blueprint_sha256: str
    context: dict[str, Any]
    options: dict[str, Any]
    started: float


@dataclass(frozen=True, slots=True)
class StoredError:
    type: str
    message: str
    traceback: str


@dataclass(frozen=True, slots=True)
class StoredNode:
    """The last record of a task node or batch item."""

    status: str  # succeeded | failed | skipped | recovered
    attempts: int | None
    duration_ms: float | None
    output: Any
    action: str | None
    error: StoredError | None
    fallback: str | None = None


@dataclass(frozen=True, slots=True)
class StoredBatch:
    total: int
    status: str  # running | succeeded | failed
    succeeded: int | None = None
    failed: int | None = None
    output_key: str | None = None


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A run as recorded: what ``--resume`` needs to skip finished work."""

    meta: RunMeta
    status: str | None  # the latest start's RunFinished status; None if it never finished
    starts: int  # RunStarted records: 1 + the number of resumes
    nodes: dict[str, StoredNode]
    items: dict[str, dict[int, StoredNode]]
    batches: dict[str, StoredBatch]
    context_updates: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    blueprint_id: str
    blueprint_path: str
    status: str  # completed | failed | cancelled | running | interrupted | corrupt
    started: float | None
    duration_s: float | None
    error: str | None = None  # why a run is `corrupt`


def _json(value: Any, node: str, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StateError(f"node {node!r}: {what} cannot be stored as JSON: {exc}") from exc


def _succeeded(e: NodeSucceeded) -> tuple[Any, ...] | None:
    if e.reused:  # replayed from this very store on --resume: already durable
        return None
    updates = _json(dict(e.context_updates), e.node, "ctx.set()") if e.context_updates else None
    return (_NODE, e.node, e.batch, e.index, "succeeded", e.attempt, e.duration_ms, e.action,
            e.output_json, None, None, None, updates, e.ts)  # fmt: skip


def _failed(e: NodeFailed) -> tuple[Any, ...]:
    return (_NODE, e.node, e.batch, e.index, "failed", e.attempt, e.duration_ms, None,
            None, e.error_type, e.message, e.traceback, None, e.ts)  # fmt: skip


def _skipped(e: NodeSkipped) -> tuple[Any, ...]:
    return (_NODE, e.node, None, None, "skipped", None, None, None,
            None, None, None, None, None, e.ts)  # fmt: skip


def _recovered(e: NodeRecovered) -> tuple[Any, ...]:
    return (_RECOVERED, e.node, _json(e.output, e.node, "the fallback output"), e.fallback, e.ts)


def _batch_finished(e: BatchFinished) -> tuple[Any, ...]:
    return (_BATCH_FINISHED, e.node, e.status, e.total, e.succeeded, e.failed, e.output_key, e.ts)


_ENCODERS: dict[type[Event], Callable[[Any], tuple[Any, ...] | None]] = {
    NodeSucceeded: _succeeded,
    NodeFailed: _failed,
    NodeSkipped: _skipped,
    NodeRecovered: _recovered,
    BatchStarted: lambda e: (_BATCH_STARTED, e.node, e.total, e.ts),
    BatchFinished: _batch_finished,
    RunStarted: lambda e: (_RUN_STARTED, e.ts, e.resumed),
    RunFinished: lambda e: (_RUN_FINISHED, e.ts, e.status, e.duration_ms),
}


class _Writer:
    """The thread that owns the run's connection: drains the queue, commits in groups."""

    def __init__(self, conn: sqlite3.Connection, name: str) -> None:
        self.queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.failure: Exception | None = None
        # Backpressure: the recording thread counts what it queued, this thread what it took;
        # each counter has one writer, so no lock is needed to read the gap.
        self.queued = 0
        self.taken = 0
        self.caught_up = threading.Event()
        self._conn = conn
        # Daemon, so a store nobody closed cannot hang the interpreter's exit; the store's
        # finalizer still stops it cleanly (committing the queue) at exit.
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        try:
            while True:
                records = self._drain()
                if self.failure is None:  # after a failure, keep answering flush() only
                    self._commit(records)
                self.taken += len(records)
                if self.queued - self.taken <= MAX_BACKLOG // 2:
                    self.caught_up.set()
                for record in records:
                    if record[0] == _FLUSH:
                        record[1].set()
                if records[-1][0] == _STOP:
                    return
        finally:
            self._conn.close()

    def _drain(self) -> list[tuple[Any, ...]]:
        """Block for a record, then take what is already queued (up to COMMIT_MAX_RECORDS or a
        marker) and commit at once. Records group by themselves while a commit is running, so
        a busy run still writes in large transactions, and a finished record waits at most one
        commit: that, plus what was running, is all a `kill -9` can lose."""
        get = self.queue.get
        records = [get()]
        while len(records) < COMMIT_MAX_RECORDS and records[-1][0] not in (_FLUSH, _STOP):
            try:
                records.append(get(block=False))
            except queue.Empty:
                break
        return records

    def _commit(self, records: list[tuple[Any, ...]]) -> None:
        try:
            self._conn.execute("BEGIN")
            # Runs of consecutive same-kind records keep the recorded order inside one transaction.
            for kind, group in groupby(records, itemgetter(0)):
                if kind in _SQL:
                    self._conn.executemany(_SQL[kind], group)
            self._conn.execute("COMMIT")
        except Exception as exc:  # reported by the next flush() or close()
            self.failure = exc
            with suppress(sqlite3.Error):
                self._conn.rollback()


def _shutdown(writer: _Writer, lock_fd: int) -> None:
    """Commit what is queued, stop the writer, release the run lock. Kept free of the store so
    that ``weakref.finalize`` can run it when a store was never closed (GC or interpreter exit)."""
    writer.queue.put((_STOP,))
    writer.thread.join()
    os.close(lock_fd)


class RunStore:
    """One run's durable state, open for recording. Also the event sink: ``store(event)``.

    Get one with `create` or `open`; ``close()`` it (or use ``with``) to commit the last records
    and release the run lock.
    """

    def __init__(self, meta: RunMeta, run_dir: Path, conn: sqlite3.Connection, lock_fd: int):
        self.meta = meta
        self.run_id = meta.run_id
        self.run_dir = run_dir
        self.db_path = run_dir / DB_NAME
        self._closed = False
        self._writer = _Writer(conn, name=f"flowrun-store-{meta.run_id}")
        self._put = self._writer.queue.put
        self._finalizer = weakref.finalize(self, _shutdown, self._writer, lock_fd)

    @classmethod
    def create(cls, state_dir: Path, meta: RunMeta) -> RunStore:
        """Make ``<state_dir>/runs/<run_id>/`` and its database, and lock it for recording."""
        try:
            row = json.dumps(asdict(meta), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StateError(f"run {meta.run_id!r}: context or options not JSON: {exc}") from exc
        run_dir = _runs_dir(state_dir) / _checked_id(meta.run_id)
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:
            raise StateError(f"run {meta.run_id!r} already exists in {run_dir}") from None
        except OSError as exc:
            raise StateError(f"cannot create run directory {run_dir}: {exc}") from exc
        db = run_dir / DB_NAME
        lock_fd = _lock(run_dir, meta.run_id)
        return cls(meta, run_dir, _prepared(db, lock_fd, create=row), lock_fd)

    @classmethod
    def open(cls, state_dir: Path, run_id: str, blueprint_id: str | None = None) -> RunStore:
        """Open an existing run to record more. ``latest`` is the most recently started run
        (of `blueprint_id`, when given)."""
        run_dir = _run_dir(state_dir, run_id, blueprint_id)
        db = run_dir / DB_NAME
        if not db.is_file():
            raise StateError(f"{run_dir} is not a flowrun run directory (no {DB_NAME})")
        lock_fd = _lock(run_dir, run_dir.name)
        conn = _prepared(db, lock_fd, create=None)
        try:
            meta = _read_meta(conn, db)
        except StateError:
            conn.close()
            os.close(lock_fd)
            raise
        return cls(meta, run_dir, conn, lock_fd)

    def __call__(self, event: Event) -> None:
        """Record `event`. Runs in the caller's thread: encode a small tuple, one queue.put."""
        encode = _ENCODERS.get(type(event))
        record = None if encode is None else encode(event)
        if record is not None:
            if self._closed:
                raise StateError(f"run store {self.db_path} is closed; cannot record {event.event}")
            self._put(record)
            writer = self._writer
            writer.queued += 1
            if writer.queued - writer.taken > MAX_BACKLOG:
                self._wait_for_writer()

    def _wait_for_writer(self) -> None:
        """Let the writer catch up to half the backlog (it commits while we wait)."""
        writer = self._writer
        writer.caught_up.clear()
        while writer.queued - writer.taken > MAX_BACKLOG // 2 and writer.thread.is_alive():
            writer.caught_up.wait(0.1)
            writer.caught_up.clear()

    def flush(self) -> None:
        """Block until every record queued so far is committed."""
        if not self._closed:
            done = threading.Event()
            self._put((_FLUSH, done))
            done.wait()
        self._raise_failure()

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the database, release the lock."""
        if not self._closed:
            self._closed = True
            self._finalizer()
            self._raise_failure()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def load(self) -> StoredRun:
        """Everything recorded so far (flushes first), decoded with ``json.loads``."""
        self.flush()
        with _translated(self.db_path):
            conn = _connect(self.db_path, mode="ro")
            try:
                return _read_run(conn, self.meta)
            finally:
                conn.close()

    def _raise_failure(self) -> None:
        failure = self._writer.failure
        if failure is not None:
            raise StateError(f"cannot record run state in {self.db_path}: {failure}") from failure


def list_runs(state_dir: Path, limit: int = 20) -> list[RunSummary]:
    """The newest `limit` runs, newest first; an unreadable run is listed as ``corrupt``."""
    ids = sorted(_run_ids(state_dir), reverse=True)
    cut = limit
    while 0 < cut < len(ids) and ids[cut][:_SECOND] == ids[cut - 1][:_SECOND]:
        cut += 1  # ids order runs by the second they started; `started` orders within it
    runs = [_summary(_runs_dir(state_dir) / run_id) for run_id in ids[:cut]]
    runs.sort(key=lambda r: (r.run_id[:_SECOND], r.started or 0.0, r.run_id), reverse=True)
    return runs[:limit]


def _runs_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "runs"


def _run_ids(state_dir: Path) -> list[str]:
    try:
        return [p.name for p in _runs_dir(state_dir).iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateError(f"cannot list runs in {_runs_dir(state_dir)}: {exc}") from exc


def _checked_id(run_id: str) -> str:
    # A run id becomes a directory name: nothing that could climb out of runs/.
    if not run_id or run_id.startswith(".") or not all(c.isalnum() or c in "_.-" for c in run_id):
        raise StateError(f"invalid run id {run_id!r}: use letters, digits, '_', '.' and '-'")
    return run_id


def _run_dir(state_dir: Path, run_id: str, blueprint_id: str | None = None) -> Path:
    runs_dir = _runs_dir(state_dir)
    if run_id == "latest":
        limit = 1 if blueprint_id is None else len(_run_ids(state_dir))
        newest = [
            r
            for r in list_runs(state_dir, limit=max(1, limit))
            if blueprint_id in (None, r.blueprint_id) or r.status == "corrupt"
        ]
        if not newest:
            of = "" if blueprint_id is None else f" of blueprint '{blueprint_id}'"
            raise StateError(f"no run to resume: {runs_dir} holds no runs{of}")
        return runs_dir / newest[0].run_id
    if not (runs_dir / _checked_id(run_id)).is_dir():
        known = sorted(_run_ids(state_dir), reverse=True)
        hint = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "") if known else "none"
        raise StateError(f"no run {run_id!r} under {runs_dir} (runs: {hint})")
    return runs_dir / run_id


def _lock(run_dir: Path, run_id: str) -> int:
    """Hold the run's lock file for as long as the store is open (the kernel drops it on exit)."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StateError(f"cannot lock run {run_id!r} in {run_dir}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StateError(f"run {run_id} is in use by another flowrun process") from None
    return fd


def _in_use(run_dir: Path) -> bool:
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
def _translated(db: Path) -> Iterator[None]:
    """The boundary: sqlite3 and JSON decoding errors become a StateError naming the file."""
    try:
        yield
    except (sqlite3.Error, ValueError) as exc:
        raise StateError(f"cannot read run state {db}: {exc}") from exc


def _connect(db: Path, mode: str) -> sqlite3.Connection:
    # `mode` rw/ro never creates a missing file; autocommit, as the writer issues BEGIN itself.
    uri = f"{db.resolve().as_uri()}?mode={mode}"
    # check_same_thread=False: the connection is checked here, then handed to the writer
    # thread, which alone uses it from then on.
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def _prepared(db: Path, lock_fd: int, create: str | None) -> sqlite3.Connection:
    """A connection in WAL mode, with the schema made (`create`: the meta row) or checked."""
    conn: sqlite3.Connection | None = None
    try:
        with _translated(db):
            conn = _connect(db, mode="rwc" if create is not None else "rw")
            if create is None:
                _check_schema(conn, db)  # before any pragma: never convert a foreign file
            # WAL + synchronous=NORMAL: a commit is durable once in the WAL file, which a killed
            # process cannot undo; only an OS crash or power loss can drop the last commits.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if create is not None:
                conn.executescript(f"BEGIN; {_SCHEMA} COMMIT;")
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("run", create)],
                )
        return conn
    except BaseException:
        if conn is not None:
            conn.close()
        os.close(lock_fd)
        raise


def _check_schema(conn: sqlite3.Connection, db: Path) -> None:
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


def _read_meta(conn: sqlite3.Connection, db: Path) -> RunMeta:
    with _translated(db):
        row = conn.execute("SELECT value FROM meta WHERE key = 'run'").fetchone()
        try:
            return RunMeta(**json.loads(row[0]))
        except (TypeError, KeyError) as exc:
            raise StateError(f"{db}: the run description is damaged ({exc})") from exc


def _summary(run_dir: Path) -> RunSummary:
    db = run_dir / DB_NAME
    try:
        with _translated(db):
            conn = _connect(db, mode="ro")
            try:
                _check_schema(conn, db)
                meta = _read_meta(conn, db)
                last = conn.execute("SELECT status, duration_ms FROM runs ORDER BY seq DESC")
                status, duration_ms = last.fetchone() or (None, None)
            finally:
                conn.close()
    except StateError as exc:
        return RunSummary(run_dir.name, "", "", "corrupt", None, None, error=str(exc))
    if status is None:
        status = "running" if _in_use(run_dir) else "interrupted"
    duration_s = None if duration_ms is None else duration_ms / 1000
    return RunSummary(
        meta.run_id, meta.blueprint_id, meta.blueprint_path, status, meta.started, duration_s
    )


def _read_run(conn: sqlite3.Connection, meta: RunMeta) -> StoredRun:
    nodes: dict[str, StoredNode] = {}
    items: dict[str, dict[int, StoredNode]] = {}
    updates: dict[str, Any] = {}
    rows = conn.execute(
        "SELECT node, batch, idx, status, attempt, duration_ms, output, action, error_type,"
        " message, traceback, updates, fallback FROM nodes ORDER BY rowid"
    )
    for node, batch, idx, status, attempt, ms, output, action, etype, msg, tb, upd, fb in rows:
        error = None if etype is None else StoredError(etype, msg or "", tb or "")
        out = None if output is None else json.loads(output)
        stored = StoredNode(status, attempt, ms, out, action, error, fb)
        if batch is None:
            nodes[node] = stored
        else:
            items.setdefault(batch, {})[idx] = stored
        if upd is not None:
            updates.update(json.loads(upd))
    batches = {
        row[0]: StoredBatch(*row[1:])
        for row in conn.execute(
            "SELECT batch, total, status, succeeded, failed, output_key FROM batches"
        )
    }
    starts, status = conn.execute(
        "SELECT COUNT(*), (SELECT status FROM runs ORDER BY seq DESC LIMIT 1) FROM runs"
    ).fetchone()
    return StoredRun(meta, status, starts, nodes, items, batches, updates)
