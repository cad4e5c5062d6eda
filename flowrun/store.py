"""The durable run store: one SQLite database per run, written by one background thread.

Layout: ``<state_dir>/runs/<run_id>/state.db`` plus a ``lock`` file that the process recording the
run holds (``flock``), so two flowrun processes never write the same run. The store is a sink of
the event stream; the writer thread owns the connection and commits records in the order they
were handed to it, as soon as any are waiting. Outputs are JSON text, decoded with
``json.loads`` only: nothing is ever unpickled. ``load`` reads a run back for ``--resume``;
``list_runs`` summarises the runs of a state directory. Every sqlite3 error is translated here
into a ``StateError`` that names the database file.

Successful batch items are recorded in groups: the sink keeps each batch's successes (up to
``GROUP_MAX``) and hands the writer one ``item_chunks`` row per group, its outputs the workers'
JSON texts joined into one array. A group is handed over when it is full, when the run is about
to wait for work (``idle``), before any other record, and on ``flush``/``close``. Failed items,
items that set context keys, and task nodes keep one ``nodes`` row each. A success is final (a
succeeded item is never run again), so ``load`` lets a chunk's success win over any row.

What a ``kill -9`` can lose: per batch, the successes not yet handed over (fewer than
``GROUP_MAX``; none once the run has waited for work), plus what the writer holds uncommitted
(``MAX_BACKLOG`` items at most, counting a chunk as its items), plus what was running.
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
# Items handed to the writer but not yet committed, at most (a chunk counts as its items): past
# it the run waits for the writer. Without it a fast batch outruns the writer (it gets little of
# the GIL), memory grows with the batch, and a kill -9 would lose most finished items.
MAX_BACKLOG = 10_000
# Successful items of one batch recorded as one chunk row, at most. Binding and inserting a row
# costs the writer a few µs of the GIL whatever its size, taken from the run: one row per item
# made a no-op batch ~1.4x slower than not recording it. A group of 256 makes that cost per item
# small, and a kill -9 loses at most a group more.
GROUP_MAX = 256
SCHEMA_VERSION = 2  # 2: item_chunks; a version-1 run gets the table when reopened
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
# Successful batch items, a group per row; each TEXT column but `batch` holds a JSON array with
# one element per item, or is NULL for the common case: `attempts` when every item succeeded at
# its first attempt, `actions` when none chose an action. Durations are whole microseconds:
# encoding ints costs a quarter of encoding floats, the most of what a chunk costs.
_CHUNKS_SCHEMA = """
CREATE TABLE item_chunks (batch TEXT NOT NULL, size INTEGER NOT NULL, indices TEXT NOT NULL,
                          attempts TEXT, durations_us TEXT NOT NULL, actions TEXT,
                          outputs TEXT NOT NULL, ts REAL NOT NULL);
"""

# A queued record is one tuple whose first element is its kind; the statements number their
# parameters from ?2, so that very tuple is the row (sqlite binds ?1 and never reads it).
_NODE, _RECOVERED, _BATCH_STARTED, _BATCH_FINISHED, _RUN_STARTED, _RUN_FINISHED, _CHUNK = range(7)
_FLUSH, _STOP = "flush", "stop"
_SIZE = 2  # where a chunk record holds its number of items
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
    _CHUNK: "INSERT INTO item_chunks (batch, size, indices, attempts, durations_us, actions,"
    " outputs, ts) VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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


def _chunk(batch: str, group: list[NodeSucceeded]) -> tuple[Any, ...]:
    """One record for a group of item successes. Each output is the worker's JSON text, joined
    into an array as it is: never decoded or encoded again."""
    size = len(group)
    attempts = [e.attempt for e in group]
    actions = [e.action for e in group]
    return (
        _CHUNK,
        batch,
        size,
        _ints([e.index for e in group]),
        None if attempts.count(1) == size else _ints(attempts),
        _ints([round(e.duration_ms * 1000) for e in group]),
        None if actions.count(None) == size else json.dumps(actions),
        "[" + ",".join([e.output_json for e in group]) + "]",
        group[-1].ts,
    )


def _ints(values: list[Any]) -> str:
    """A JSON array of ints; json.dumps takes longer to start than this takes for a group."""
    return "[" + ",".join(map(str, values)) + "]"


def _weight(records: list[tuple[Any, ...]]) -> int:
    """The items `records` hold, as the backlog counts them: a chunk its items, a marker none."""
    n: int = len(records) + sum([r[_SIZE] - 1 for r in records if r[0] == _CHUNK])
    return n - 1 if records[-1][0] in (_FLUSH, _STOP) else n


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
                self.taken += _weight(records)
                if self.queued - self.taken <= MAX_BACKLOG // 2:
                    self.caught_up.set()
                last = records[-1]  # a marker always ends what _drain takes
                if last[0] == _FLUSH:
                    last[1].set()
                elif last[0] == _STOP:
                    return
        finally:
            self._conn.close()

    def _drain(self) -> list[tuple[Any, ...]]:
        """Block for a record, then take what is already queued (up to COMMIT_MAX_RECORDS or a
        marker) and commit at once. Records group by themselves while a commit is running, so
        a busy run still writes in large transactions, and a record handed over waits at most
        for the backlog ahead of it (see the module docstring for what a `kill -9` loses)."""
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


def _shutdown(writer: _Writer, lock_fd: int, groups: dict[str, list[NodeSucceeded]]) -> None:
    """Hand over the groups, commit what is queued, stop the writer, release the run lock. Kept
    free of the store so that ``weakref.finalize`` can run it when a store was never closed (GC
    or interpreter exit)."""
    try:
        for batch in list(groups):
            writer.queue.put(_chunk(batch, groups.pop(batch)))
    finally:
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
        # Each batch's successes not yet handed to the writer, in the order they came.
        self._groups: dict[str, list[NodeSucceeded]] = {}
        self._finalizer = weakref.finalize(self, _shutdown, self._writer, lock_fd, self._groups)

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
        """Record `event`. Runs in the caller's thread: an item's success joins its batch's
        group; any other record is a small tuple and one queue.put, after the groups."""
        # The hot path of a large batch: kept inline, no helper call per item.
        if type(event) is NodeSucceeded and event.batch is not None and not event.context_updates:
            if event.reused:  # replayed from this very store on --resume: already durable
                return
            if self._closed:
                raise StateError(f"run store {self.db_path} is closed; cannot record {event.event}")
            group = self._groups.get(event.batch)
            if group is None:
                group = self._groups[event.batch] = []
            group.append(event)
            if len(group) >= GROUP_MAX:
                self._hand_over(event.batch)
            return
        encode = _ENCODERS.get(type(event))
        record = None if encode is None else encode(event)
        if record is not None:
            if self._closed:
                raise StateError(f"run store {self.db_path} is closed; cannot record {event.event}")
            if self._groups:  # commit order is record order: groups first
                self.idle()
            self._hand(record, 1)

    def idle(self) -> None:
        """Hand every group to the writer (the bus calls this when the run is about to wait for
        work), so finished items are committed while the run waits."""
        for batch in list(self._groups):
            self._hand_over(batch)

    def _hand_over(self, batch: str) -> None:
        group = self._groups.pop(batch)
        self._hand(_chunk(batch, group), len(group))

    def _hand(self, record: tuple[Any, ...], items: int) -> None:
        writer = self._writer
        if writer.queued + items - writer.taken > MAX_BACKLOG:
            self._wait_for_writer()
        self._put(record)
        writer.queued += items

    def _wait_for_writer(self) -> None:
        """Let the writer catch up to half the backlog (it commits while we wait)."""
        writer = self._writer
        writer.caught_up.clear()
        while writer.queued - writer.taken > MAX_BACKLOG // 2 and writer.thread.is_alive():
            writer.caught_up.wait(0.1)
            writer.caught_up.clear()

    def flush(self) -> None:
        """Block until every record so far (groups included) is committed."""
        if not self._closed:
            self.idle()
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
            # Checked before any pragma: never convert a foreign file.
            version = SCHEMA_VERSION if create is not None else _check_schema(conn, db)
            # WAL + synchronous=NORMAL: a commit is durable once in the WAL file, which a killed
            # process cannot undo; only an OS crash or power loss can drop the last commits.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if create is not None:
                conn.executescript(f"BEGIN; {_SCHEMA} {_CHUNKS_SCHEMA} COMMIT;")
                conn.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("run", create)],
                )
            elif version < 2:
                # A run recorded before chunks existed: its rows read as they always did, and
                # it is resumed with the new table (which a version-1 flowrun would not read).
                conn.executescript(
                    f"BEGIN; {_CHUNKS_SCHEMA} UPDATE meta SET value = '{SCHEMA_VERSION}'"
                    " WHERE key = 'schema_version'; COMMIT;"
                )
        return conn
    except BaseException:
        if conn is not None:
            conn.close()
        os.close(lock_fd)
        raise


def _check_schema(conn: sqlite3.Connection, db: Path) -> int:
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
    return version


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
    _read_chunks(conn, items)
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


def _read_chunks(conn: sqlite3.Connection, items: dict[str, dict[int, StoredNode]]) -> None:
    """Add the chunks' successes to `items`. A success is final (a succeeded item is never run
    again), so it wins over any row of the same item, whatever their order."""
    chunks = conn.execute(
        "SELECT batch, size, indices, attempts, durations_us, actions, outputs FROM item_chunks"
    )
    for batch, size, indices, attempts, durations_us, actions, outputs in chunks:
        stored = items.setdefault(batch, {})
        columns = (
            json.loads(indices),
            [1] * size if attempts is None else json.loads(attempts),
            json.loads(durations_us),
            [None] * size if actions is None else json.loads(actions),
            json.loads(outputs),
        )
        # strict: a damaged chunk is an error (a ValueError, reported as a StateError), never
        # items matched with the wrong outputs.
        for index, attempt, us, action, output in zip(*columns, strict=True):
            stored[index] = StoredNode("succeeded", attempt, us / 1000, output, action, None)
