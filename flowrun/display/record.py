"""Run bookkeeping for the progress displays: `RunRecord` and the records it keeps.

`RunRecord` turns the event stream into counters, a dict of running nodes and per-node
records. It is the only state the displays read: the live view (`progress.py`) renders it
from rich's refresh thread, and every mode prints its summary from it. Item events are the
hot path, so an item event costs a few dict operations and integer increments, a chunk of
items (`ItemsStarted`/`ItemsSucceeded`) that runs and succeeds whole costs O(1) whatever its
size, and items get no per-item record unless they fail.

Rows shared by the rich and the plain summary are built here as plain strings
(`summary_rows`, `final_line`) so both modes say the same thing.

It is separate from the sinks (`display.plain`, `display.live`) because it knows nothing of
consoles or rendering: plain Python over the events, testable without rich.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import field
from itertools import repeat
from typing import Any, NamedTuple

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
    PoolWaiting,
    RunCancelling,
    RunFinished,
    RunStarted,
)
from flowrun.frozen import Mutable, fast_mutable

#: item failures per batch whose traceback is kept for the summary; a batch of a million
#: failing items must not keep (or print) a million tracebacks
MAX_ITEM_TRACEBACKS = 20

Handler = Callable[[Any], None]
Clock = Callable[[], float]


@fast_mutable
class NodeRecord(Mutable):
    """What the summary knows about one task node, or one failed batch item."""

    node: str
    status: str = "running"
    attempts: int = 0
    duration_ms: float | None = None
    error: str = ""  # "ValueError: boom"
    traceback: str = ""
    fallback: str = ""
    reused: bool = False  # taken from an earlier run (--resume), not run again
    logs: str = ""  # what the failed attempt printed


@fast_mutable
class BatchRecord(Mutable):
    """Counters of one batch; the driver thread writes them, the render thread reads them."""

    node: str
    total: int = 0
    resumed: int = 0  # items finished before this run (resume)
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    status: str = "running"
    started_at: float = 0.0
    finished_at: float | None = None
    failures: list[NodeRecord] = field(default_factory=list)  # at most MAX_ITEM_TRACEBACKS
    omitted: int = 0  # failed items whose traceback was not kept
    waiting: str = ""  # "waiting on pool api: 10/s" once its items waited on a pool's rate
    #: items announced by the chunk (`ItemsStarted`) and running: a chunk's first index ->
    #: (its indices, start time), kept whole while the chunk settles whole (the usual case),
    #: so a chunk costs the record O(1); the render thread reads it via `.copy()`
    chunks: dict[int, tuple[Sequence[int], float]] = field(default_factory=dict)
    #: items of chunks that settled in parts: index -> start time (read via `.copy()`)
    running: dict[int, float] = field(default_factory=dict)
    chunked: int = 0  # items in `chunks`

    @property
    def active(self) -> int:
        """Items of chunks still running (items announced one by one are not counted)."""
        return self.chunked + len(self.running)

    def split_chunks(self) -> None:
        """Keep the running chunks' items one by one (a chunk settles in parts)."""
        chunks, self.chunks = self.chunks, {}
        for indices, since in chunks.values():
            self.running.update(zip(indices, repeat(since)))
        self.chunked = 0

    @property
    def done(self) -> int:
        return self.resumed + self.succeeded + self.failed


class SummaryRow(NamedTuple):
    node: str
    status: str
    attempts: str
    duration: str
    notes: str


class RunRecord:
    """Everything the displays know, recorded from the events in O(1) per event."""

    def __init__(self, get_time: Clock) -> None:
        self.now = get_time
        self.started: RunStarted | None = None
        self.finished: RunFinished | None = None
        self.started_at = 0.0
        self.finished_at: float | None = None
        self.nodes: dict[str, NodeRecord] = {}
        self.batches: dict[str, BatchRecord] = {}
        #: node -> (batch or None, start time); the render thread reads it via `.copy()`
        self.running: dict[str, tuple[str | None, float]] = {}
        self.settled: set[str] = set()  # task nodes and batches that reached a final status
        self.failures: list[NodeRecord] = []  # in event order: nodes and kept items
        #: failed item -> its batch, so a later NodeRecovered (which names no batch) finds it
        self.failed_items: dict[str, str] = {}
        #: task node -> (failed attempt, attempts allowed, when the retry is due); the render
        #: thread reads it via `.copy()`
        self.retrying: dict[str, tuple[int, int, float]] = {}
        self.cancelling: tuple[float, int, float] | None = None  # grace, running, since
        self.any_failed = False  # a node or batch failed for good (recovered or not)
        self.handlers: dict[type[Event], Handler] = {
            RunStarted: self.on_run_started,
            RunCancelling: self.on_cancelling,
            NodeStarted: self.on_started,
            NodeSucceeded: self.on_succeeded,
            ItemsStarted: self.on_items_started,
            ItemsSucceeded: self.on_items_succeeded,
            NodeFailed: self.on_failed,
            NodeRetry: self.on_retry,
            NodeSkipped: self.on_skipped,
            NodeRecovered: self.on_recovered,
            BatchStarted: self.on_batch_started,
            BatchFinished: self.on_batch_finished,
            PoolWaiting: self.on_pool_waiting,
            RunFinished: self.on_run_finished,
        }

    @property
    def total(self) -> int:
        """Task nodes and batches in the run (never fewer than have settled)."""
        return max(self.started.nodes if self.started else 0, len(self.settled))

    def batch(self, name: str) -> BatchRecord:
        found = self.batches.get(name)
        if found is None:  # an item before its BatchStarted: count it anyway
            found = self.batches[name] = BatchRecord(name, started_at=self.now())
        return found

    def node(self, name: str) -> NodeRecord:
        found = self.nodes.get(name)
        if found is None:
            found = self.nodes[name] = NodeRecord(name)
        return found

    def on_run_started(self, e: RunStarted) -> None:
        self.started_at = self.now()  # before `started`: the render thread checks that one
        self.started = e

    def on_cancelling(self, e: RunCancelling) -> None:
        self.cancelling = (e.grace_s, e.running, self.now())

    def on_run_finished(self, e: RunFinished) -> None:
        self.finished, self.finished_at = e, self.now()

    def on_started(self, e: NodeStarted) -> None:
        self.running[e.node] = (e.batch, self.now())
        if e.batch is None and not is_child(e.node):
            rec = self.node(e.node)
            rec.status, rec.attempts = "running", e.attempt
            self.retrying.pop(e.node, None)

    def on_succeeded(self, e: NodeSucceeded) -> None:
        self.running.pop(e.node, None)
        self._item_ended(e.batch, e.index)
        if is_child(e.node) and e.batch is None:
            return  # a subflow's child node: its subflow's row says how it went
        if e.batch is not None:
            (self.batches.get(e.batch) or self.batch(e.batch)).succeeded += 1
            return
        rec = self.node(e.node)
        rec.status, rec.attempts, rec.reused = "succeeded", e.attempt, e.reused
        rec.error = ""  # a retried attempt's error is history once the node succeeded
        self.retrying.pop(e.node, None)
        rec.duration_ms = None if e.reused else e.duration_ms
        self.settled.add(e.node)

    def on_items_started(self, e: ItemsStarted) -> None:
        if not e.indices:
            return
        batch = self.batches.get(e.batch) or self.batch(e.batch)
        if e.indices[0] in batch.chunks:  # not seen from the engine; keep both anyway
            batch.split_chunks()
        batch.chunks[e.indices[0]] = (e.indices, self.now())
        batch.chunked += len(e.indices)

    def on_items_succeeded(self, e: ItemsSucceeded) -> None:
        batch = self.batches.get(e.batch) or self.batch(e.batch)
        indices = e.indices
        batch.succeeded += len(indices)
        if not indices:
            return
        whole = batch.chunks.get(indices[0])
        if whole is not None and (whole[0] is indices or whole[0] == indices):
            del batch.chunks[indices[0]]  # the whole chunk succeeded: O(1)
            batch.chunked -= len(indices)
            return
        if batch.chunks:
            batch.split_chunks()
        deque(map(batch.running.pop, indices, repeat(None)), maxlen=0)  # the loop runs in C

    def _item_ended(self, batch: str | None, index: int | None) -> None:
        """An item (or loop iteration) stopped running: drop it if a chunk announced it."""
        if batch is not None and index is not None:
            found = self.batches.get(batch)
            if found is not None and (found.chunks or found.running):
                if index not in found.running and found.chunks:
                    found.split_chunks()
                found.running.pop(index, None)

    def running_count(self) -> int:
        """Nodes and items running now."""
        return len(self.running) + sum(b.active for b in self.batches.copy().values())

    def on_failed(self, e: NodeFailed) -> None:
        self.running.pop(e.node, None)
        self._item_ended(e.batch, e.index)
        rec = NodeRecord(e.node, "failed", e.attempt, e.duration_ms)
        rec.error, rec.traceback = error_line(e.error_type, e.message), e.traceback
        rec.logs = e.logs
        self.any_failed = True
        if e.batch is None:
            self.retrying.pop(e.node, None)
            if not is_child(e.node):
                self.nodes[e.node] = rec
                self.settled.add(e.node)
            self.failures.append(rec)
            return
        batch = self.batch(e.batch)
        batch.failed += 1
        self.failed_items[e.node] = e.batch
        if len(batch.failures) < MAX_ITEM_TRACEBACKS:
            batch.failures.append(rec)
            self.failures.append(rec)
        else:
            batch.omitted += 1

    def on_retry(self, e: NodeRetry) -> None:
        self.running.pop(e.node, None)
        self._item_ended(e.batch, e.index)
        if e.batch is not None:
            self.batch(e.batch).retries += 1
        elif not is_child(e.node):
            rec = self.node(e.node)
            rec.status, rec.attempts = "retrying", e.attempt
            rec.error = error_line(e.error_type, e.message)
            self.retrying[e.node] = (e.attempt, e.attempts, self.now() + e.delay_s)

    def on_skipped(self, e: NodeSkipped) -> None:
        if is_child(e.node):
            return
        self.node(e.node).status = "skipped"
        self.settled.add(e.node)

    def on_recovered(self, e: NodeRecovered) -> None:
        name = self.failed_items.pop(e.node, None)
        if name is None:
            rec = self.node(e.node)
            rec.status, rec.fallback = "recovered", e.fallback
            self.settled.add(e.node)
            return
        batch = self.batch(name)  # the fallback's output fills the item's slot
        batch.failed, batch.succeeded = batch.failed - 1, batch.succeeded + 1
        kept = next((rec for rec in batch.failures if rec.node == e.node), None)
        if kept is None:
            batch.omitted -= 1
        else:
            kept.status, kept.fallback = "recovered", e.fallback

    def on_batch_started(self, e: BatchStarted) -> None:
        batch = self.batch(e.node)
        batch.total, batch.resumed, batch.started_at = e.total, e.done, self.now()

    def on_pool_waiting(self, e: PoolWaiting) -> None:
        if e.node in self.batches:
            self.batches[e.node].waiting = pool_text(e)

    def on_batch_finished(self, e: BatchFinished) -> None:
        batch = self.batch(e.node)
        # the event's counts are authoritative (they include items resumed from a prior run)
        batch.total, batch.succeeded, batch.failed = e.total, e.succeeded, e.failed
        batch.resumed = 0
        batch.status, batch.finished_at = e.status, self.now()
        # what was still announced as running (a cancelled run) is over
        batch.chunks, batch.running, batch.chunked = {}, {}, 0
        self.settled.add(e.node)

    def node_ids(self) -> list[str]:
        """Task nodes and batches: blueprint order first, then any others seen."""
        ids = dict.fromkeys(self.started.node_ids if self.started else ())
        ids.update(dict.fromkeys(self.nodes))
        ids.update(dict.fromkeys(self.batches))
        return list(ids)

    def summary_rows(self) -> list[SummaryRow]:
        """One row per task node and per batch, for the summary table."""
        return [self._row(node) for node in self.node_ids()]

    def _row(self, node: str) -> SummaryRow:
        batch = self.batches.get(node)
        if batch is not None:
            end = batch.finished_at if batch.finished_at is not None else self.now()
            notes = (
                f"{batch.failed} failed of {batch.total}"
                if batch.failed
                else f"{batch.done}/{batch.total} items"
            )
            status = "pending" if batch.status == "running" else batch.status
            return SummaryRow(node, status, "", fmt_seconds(end - batch.started_at), notes)
        rec = self.nodes.get(node)
        if rec is None:
            return SummaryRow(node, "pending", "", "", "")
        status = "pending" if rec.status in ("running", "retrying") else rec.status
        duration = "" if rec.duration_ms is None else fmt_ms(rec.duration_ms)
        notes = f"fallback {rec.fallback}" if rec.fallback else rec.error
        notes = "reused from an earlier run" if rec.reused else notes
        return SummaryRow(node, status, str(rec.attempts or ""), duration, notes)

    def final_line(self, rows: list[SummaryRow]) -> str:
        """`run batch-workflow completed in 1.23 s — 3 succeeded, 0 failed, 0 skipped`."""
        counts = {s: sum(r.status == s for r in rows) for s in _STATUSES}
        parts = [f"{counts[s]} {s}" for s in _STATUSES if counts[s] or s in _ALWAYS]
        name = self.started.blueprint if self.started else ""
        if self.finished is not None:
            status, seconds = self.finished.status, self.finished.duration_ms / 1000
        else:
            status, seconds = "stopped", self.now() - self.started_at
        head = " ".join(p for p in ("run", name, status) if p)
        return f"{head} in {fmt_seconds(seconds)} — {', '.join(parts)}"

    def reported_failures(self, *, include_recovered: bool = True) -> Iterator[NodeRecord]:
        """Failures whose traceback the summary prints, each once."""
        for rec in self.failures:
            if include_recovered or rec.status != "recovered":
                yield rec

    def omitted_tracebacks(self) -> Iterator[tuple[str, int]]:
        """(batch, count) of failed items whose traceback was not kept."""
        for batch in self.batches.values():
            if batch.omitted > 0:
                yield batch.node, batch.omitted


_STATUSES = ("succeeded", "failed", "skipped", "recovered", "pending")
_ALWAYS = frozenset({"succeeded", "failed", "skipped"})


_CHILD = re.compile(r"[A-Za-z0-9_.-]+(\[\d+\]|#\d+)?/")


_ITEM_CHILD = re.compile(r"[A-Za-z0-9_.-]+(\[\d+\]|#\d+)/")


def is_item_child(node: str) -> bool:
    """Is `node` inside the subflow of a batch item (`batch[3]/child`) or of a loop's iteration
    (`poll#2/child`)?"""
    return ("]/" in node or "#" in node) and _ITEM_CHILD.match(node) is not None


def is_child(node: str) -> bool:
    """Is `node` a node of a subflow's child run (`parent/child`, `batch[3]/child`)?"""
    return "/" in node and _CHILD.match(node) is not None


def pool_text(e: PoolWaiting) -> str:
    return f"waiting on pool {e.pool}: {e.rate}"


def error_line(error_type: str, message: str) -> str:
    """`ValueError: boom` on one line (the traceback keeps the full message)."""
    lines = message.strip().splitlines()
    if not lines:
        return error_type
    return f"{error_type}: {lines[0]}" + (" …" if len(lines) > 1 else "")


def fmt_ms(ms: float) -> str:
    """`0.4 ms`, `12.0 ms`, then seconds."""
    return f"{ms:.1f} ms" if ms < 1000 else fmt_seconds(ms / 1000)


def fmt_seconds(seconds: float) -> str:
    """`1.23 s`, `2m 03s`, `1h 02m 03s`."""
    if seconds < 60:
        return f"{max(seconds, 0.0):.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
