"""When things ran, for `runs show --html`: task and batch spans, and each batch's concurrency.

A span is one record per task node or batch when it settles (first start to end). A batch's
concurrency is kept as the peak number of items running in each `step` seconds since the
batch started; past `MAX_SAMPLES` buckets, neighbours are merged and the step doubles, so a
batch of any size or length keeps a few thousand ints at most. The per-item cost is an add and
two comparisons.
"""

from __future__ import annotations

import json
from typing import Any

from flowrun.events import BatchFinished, BatchStarted, Event, NodeFailed, NodeRetry, NodeSucceeded
from flowrun.store.records import SAMPLES, SPAN

MAX_SAMPLES = 2000
FIRST_STEP_S = 0.01


class Concurrency:
    """Items of one batch running over time, as peaks per bucket."""

    __slots__ = ("end", "peaks", "running", "start", "step")

    def __init__(self, start: float) -> None:
        self.start = start
        self.step = FIRST_STEP_S
        self.end = start + self.step  # end of the current bucket
        self.peaks = [0]
        self.running = 0

    def change(self, ts: float, delta: int) -> None:
        if ts >= self.end:
            self._advance(ts)
        self.running += delta
        if self.running > self.peaks[-1]:
            self.peaks[-1] = self.running

    def _advance(self, ts: float) -> None:
        peaks = self.peaks
        while ts >= self.end:
            peaks.append(self.running)
            self.end += self.step
            if len(peaks) > MAX_SAMPLES:
                # merge pairs: half the buckets, twice as long each
                self.peaks = peaks = [max(peaks[i : i + 2]) for i in range(0, len(peaks), 2)]
                self.step *= 2
                self.end = self.start + self.step * len(peaks)

    def record(self, batch: str) -> tuple[Any, ...]:
        return (SAMPLES, batch, self.start, self.step, json.dumps(self.peaks))


class Timeline:
    """Turns the events the store sees into span and sample records."""

    __slots__ = ("batches", "starts")

    def __init__(self) -> None:
        self.starts: dict[str, float] = {}
        self.batches: dict[str, Concurrency] = {}

    def started(self, node: str, batch: str | None, ts: float) -> None:
        if batch is None:
            self.starts.setdefault(node, ts)  # a retry keeps the first attempt's start
            return
        conc = self.batches.get(batch)
        if conc is None:
            conc = self.batches[batch] = Concurrency(ts)
        # Concurrency.change, inline: this runs once per item
        if ts >= conc.end:
            conc._advance(ts)
        conc.running += 1
        if conc.running > conc.peaks[-1]:
            conc.peaks[-1] = conc.running

    def started_items(self, batch: str, ts: float, n: int) -> None:
        """`n` items of `batch` started at `ts` (a chunk)."""
        conc = self.batches.get(batch)
        if conc is None:
            conc = self.batches[batch] = Concurrency(ts)
        conc.change(ts, n)

    def items_ended(self, batch: str, ts: float, n: int) -> None:
        conc = self.batches.get(batch)
        if conc is not None:
            conc.change(ts, -n)

    def item_ended(self, batch: str, ts: float) -> None:
        conc = self.batches.get(batch)
        if conc is not None:
            if ts >= conc.end:
                conc._advance(ts)
            conc.running -= 1

    def records(self, event: Event) -> list[tuple[Any, ...]]:
        """The records a settling event adds (none for the others)."""
        cls = type(event)
        if cls is BatchStarted:
            assert isinstance(event, BatchStarted)
            self.starts[event.node] = event.ts
            self.batches.setdefault(event.node, Concurrency(event.ts))
            return []
        if cls is BatchFinished:
            assert isinstance(event, BatchFinished)
            out = [self._span(event.node, event.ts, event.status)]
            conc = self.batches.pop(event.node, None)
            if conc is not None:
                conc.change(event.ts, 0)
                out.append(conc.record(event.node))
            return out
        if isinstance(event, NodeRetry):
            if event.batch is not None:
                self.item_ended(event.batch, event.ts)
            return []
        if isinstance(event, NodeSucceeded | NodeFailed):
            if event.batch is not None:
                self.item_ended(event.batch, event.ts)
                return []
            if isinstance(event, NodeSucceeded) and event.reused:
                return []
            status = "succeeded" if isinstance(event, NodeSucceeded) else "failed"
            return [self._span(event.node, event.ts, status, event.duration_ms)]
        return []

    def node_span(self, node: str, ts: float, status: str, ms: float) -> tuple[Any, ...]:
        """The span record of task node `node`, settled at `ts` (what `records` gives for
        its success)."""
        return self._span(node, ts, status, ms)

    def _span(self, node: str, ts: float, status: str, ms: float = 0.0) -> tuple[Any, ...]:
        start = self.starts.pop(node, ts - ms / 1000)
        return (SPAN, node, start, ts, status)

    def unfinished(self, now: float) -> list[tuple[Any, ...]]:
        """Spans and samples of what had not settled when the store closed."""
        out = [(SPAN, node, start, None, "pending") for node, start in self.starts.items()]
        out += [conc.record(batch) for batch, conc in self.batches.items()]
        self.starts.clear()
        self.batches.clear()
        return out
