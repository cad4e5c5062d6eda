"""The durable run store: one SQLite database per run, written by one background thread.

The store is a sink of the event stream; the writer thread owns the connection and commits
records in the order they were handed to it, in groups: a transaction holds what arrived within
``COMMIT_LATENCY_S`` of its first record, up to ``COMMIT_MAX_RECORDS``, and ``flush``/``close``
commit at once. ``RunStore.load``
reads a run back for ``--resume``; ``list_runs`` summarises the runs of a state directory.

Successful batch items are recorded in groups: the sink keeps each batch's successes (up to
``GROUP_MAX``) and hands the writer one ``item_chunks`` row per group, its outputs the workers'
JSON texts joined into one array. A group is handed over when it is full, when the run is about
to wait for work (``idle``), before any other record, and on ``flush``/``close``. Failed items,
items that set context keys, and task nodes keep one ``nodes`` row each. A success is final (a
succeeded item is never run again), so ``load`` lets a chunk's success win over any row.

What a ``kill -9`` can lose: per batch, the successes not yet handed over (fewer than
``GROUP_MAX``; none once the run has waited for work), plus what the writer holds uncommitted
(what was handed over in the last ``COMMIT_LATENCY_S`` and during the commit running then, and
``MAX_BACKLOG`` items at most, counting a chunk as its items), plus what was running. A
committed record is never lost; what is lost is re-run by ``--resume``.

This module records; its neighbours in the package hold the rest: ``store.db`` the run
directory, database file, schema and lock, ``store.records`` the records and their SQL,
``store.timeline`` spans and batch concurrency, ``store.read`` reading runs back. Every public
name is importable from ``flowrun.store``.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection
from contextlib import suppress
from dataclasses import asdict
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowrun.errors import StateError
from flowrun.events import (
    BatchFinished,
    BatchStarted,
    Event,
    ItemsStarted,
    ItemsSucceeded,
    NodeFailed,
    NodeRecovered,
    NodeRetry,
    NodeSkipped,
    NodeStarted,
    NodeSucceeded,
    RunFinished,
    RunStarted,
)
from flowrun.store.db import (
    DB_NAME,
    LOCK_NAME,
    SCHEMA_VERSION,
    checked_id,
    lock_run,
    prepared,
    runs_dir,
)
from flowrun.store.records import (
    ENCODERS,
    FLUSH,
    SQL,
    STOP,
    RunMeta,
    by_table,
    chunk_record,
    logs_record,
    weight,
)
from flowrun.store.timeline import Timeline

if TYPE_CHECKING:
    from flowrun.store.read import StoredRun

__all__ = [
    "COMMIT_LATENCY_S",
    "COMMIT_MAX_RECORDS",
    "DB_NAME",
    "GROUP_MAX",
    "LOCK_NAME",
    "MAX_BACKLOG",
    "SCHEMA_VERSION",
    "RunMeta",
    "RunStore",
    "new_run_id",
]

COMMIT_MAX_RECORDS = 1000  # records per transaction, at most
# How long a record waits for others to join its transaction, at most: the writer commits a
# group when it is COMMIT_MAX_RECORDS records, when this much time has passed since its first
# record, or at once on flush/close. One transaction per task node cost the run the GIL for a
# commit and a thread wake-up each; a 2,000-node DAG spent more time recording than running.
COMMIT_LATENCY_S = 0.05
# Items handed to the writer but not yet committed, at most (a chunk counts as its items): past
# it the run waits for the writer. Without it a fast batch outruns the writer (it gets little of
# the GIL), memory grows with the batch, and a kill -9 would lose most finished items.
MAX_BACKLOG = 10_000
# Successful items of one batch recorded as one chunk row, at most. Binding and inserting a row
# costs the writer a few µs of the GIL whatever its size, taken from the run: one row per item
# made a no-op batch ~1.4x slower than not recording it. A group of 256 makes that cost per item
# small, and a kill -9 loses at most a group more.
GROUP_MAX = 256


def new_run_id(now: float | None = None) -> str:
    """A run id sortable by start time and unique enough: ``20261128-055533-3f9a`` (UTC)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    # What secrets.token_hex(2) returns, without importing secrets (and random, hmac with it).
    return f"{stamp}-{os.urandom(2).hex()}"


class _Writer:
    """The thread that owns the run's connection: drains the queue, commits in groups."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        name: str,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> None:
        self.queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.failure: Exception | None = None
        # Backpressure: the recording thread counts what it queued, this thread what it took;
        # each counter has one writer, so no lock is needed to read the gap.
        self.queued = 0
        self.taken = 0
        self.caught_up = threading.Event()
        # Set by the recording thread to end the wait for a group at once: a marker was
        # queued, or the backlog is large enough for a full transaction.
        self.wake = threading.Event()
        # Set (with `wake`) by a recording thread that waits for the backlog to shrink: the
        # group ends with what is queued, whatever its number of records (a chunk row holds
        # many items, so the backlog can be full long before COMMIT_MAX_RECORDS records).
        self.hurry = False
        self._conn = conn
        self._on_failure = on_failure
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
                self.taken += weight(records)
                if self.queued - self.taken <= MAX_BACKLOG // 2:
                    self.caught_up.set()
                last = records[-1]  # a marker always ends what _drain takes
                if last[0] == FLUSH:
                    last[1].set()
                elif last[0] == STOP:
                    return
        finally:
            self._conn.close()

    def _drain(self) -> list[tuple[Any, ...]]:
        """Block for a record, then gather a group: what is queued and what comes within
        COMMIT_LATENCY_S of the first record, up to COMMIT_MAX_RECORDS or a marker (which ends
        the group at once). So records arriving one at a time (task nodes, a subflow's child
        nodes) share a transaction, and a record waits at most COMMIT_LATENCY_S plus the
        commit ahead of it (see the module docstring for what a `kill -9` loses)."""
        get, wake = self.queue.get, self.wake
        records = [get()]
        if records[0][0] in (FLUSH, STOP):
            return records
        deadline = time.monotonic() + COMMIT_LATENCY_S
        while True:
            wake.clear()  # before taking: a record queued after this sets it again
            while len(records) < COMMIT_MAX_RECORDS:
                try:
                    records.append(get(block=False))
                except queue.Empty:
                    break
                if records[-1][0] in (FLUSH, STOP):
                    return records
            left = deadline - time.monotonic()
            if len(records) >= COMMIT_MAX_RECORDS or left <= 0 or self.hurry:
                self.hurry = False
                return records
            # A put does not wake this wait (only `wake` does): a busy run is not slowed by a
            # thread switch per record.
            wake.wait(left)

    def _commit(self, records: list[tuple[Any, ...]]) -> None:
        try:
            self._conn.execute("BEGIN")
            # Runs of consecutive same-kind records, each table's in the recorded order.
            for kind, group in groupby(by_table(records), itemgetter(0)):
                if kind in SQL:
                    self._conn.executemany(SQL[kind], group)
            self._conn.execute("COMMIT")
        except Exception as exc:  # told to the run at once, raised by flush() and close()
            self.failure = exc
            with suppress(sqlite3.Error):
                self._conn.rollback()
            if self._on_failure is not None:
                self._on_failure(exc)


def _shutdown(writer: _Writer, lock_fd: int, groups: dict[str, list[Succeeded]]) -> None:
    """Hand over the groups, commit what is queued, stop the writer, release the run lock. Kept
    free of the store so that ``weakref.finalize`` can run it when a store was never closed (GC
    or interpreter exit)."""
    try:
        for batch in list(groups):
            writer.queue.put(chunk_record(batch, groups.pop(batch)))
    finally:
        writer.queue.put((STOP,))
        writer.wake.set()
        writer.thread.join()
        os.close(lock_fd)


Succeeded = NodeSucceeded | ItemsSucceeded
#: the events the store records something for (the bus hands it no others)
_RECORDED = (RunStarted, RunFinished, NodeStarted, NodeSucceeded, NodeFailed, NodeRetry,
             NodeSkipped, NodeRecovered, BatchStarted, BatchFinished)  # fmt: skip


class RunStore:
    """One run's durable state, open for recording. Also the event sink: ``store(event)``.

    Get one with `create` or `open`; ``close()`` it (or use ``with``) to commit the last records
    and release the run lock.

    A record that cannot be written (a full disk, a read-only file system) stops the recording:
    what was committed stays, nothing more is written, and `on_failure` is called at once (on
    the writer's thread) with the exception, so the run can stop starting work; ``flush()`` and
    ``close()`` raise it as a `StateError`.
    """

    def __init__(
        self,
        meta: RunMeta,
        run_dir: Path,
        conn: sqlite3.Connection,
        lock_fd: int,
        on_failure: Callable[[Exception], None] | None = None,
    ):
        self.meta = meta
        self.run_id = meta.run_id
        self.run_dir = run_dir
        self.db_path = run_dir / DB_NAME
        self._closed = False
        self._writer = _Writer(conn, f"flowrun-store-{meta.run_id}", on_failure)
        self._put = self._writer.queue.put
        # Each batch's successes not yet handed to the writer, in the order they came, and
        # how many items they hold.
        self._groups: dict[str, list[Succeeded]] = {}
        self._sizes: dict[str, int] = {}
        #: event type -> handler; the bus calls these directly (`events.Bus`)
        self.handlers: dict[type[Event], Callable[[Any], None]] = dict.fromkeys(
            _RECORDED, self.__call__
        )
        self.handlers[ItemsStarted] = self._items_started
        self.handlers[NodeStarted] = self._started
        self.handlers[ItemsSucceeded] = self._items_succeeded
        self._timeline = Timeline()
        self._finalizer = weakref.finalize(self, _shutdown, self._writer, lock_fd, self._groups)

    @classmethod
    def create(
        cls,
        state_dir: Path,
        meta: RunMeta,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> RunStore:
        """Make ``<state_dir>/runs/<run_id>/`` and its database, and lock it for recording."""
        try:
            row = json.dumps(asdict(meta), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StateError(f"run {meta.run_id!r}: context or options not JSON: {exc}") from exc
        run_dir = runs_dir(state_dir) / checked_id(meta.run_id)
        # Built under a hidden name and renamed when its schema and description are
        # committed: a kill in the first milliseconds never leaves a run without them.
        building = run_dir.with_name(f".new-{meta.run_id}")
        try:
            # Owner only, whatever the umask: outputs and --set values (secrets) live here.
            # A directory that already exists keeps the mode its owner gave it.
            Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
            run_dir.parent.mkdir(mode=0o700, exist_ok=True)
            if run_dir.exists():
                raise FileExistsError(run_dir)
            building.mkdir(mode=0o700)
            # SQLite gives the -wal and -shm files the mode of the database file.
            os.close(os.open(building / DB_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise StateError(f"run {meta.run_id!r} already exists in {run_dir}") from None
        except OSError as exc:
            raise StateError(f"cannot create run directory {run_dir}: {exc}") from exc
        lock_fd = lock_run(building, meta.run_id)  # the lock stays with the file when renamed
        spare = os.dup(lock_fd)  # `prepared` closes the fd it gets if it fails
        try:
            prepared(building / DB_NAME, spare, create=row).close()
        except BaseException:
            os.close(lock_fd)
            raise
        os.close(spare)
        try:
            building.rename(run_dir)
        except OSError as exc:
            os.close(lock_fd)
            raise StateError(f"cannot create run directory {run_dir}: {exc}") from exc
        conn = prepared(run_dir / DB_NAME, lock_fd, create=None)
        return cls(meta, run_dir, conn, lock_fd, on_failure)

    @classmethod
    def open(
        cls,
        state_dir: Path,
        run_id: str,
        blueprint_id: str | None = None,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> RunStore:
        """Open an existing run to record more. ``latest`` is the most recently started run
        (of `blueprint_id`, when given)."""
        from flowrun.store.read import read_meta, resolve_run_dir  # a new run needs neither

        run_dir = resolve_run_dir(state_dir, run_id, blueprint_id)
        db = run_dir / DB_NAME
        if not db.is_file():
            raise StateError(f"{run_dir} is not a flowrun run directory (no {DB_NAME})")
        lock_fd = lock_run(run_dir, run_dir.name)
        conn = prepared(db, lock_fd, create=None)
        try:
            meta = read_meta(conn, db)
        except StateError:
            conn.close()
            os.close(lock_fd)
            raise
        return cls(meta, run_dir, conn, lock_fd, on_failure)

    def __call__(self, event: Event) -> None:
        """Record `event`. Runs in the caller's thread: an item's success joins its batch's
        group; any other record is a small tuple and one queue.put, after the groups."""
        # The hot path of a large batch: kept inline, one helper call per item.
        if (
            type(event) is NodeSucceeded
            and event.batch is not None
            and not event.context_updates
            and not event.logs
        ):
            if event.reused:  # replayed from this very store on --resume: already durable
                return
            if self._closed:
                raise StateError(f"run store {self.db_path} is closed; cannot record {event.event}")
            self._timeline.item_ended(event.batch, event.ts)
            self._join(event.batch, event, 1)
            return
        if type(event) is NodeSucceeded and event.batch is None and not event.reused:
            self._node_succeeded(event)  # a task node: most of a DAG's records
            return
        if type(event) is ItemsSucceeded:
            self._items_succeeded(event)
            return
        if type(event) is ItemsStarted:
            self._items_started(event)
            return
        if type(event) is NodeStarted:
            self._started(event)
            return
        encode = ENCODERS.get(type(event))
        record = None if encode is None else encode(event)
        records = [] if record is None else [record]
        if isinstance(event, NodeSucceeded | NodeFailed | NodeRetry) and event.logs:
            records.append(logs_record(event))
        records += self._timeline.records(event)
        if records:
            if self._closed:
                raise StateError(f"run store {self.db_path} is closed; cannot record {event.event}")
            if self._groups:  # commit order is record order: groups first
                self.idle()
            for rec in records:
                self._hand(rec, 1)

    def _node_succeeded(self, event: NodeSucceeded) -> None:
        """A task node's success: its row, what it printed, and its span, as for any event."""
        record = ENCODERS[NodeSucceeded](event)
        assert record is not None  # only a reused node's success records nothing
        span = self._timeline.node_span(event.node, event.ts, "succeeded", event.duration_ms)
        if self._closed:
            raise StateError(f"run store {self.db_path} is closed; cannot record {event.event}")
        if self._groups:  # commit order is record order: groups first
            self.idle()
        self._hand(record, 1)
        if event.logs:
            self._hand(logs_record(event), 1)
        self._hand(span, 1)

    def _started(self, event: NodeStarted) -> None:
        self._timeline.started(event.node, event.batch, event.ts)

    def _items_started(self, event: ItemsStarted) -> None:
        self._timeline.started_items(event.batch, event.ts, len(event.indices))

    def _items_succeeded(self, event: ItemsSucceeded) -> None:
        """A chunk's successes join their batch's group as they are (one entry)."""
        if self._closed:
            raise StateError(f"run store {self.db_path} is closed; cannot record {event.event}")
        self._timeline.items_ended(event.batch, event.ts, len(event.indices))
        self._join(event.batch, event, len(event.indices))

    def _join(self, batch: str, event: Succeeded, items: int) -> None:
        group = self._groups.get(batch)
        if group is None:
            group = self._groups[batch] = []
            self._sizes[batch] = 0
        group.append(event)
        size = self._sizes[batch] = self._sizes[batch] + items
        if size >= GROUP_MAX:
            self._hand_over(batch)

    def idle(self) -> None:
        """Hand every group to the writer (the bus calls this when the run is about to wait for
        work), so finished items are committed while the run waits."""
        for batch in list(self._groups):
            self._hand_over(batch)

    def _hand_over(self, batch: str) -> None:
        group = self._groups.pop(batch)
        self._hand(chunk_record(batch, group), self._sizes.pop(batch))

    def _hand(self, record: tuple[Any, ...], items: int) -> None:
        writer = self._writer
        if writer.queued + items - writer.taken > MAX_BACKLOG:
            self._wait_for_writer()
        self._put(record)
        writer.queued += items
        if writer.queued - writer.taken >= COMMIT_MAX_RECORDS and not writer.wake.is_set():
            writer.wake.set()  # a full transaction is waiting: no need to wait for more

    def _wait_for_writer(self) -> None:
        """Let the writer catch up to half the backlog (it commits while we wait)."""
        writer = self._writer
        writer.caught_up.clear()
        writer.hurry = True
        writer.wake.set()
        while writer.queued - writer.taken > MAX_BACKLOG // 2 and writer.thread.is_alive():
            writer.caught_up.wait(0.1)
            writer.caught_up.clear()

    def flush(self) -> None:
        """Block until every record so far (groups included) is committed."""
        if not self._closed:
            self.idle()
            done = threading.Event()
            self._put((FLUSH, done))
            self._writer.wake.set()
            done.wait()
        self._raise_failure()

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the database, release the lock."""
        if not self._closed:
            for rec in self._timeline.unfinished(time.time()):
                self._hand(rec, 1)
            self._closed = True
            self._finalizer()
            self._raise_failure()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def load(self, lean: Collection[str] = ()) -> StoredRun:
        """Everything recorded so far (flushes first), decoded with ``json.loads``; the batches
        in `lean` without their items' outputs until asked (`read.LeanItems`)."""
        self.flush()
        from flowrun.store.read import load_run

        return load_run(self.db_path, self.meta, lean)

    @property
    def failure(self) -> StateError | None:
        """Why recording stopped, or None while every record so far was written."""
        failure = self._writer.failure
        if failure is None:
            return None
        error = StateError(f"cannot record run state in {self.db_path}: {failure}")
        error.__cause__ = failure
        return error

    def _raise_failure(self) -> None:
        error = self.failure
        if error is not None:
            raise error
