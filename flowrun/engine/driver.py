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
from collections.abc import Callable, Mapping
from concurrent.futures import Future

from flowrun import events as ev
from flowrun.engine.backends import Backend
from flowrun.engine.invoke import (
    Call,
    ChunkFuture,
    Items,
    ItemsOutcome,
    Outcome,
    chunk_budget_s,
    crashed_items,
)
from flowrun.engine.kinds import BY_NAME, NodeKind, Stored, Work, entries_of
from flowrun.engine.kinds.base import Verbs, group
from flowrun.engine.kinds.batch import CHUNK_TARGET_MS, MAX_CHUNK
from flowrun.engine.pools import Pools
from flowrun.engine.routing import Router
from flowrun.engine.scheduler import Scheduler
from flowrun.frozen import Frozen, fast_frozen
from flowrun.model import Graph
from flowrun.node import SharedContext
from flowrun.report import ReportBuilder, RunReport

CANCEL_GRACE_S = 3.0
# a chunk of calls (its future, its slots) or a batch's chunk of items
# (each with the slots it holds), or something to call on the driver's thread (`post`)
Done = (
    tuple[list[Work], Future[list[Outcome]], int]
    | tuple[Items, Future[ItemsOutcome], int]
    | Callable[[], None]
)

__all__ = ["CANCEL_GRACE_S", "Driver", "Options", "Stored"]


@fast_frozen
class Options(Frozen):
    concurrency: int = 8
    fail_fast: bool = False
    cancel_grace: float = CANCEL_GRACE_S


class Driver(Verbs):
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
        #: the backend takes a batch's chunk as one `Items` (no `Work`/`Call` per item)
        self.runs_items: bool = getattr(backend, "runs_items", False)
        self.cancelled = cancelled or threading.Event()
        self.stored = stored or Stored({}, {})
        self.clock, self.idle = clock, idle
        self.sched = Scheduler(graph)
        self.router = Router(graph, context.data, self.sched)
        self.pools = Pools(graph, clock, self.emit)
        self._kinds: dict[str, NodeKind] = {name: k(self) for name, k in BY_NAME.items()}
        self._filling = [k for k in self._kinds.values() if k.fills]  # `fill` does something
        self.entries = entries_of(graph)
        self.done_q: queue.SimpleQueue[Done | None] = queue.SimpleQueue()
        self.inflight = 0  # slots taken: one per chunk, one per call of a chunk run together
        self._together: dict[str, bool] = {}
        self.queued: deque[Work] = deque()
        self.timers: list[tuple[float, int, Work | Callable[[], None]]] = []
        self._seq = itertools.count()
        self.stopping = self.failed = False
        self.prefix = ""  # what a run's ids start with (a subflow's child runs add theirs)
        #: function (`uses`) -> moving average of one call's ms, for chunks of task calls
        self._call_ms: dict[str, float] = {}
        #: ids of queued works announced as started once (`_complete` queued them again)
        self._again: set[int] = set()
        #: the chunks of independent calls in flight that may come back part run (`submit`);
        #: `_watch` looks into those running on this process's threads (`ChunkFuture`)
        self._watched: dict[Future[list[Outcome]], _Watched] = {}
        self._watch_at: float | None = None  # when `_watch` is due
        self._ticks: dict[object, tuple[float, Callable[[], None]]] = {}  # `tick`
        self._budget_s = chunk_budget_s(backend.dispatch_ms)

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
        groups = {b: (s.total, s.succeeded, s.failed) for b, s in self.sched.batches.items()}
        self.emit(ev.RunFinished(time.time(), status, duration, self.context.snapshot(), groups))
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
                self.emit(ev.RunCancelling(time.time(), self.opts.cancel_grace, self.inflight))
            if self.stopping and (not self.inflight or self._past(deadline)):
                break
            item = self._next(deadline)
            while item is not None:
                if not isinstance(item, tuple):
                    item()
                elif isinstance(item[0], Items):
                    self._complete_items(*item)
                else:
                    self._complete(*item)
                try:
                    item = self.done_q.get_nowait()
                except queue.Empty:
                    item = None
            self._fire_timers()
            self._schedule()
        ticks, self._ticks = list(self._ticks.values()), {}
        for _, fn in ticks:  # the loop ended: every tick now, once (those they set are not)
            fn()
        self._ticks.clear()

    def _past(self, deadline: float | None) -> bool:
        return deadline is not None and self.clock() >= deadline

    def _next(self, deadline: float | None) -> Done | None:
        timer = self.timers[0][0] if self.timers else None
        watch = self._watch_at
        tick = min([at for at, _ in self._ticks.values()]) if self._ticks else None
        waits = [t for t in (deadline, timer, self.pools.wake_at(), watch, tick) if t]
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
        if self._watch_at is not None and now >= self._watch_at:
            self._watch()
        if self._ticks:
            for key, (at, fn) in list(self._ticks.items()):
                if at <= now and self._ticks.get(key) == (at, fn):  # not replaced since
                    del self._ticks[key]
                    fn()
        while self.timers and self.timers[0][0] <= now:
            due = heapq.heappop(self.timers)[2]
            if self.stopping:  # a retry due while stopping never starts: it stays pending
                continue
            if isinstance(due, Work):
                self.queued.append(due)
            else:
                due()

    def _schedule(self) -> None:
        if self.stopping:
            return
        while True:
            self.start_ready()
            self._submit_queued()
            queued = len(self.queued)
            for kind in self._filling:
                kind.fill()
            # A kind may have settled nodes while filling (a subflow that ended, an unreadable
            # item that closed a batch), or queued new work (a child run's calls)
            if self.sched.has_ready() or (len(self.queued) > queued and self.free() > 0):
                continue
            return

    def _submit_queued(self) -> None:
        held: list[Work] = []  # waiting for their pool
        queued, pools = self.queued, self.pools
        while queued and self.free() > 0:
            work = queued.popleft()
            if pools.room(work.node) <= 0:
                held.append(work)
                continue
            works = [work]
            uses = work.call.uses
            if queued and self._groupable(work) and not self.together(uses):
                # Many queued calls of one fast function (independent task nodes, the nodes of
                # a batch's child runs): one chunk takes several, as a batch's items do. A
                # backend without shared memory ships one context per chunk: a chunk then
                # holds the calls of one run (or of one child run) only.
                size = self._chunk_size(uses, len(queued) + 1)
                own, shared = work.call.context, self.backend.shared_context
                while len(works) < size and queued:
                    nxt = queued[0]
                    if nxt.call.uses != uses or not self._groupable(nxt):
                        break
                    if not shared and nxt.call.context is not own:
                        break
                    works.append(queued.popleft())
            now, again = time.time(), self._again
            for w in works:
                if again and id(w) in again:  # the rest of a chunk that ended at its budget
                    again.discard(id(w))
                    continue
                w.owner.queued(w)
                c = w.call
                self.emit(ev.NodeStarted(now, c.node, c.attempt, group(w), c.index))
            self.submit(works, budget=len(works) > 1)
        queued.extendleft(reversed(held))

    def _groupable(self, work: Work) -> bool:
        """May `work` share a chunk with other queued calls? A node's own first call or retry,
        of a kind whose chunks need no bookkeeping, outside any pool."""
        return (
            work.owner.shares_chunks
            and work.fallback_for is None
            and work.index is None
            and self.pools.pool_of(work.node) is None
        )

    def _chunk_size(self, uses: str, pending: int) -> int:
        """Calls of `uses` per chunk: one until a call of it has been timed; then, as a batch
        sizes its chunks, about `CHUNK_TARGET_MS` of them, but never so many that the `pending`
        calls would not spread over every worker."""
        ms = self._call_ms.get(uses)
        if ms is None:
            return 1
        per_call, dispatch = max(ms, 1e-3), self.dispatch_ms
        spread = max(1, int(dispatch / per_call), pending // (2 * self.concurrency))
        return max(1, min(MAX_CHUNK, int(max(CHUNK_TARGET_MS, dispatch) / per_call), spread))

    # -- the Runtime the kinds use -----------------------------------------------------------
    @property
    def kinds(self) -> Mapping[str, NodeKind]:
        return self._kinds

    def free(self) -> int:
        return self.concurrency - self.inflight

    def together(self, uses: str) -> bool:
        known = self._together.get(uses)
        if known is None:
            known = self._together[uses] = self.backend.together(uses)
        return known

    def queue(self, work: Work) -> None:
        self.queued.append(work)

    def submit(self, works: list[Work], budget: bool = False) -> None:
        """Hand `works` to the backend (`budget`: a chunk of independent calls the driver made
        itself, which may come back part run, see `Backend.submit`)."""
        together = len(works) > 1 and self.together(works[0].call.uses)
        budget = budget and not together
        fut = self.backend.submit([w.call for w in works], together, budget)
        self.pools.started(works[0].node, len(works))
        slots = len(works) if together else 1
        self.inflight += slots
        if budget:
            self._watched[fut] = _Watched(works, self.clock())
            if self._watch_at is None and type(fut) is ChunkFuture:
                self._watch_at = self.clock() + self._budget_s
        fut.add_done_callback(functools.partial(self._returned, works, slots))

    def _watch(self) -> None:
        """Look into the chunks that have run past their budget: settle the calls that ended,
        take back those not started (`ChunkFuture`). Due every budget while one runs (not a
        timer: it keeps no run alive)."""
        now = self.clock()
        old = now - self._budget_s
        for fut, w in list(self._watched.items()):
            if type(fut) is not ChunkFuture or w.since > old or fut.done():
                continue  # not on a thread here, young, or its completion is on its way
            ran = fut.ran[w.settled : len(fut.ran)]
            if ran:
                self._settle(w.works[w.settled : w.settled + len(ran)], ran)
                w.settled += len(ran)
            if not self.stopping:
                self._take_back(fut, w)
        looking = any(type(fut) is ChunkFuture for fut in self._watched)
        self._watch_at = now + self._budget_s if looking else None

    def _take_back(self, fut: ChunkFuture, w: _Watched) -> None:
        """Queue again, first, the calls of `fut` that its worker has not started."""
        taken: list[int] = []
        waiting = fut.waiting
        while True:
            try:
                taken.append(waiting.pop()[0])
            except IndexError:
                break
        if taken:
            self._queue_again(w.works[taken[-1] : w.end])
            w.end = taken[-1]

    def _queue_again(self, rest: list[Work]) -> None:
        self._again.update(map(id, rest))  # announced already: not started twice
        self.queued.extendleft(reversed(rest))

    def _returned(self, works: list[Work], slots: int, fut: Future[list[Outcome]]) -> None:
        self.done_q.put((works, fut, slots))  # on the thread that completed the future

    def submit_items(self, chunk: Items, slots: int = 1) -> None:
        """Hand a chunk of a batch's items to the backend now (the caller checked `free()`;
        only when `runs_items`); it comes back to the batch kind's `items_returned`. A chunk
        of an async worker's items runs together and holds a slot per item (`slots`)."""
        fut = self.backend.submit_items(chunk)  # type: ignore[attr-defined]
        self.pools.started(chunk.batch, len(chunk.values))
        self.inflight += slots
        fut.add_done_callback(functools.partial(self._items_back, chunk, slots))

    def _items_back(self, chunk: Items, slots: int, fut: Future[ItemsOutcome]) -> None:
        self.done_q.put((chunk, fut, slots))

    def post(self, fn: Callable[[], None]) -> None:
        """Call `fn` on the driver's thread soon (safe from any thread)."""
        self.done_q.put(fn)

    def hold(self, slots: int) -> None:
        """Take `slots` more (fewer, when negative) for work the driver did not submit itself:
        a batch's lanes (`engine.lanes`)."""
        self.inflight += slots

    def retry_later(self, work: Work, delay: float) -> None:
        heapq.heappush(self.timers, (self.clock() + delay, next(self._seq), work))

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (self.clock() + delay, next(self._seq), fn))

    def tick(self, key: object, delay: float, fn: Callable[[], None]) -> None:
        """Call `fn` on the driver's thread in `delay` seconds, or when the loop ends if that
        is sooner, once; a later `tick` with the same key replaces it. Unlike `later`, this
        keeps no loop going, and it is called while the run stops too (a batch's lanes settle
        what ended in their claims: `engine.lanes`)."""
        self._ticks[key] = (self.clock() + delay, fn)

    def run_failed(self) -> None:
        self.failed = True
        if self.opts.fail_fast:
            self.stopping = True

    # -- completions -----------------------------------------------------------------------
    def _complete(self, works: list[Work], fut: Future[list[Outcome]], slots: int) -> None:
        self.inflight -= slots
        self.pools.finished(works[0].node, len(works))
        watched = self._watched.pop(fut, None) if self._watched else None
        settled, end = (watched.settled, watched.end) if watched else (0, len(works))
        try:
            outcomes = fut.result()
        except BaseException as exc:  # the backend itself failed (a worker process died...)
            outcomes = [_crashed(w.call, exc) for w in works[:end]]
        first = works[0]
        if first.fallback_for is None:
            first.owner.returned(works, outcomes)
            if outcomes and first.owner.shares_chunks:
                ms = sum([o.duration_ms for o in outcomes]) / len(outcomes)
                old = self._call_ms.get(first.call.uses)
                self._call_ms[first.call.uses] = ms if old is None else 0.7 * old + 0.3 * ms
        # A chunk that ran out of its time budget (`invoke.CHUNK_BUDGET_MS`): the calls it
        # did not start run next, in chunks of their own. (A cancelled chunk also returns
        # early: then the calls it did not run stay pending, as any chunk's do.)
        if watched is not None and not self.stopping:
            if type(fut) is ChunkFuture:
                self._take_back(fut, watched)
            elif len(outcomes) < end:
                self._queue_again(works[len(outcomes) : end])
        if settled:
            works, outcomes = works[settled:], outcomes[settled:]
        self._settle(works, outcomes)

    def _settle(self, works: list[Work], outcomes: list[Outcome]) -> None:
        """Settle each of `works` by its outcome (in order; fewer outcomes than works: the
        rest did not run)."""
        for work, out in zip(works, outcomes, strict=False):
            if out.updates and not self.backend.shared_context:
                context = self.context if work.call.context is None else work.call.context
                for k, v in out.updates.items():
                    context.set(k, v)
            if out.ok and work.fallback_for is None:
                work.owner.succeeded(work, out)
            else:
                work.owner.settle(work, out)

    def _complete_items(self, chunk: Items, fut: Future[ItemsOutcome], slots: int) -> None:
        self.inflight -= slots
        self.pools.finished(chunk.batch, len(chunk.values))
        try:
            res = fut.result()
        except BaseException as exc:  # the backend itself failed
            res = crashed_items(chunk, exc)
        if not self.backend.shared_context:
            for _, out in res.others:
                for k, v in out.updates.items():
                    self.context.set(k, v)
        self._kinds["batch"].items_returned(chunk, res)  # type: ignore[attr-defined]


class _Watched:
    """What the driver knows of a running `ChunkFuture`: its works, when it was submitted,
    how many of its outcomes it settled (the first ones), and where the calls it took back
    begin (`end`: the works from there on were queued again)."""

    __slots__ = ("end", "settled", "since", "works")

    def __init__(self, works: list[Work], since: float) -> None:
        self.works, self.since, self.settled, self.end = works, since, 0, len(works)


def _crashed(call: Call, exc: BaseException) -> Outcome:
    return Outcome(
        call.node, False, time.time(), 0.0, error_type=type(exc).__name__, message=str(exc)
    )
