"""Pools (`pools:`): concurrency caps and start rates shared by the nodes that name them.

Every submission is gated here, on top of `--concurrency`: `room(node)` says how many calls of
blueprint node `node` may start now, `started`/`finished` count them in and out. A rate is a
token bucket (`rate` tokens a second, holding at most `burst`, full at the start; see
`Bucket`) on the driver's clock: nothing sleeps. A pool out of tokens records when its next
token comes, and the driver's loop takes `wake_at()` as one of its deadlines, so waiting on
a rate never holds a worker thread. The first time a node waits on a rate, `PoolWaiting`
says so (the displays show it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import field

from flowrun import events as ev
from flowrun.frozen import Mutable, fast_mutable
from flowrun.model import Graph, PoolSpec

UNLIMITED = 1 << 30
_EPS = 1e-9  # float slack: a token due now is not due "in 1e-16 s"
LATE_TOKENS = 0.5  # how late (in token intervals) a waiting start may come and keep the schedule


@fast_mutable
class Bucket(Mutable):
    """One pool's state: calls running, and (for a rate) when its next start is due.

    The rate is kept as the time the next start is due (`due`, the generic cell rate
    algorithm's theoretical arrival time), which is a token bucket of `burst` tokens: `k`
    starts are allowed while `due` is at most `(burst - 1) / rate` ahead of now. A start that
    comes a little after it was due (the loop woke up late) keeps the schedule, up to
    `LATE_TOKENS` of a token interval, so late wake-ups do not lower the rate; after a longer
    quiet spell the schedule restarts from now."""

    spec: PoolSpec
    due: float
    running: int = 0
    late_ok: bool = False  # a node is waiting for the next token
    waited: set[str] = field(default_factory=set)  # nodes already announced as waiting

    def allowed(self, now: float, rate: float) -> int:
        return max(
            0, min(self.spec.burst, math.floor((now - self.due) * rate + self.spec.burst + _EPS))
        )

    def take(self, now: float, rate: float, calls: int) -> None:
        # Keep the schedule only for a start that waited for its token and came late; any
        # other start (the first one, one after a quiet spell) schedules from now.
        if not self.late_ok or self.due < now - LATE_TOKENS / rate:
            self.due = max(self.due, now)
        self.late_ok = False
        self.due += calls / rate


class Pools:
    """The run's pools; `emit` gets a `PoolWaiting` the first time a node waits on a rate."""

    def __init__(
        self,
        graph: Graph,
        clock: Callable[[], float] = time.monotonic,
        emit: ev.Sink | None = None,
    ) -> None:
        self.clock, self.emit = clock, emit
        now = clock()
        self.buckets = {name: Bucket(spec, now) for name, spec in graph.blueprint.pools.items()}
        self._pool_of = {n.id: n.pool for n in graph.blueprint.nodes if n.pool is not None}
        self._wake: float | None = None

    def pool_of(self, node: str) -> Bucket | None:
        name = self._pool_of.get(node)
        return None if name is None else self.buckets.get(name)

    def room(self, node: str) -> int:
        """How many calls of blueprint node `node` may start now."""
        b = self.pool_of(node)
        if b is None:
            return UNLIMITED
        n = UNLIMITED if b.spec.concurrency is None else b.spec.concurrency - b.running
        rate = b.spec.rate
        if rate is not None:
            now = self.clock()
            tokens = b.allowed(now, rate)
            n = min(n, tokens)
            if tokens < 1:
                b.late_ok = True
                self._due(b.due - (b.spec.burst - 1) / rate)
                self._announce(b, node)
        return max(0, n)

    def started(self, node: str, calls: int) -> None:
        """`calls` calls of `node` were submitted (they took their tokens)."""
        b = self.pool_of(node)
        if b is not None:
            b.running += calls
            if b.spec.rate is not None:
                b.take(self.clock(), b.spec.rate, calls)

    def finished(self, node: str, calls: int) -> None:
        b = self.pool_of(node)
        if b is not None:
            b.running -= calls

    def wake_at(self) -> float | None:
        """When the earliest waited-for token comes (then forgotten: `room` records it again
        while a node still waits)."""
        wake, self._wake = self._wake, None
        return wake

    def _due(self, at: float) -> None:
        self._wake = at if self._wake is None else min(self._wake, at)

    def _announce(self, b: Bucket, node: str) -> None:
        if node in b.waited or self.emit is None:
            return
        b.waited.add(node)
        self.emit(ev.PoolWaiting(time.time(), node, b.spec.name, b.spec.rate_text or ""))
