"""Drive a run: hand ready work to a backend, block until something finishes, feed it back.

The loop never polls: it blocks on a queue that futures complete into (or until the next retry
is due), and it never holds more than `concurrency` chunks in flight. What a ready node does, and
how an outcome settles it, is its kind's business (`engine.kinds`); the driver keeps what is the
same for every kind: retries, fallbacks, cancellation, and the events of each call. Every
outcome becomes events; the report, display, store and `--events` file are sinks of them.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from flowrun import events as ev
from flowrun.engine.backends import Backend
from flowrun.engine.invoke import Call, Outcome
from flowrun.engine.kinds import BY_NAME, NodeKind, Stored, Work
from flowrun.engine.kinds.base import group
from flowrun.engine.pools import Pools
from flowrun.engine.routing import Router
from flowrun.engine.scheduler import Scheduler, Status
from flowrun.expr.compiler import ExprEvalError
from flowrun.model import Graph
from flowrun.node import SharedContext
from flowrun.report import ReportBuilder, RunReport

CANCEL_GRACE_S = 3.0
Done = tuple[list[Work], Future[list[Outcome]]]

__all__ = ["CANCEL_GRACE_S", "Driver", "Options", "Stored"]


@dataclass(frozen=True, slots=True)
class Options:
    concurrency: int = 8
    fail_fast: bool = False
    cancel_grace: float = CANCEL_GRACE_S


class Driver:
    """One run of a graph on a backend; `run()` returns the report its `ReportBuilder` sink built.
    It is the `engine.kinds.Runtime` its node kinds run against."""

    def __init__(
        self,
        graph: Graph,
        backend: Backend,
        *,
        run_id: str,
        context: SharedContext,
        emit: ev.Sink,
        options: Options = Options(),
        cancelled: threading.Event | None = None,
        stored: Stored | None = None,
        clock: Callable[[], float] = time.monotonic,
        idle: Callable[[], None] | None = None,
    ) -> None:
        self.graph, self.backend, self.run_id, self.context = graph, backend, run_id, context
        self.reporter = ReportBuilder()
        self.emit: ev.Sink = ev.Bus([self.reporter, emit])
        self.opts, self.concurrency = options, options.concurrency
        self.dispatch_ms = backend.dispatch_ms
        self.cancelled = cancelled or threading.Event()
        self.stored = stored or Stored({}, {})
        self.clock, self.idle = clock, idle
        self.sched = Scheduler(graph)
        self.router = Router(graph, context.data, self.sched)
        self.pools = Pools(graph, clock, self.emit)
        self.kinds: dict[str, NodeKind] = {name: k(self) for name, k in BY_NAME.items()}
        self._entries = {
            s.id: BY_NAME[graph.nodes[s.id].node_kind].entry(s) for s in graph.blueprint.nodes
        }
        self.done_q: queue.SimpleQueue[Done | None] = queue.SimpleQueue()
        self.inflight = 0
        self.queued: deque[Work] = deque()
        self.timers: list[tuple[float, int, Work]] = []
        self._seq = itertools.count()
        self.stopping = self.failed = False

    # -- public ----------------------------------------------------------------------------
    def wake(self) -> None:
        """Make the loop look at `cancelled` now (safe from a signal handler)."""
        self.done_q.put(None)

    def run(self) -> RunReport:
        t0 = self.clock()
        ids = tuple(spec.id for spec in self.graph.blueprint.nodes)
        resumed = bool(self.stored.nodes or self.stored.items)
        bp = self.graph.blueprint.id
        self.emit(ev.RunStarted(time.time(), self.run_id, bp, len(ids), ids, resumed, self.graph))
        self._loop()
        status = (
            "cancelled" if self.cancelled.is_set() else "failed" if self.failed else "completed"
        )
        duration = (self.clock() - t0) * 1000
        self.emit(ev.RunFinished(time.time(), status, duration, self.context.snapshot()))
        assert self.reporter.report is not None
        return self.reporter.report

    # -- the loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        deadline: float | None = None
        self._schedule()
        while self.inflight or self.timers or (self.sched.is_active() and not self.stopping):
            if self.cancelled.is_set() and not self.stopping:
                self.stopping = True
                deadline = self.clock() + self.opts.cancel_grace
                self.backend.cancel()  # every running attempt sees ctx.cancelled now
            if self.stopping and (not self.inflight or self._past(deadline)):
                break
            item = self._next(deadline)
            while item is not None:
                self._complete(*item)
                try:
                    item = self.done_q.get_nowait()
                except queue.Empty:
                    item = None
            self._fire_timers()
            self._schedule()

    def _past(self, deadline: float | None) -> bool:
        return deadline is not None and self.clock() >= deadline

    def _next(self, deadline: float | None) -> Done | None:
        timer = self.timers[0][0] if self.timers else None
        waits = [t for t in (deadline, timer, self.pools.wake_at()) if t]
        timeout = max(0.0, min(waits) - self.clock()) if waits else None
        if timeout is None and not self.inflight and not self.stopping:
            raise RuntimeError("flowrun internal error: nothing in flight and nothing ready")
        if self.done_q.empty() and self.idle is not None:
            self.idle()  # about to block: let buffering sinks flush
        try:
            return self.done_q.get(timeout=timeout)
        except queue.Empty:
            return None

    def _fire_timers(self) -> None:
        now = self.clock()
        while self.timers and self.timers[0][0] <= now:
            work = heapq.heappop(self.timers)[2]
            if not self.stopping:  # a retry due while stopping never starts: it stays pending
                self.queued.append(work)

    def _schedule(self) -> None:
        if self.stopping:
            return
        while True:
            ready = self.sched.ready()
            for name in ready:
                node = self.graph.nodes[name]
                self.kinds[node.node_kind].start(node)
            self._emit_skips()
            if not ready:
                break
        held: list[Work] = []  # waiting for their pool
        while self.queued and self.free() > 0:
            work = self.queued.popleft()
            if self.pools.room(work.node) <= 0:
                held.append(work)
                continue
            work.owner.queued(work)
            c = work.call
            self.emit(ev.NodeStarted(time.time(), c.node, c.attempt, group(work), c.index))
            self.submit([work])
        self.queued.extendleft(reversed(held))
        for kind in self.kinds.values():
            kind.fill()
        if self.sched.has_ready():  # a kind settled something while filling (an unreadable item)
            self._schedule()

    def _emit_skips(self) -> None:
        for name in self.sched.drain_skipped():
            owner = self.graph.nodes[name].owner
            if self._entries[owner] == name:  # one event per blueprint node, at its entry
                self.emit(ev.NodeSkipped(time.time(), owner))

    # -- the Runtime the kinds use -----------------------------------------------------------
    def free(self) -> int:
        return self.concurrency - self.inflight

    def queue(self, work: Work) -> None:
        self.queued.append(work)

    def submit(self, works: list[Work]) -> None:
        fut = self.backend.submit([w.call for w in works])
        self.pools.started(works[0].node, len(works))
        self.inflight += 1
        fut.add_done_callback(functools.partial(self._returned, works))

    def _returned(self, works: list[Work], fut: Future[list[Outcome]]) -> None:
        self.done_q.put((works, fut))  # on the thread that completed the future

    def taken_or_fail(
        self, node: str, output: Any, action: str | None, attempt: int
    ) -> dict[str, Any] | None:
        self.context.set(node, output)
        try:
            return self.router.edges(node, output, action)
        except ExprEvalError as exc:
            self.context.data.pop(node, None)
            self.emit(ev.NodeFailed(time.time(), node, attempt, 0.0, "ExprEvalError", str(exc)))
            self.run_failed()
            self.sched.finish(node, Status.FAILED)
            return None

    def fail_inline(self, node: str, etype: str, message: str, graph_node: str) -> None:
        # No attempt was made when the failing graph node is not the node's own call.
        attempt = 1 if graph_node == node else 0
        self.emit(ev.NodeFailed(time.time(), node, attempt, 0.0, etype, message, ""))
        self.run_failed()
        if self.sched.status[graph_node] is Status.RUNNING:
            self.sched.finish(graph_node, Status.FAILED)

    def retry_later(self, work: Work, delay: float) -> None:
        heapq.heappush(self.timers, (self.clock() + delay, next(self._seq), work))

    def run_failed(self) -> None:
        self.failed = True
        if self.opts.fail_fast:
            self.stopping = True

    # -- completions -----------------------------------------------------------------------
    def _complete(self, works: list[Work], fut: Future[list[Outcome]]) -> None:
        self.inflight -= 1
        self.pools.finished(works[0].node, len(works))
        try:
            outcomes = fut.result()
        except BaseException as exc:  # the backend itself failed (a worker process died...)
            outcomes = [_crashed(w.call, exc) for w in works]
        if works[0].fallback_for is None:
            works[0].owner.returned(works, outcomes)
        # A cancelled chunk returns early: the calls it did not run stay pending.
        for work, out in zip(works, outcomes, strict=False):
            if out.updates and not self.backend.shared_context:
                for k, v in out.updates.items():
                    self.context.set(k, v)
            if out.ok and work.fallback_for is None:
                work.owner.succeeded(work, out)
            else:
                work.owner.settle(work, out)


def _crashed(call: Call, exc: BaseException) -> Outcome:
    return Outcome(
        call.node, False, time.time(), 0.0, error_type=type(exc).__name__, message=str(exc)
    )
