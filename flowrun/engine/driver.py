"""Drive a run: hand ready work to a backend, block until something finishes, feed it back.

The loop never polls: it blocks on a queue that futures complete into (or until the next retry
is due), and it never holds more than `concurrency` chunks in flight, so a million-item batch
keeps a few futures alive, not a million. Every outcome becomes events; sinks (display, store,
`--events` file) see the same stream. The driver owns the run context and the report.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from flowrun import events as ev
from flowrun.engine.backends import Backend
from flowrun.engine.invoke import Call, Outcome
from flowrun.engine.routing import InputError, Router
from flowrun.engine.scheduler import Scheduler, Status
from flowrun.expr.compiler import ExprEvalError
from flowrun.expr.template import with_kwargs
from flowrun.model import Graph, GraphNode, Kind
from flowrun.node import SharedContext
from flowrun.report import NodeReport, RunReport

# Batch items are sent to workers in chunks sized so one chunk takes about this long,
# which amortises the hand-off between threads for fast items (dask.bag does the same).
CHUNK_TARGET_MS = 2.0
MAX_CHUNK = 256
CANCEL_GRACE_S = 3.0


@dataclass(slots=True)
class Work:
    """A call in flight, and whom its outcome is for."""

    call: Call
    node: str  # task id, or batch id for an item
    index: int | None = None
    fallback_for: Work | None = None  # the failed work this fallback stands in for
    first_error: Outcome | None = None  # that work's last failure
    input_kwargs: Mapping[str, Any] | None = None  # from an `inputs` mapping (not params)


@dataclass(frozen=True, slots=True)
class Options:
    concurrency: int = 8
    fail_fast: bool = False
    cancel_grace: float = CANCEL_GRACE_S


@dataclass(slots=True)
class Stored:
    """What an earlier run left (for `--resume`): outputs of settled-ok nodes and items."""

    nodes: dict[str, tuple[str, Any, str | None, int]]  # id -> (status, output, action, attempts)
    items: dict[str, dict[int, Any]]  # batch -> index -> output


class Driver:
    """One run of a graph on a backend; `run()` returns the report."""

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
        self.graph = graph
        self.backend = backend
        self.run_id = run_id
        self.context = context
        self.ctx: Any = context.data
        self.emit = emit
        self.opts = options
        self.cancelled = cancelled or threading.Event()
        self.stored = stored or Stored({}, {})
        self.clock = clock
        self.idle = idle
        self.sched = Scheduler(graph)
        self.done_q: queue.SimpleQueue[tuple[list[Work], Future[list[Outcome]]] | None] = (
            queue.SimpleQueue()
        )
        self.inflight = 0
        self.batch_inflight: dict[str, int] = {}
        self.queued: deque[Work] = deque()
        self.timers: list[tuple[float, int, Work]] = []
        self._seq = itertools.count()
        self.items: dict[str, list[Any]] = {}
        self.item_ms: dict[str, float] = {}
        self.stopping = False
        self.failed = False
        self.errors: list[dict[str, str]] = []
        self.reports = self._initial_reports()
        self.router = Router(graph, self.ctx, self.sched)

    # -- public ----------------------------------------------------------------------------
    def wake(self) -> None:
        """Make the loop look at `cancelled` now (safe from a signal handler)."""
        self.done_q.put(None)

    def run(self) -> RunReport:
        started = time.time()
        t0 = self.clock()
        ids = tuple(self.reports)
        resumed = bool(self.stored.nodes or self.stored.items)
        self.emit(
            ev.RunStarted(started, self.run_id, self.graph.blueprint.id, len(ids), ids, resumed)
        )
        self._loop()
        status = (
            "cancelled" if self.cancelled.is_set() else "failed" if self.failed else "completed"
        )
        duration = (self.clock() - t0) * 1000
        self._finalise_reports()
        self.emit(ev.RunFinished(time.time(), status, duration))
        return RunReport(
            self.graph.blueprint.id,
            self.run_id,
            status,
            self.context.snapshot(),
            self.reports,
            self.errors,
            duration,
        )

    # -- the loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        deadline: float | None = None
        self._schedule()
        while self.inflight or self.timers or (self.sched.is_active() and not self.stopping):
            if self.cancelled.is_set() and not self.stopping:
                self.stopping = True
                deadline = self.clock() + self.opts.cancel_grace
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

    def _next(self, deadline: float | None) -> tuple[list[Work], Future[list[Outcome]]] | None:
        waits = [t for t in (deadline, self.timers[0][0] if self.timers else None) if t]
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

    # -- scheduling ------------------------------------------------------------------------
    def _schedule(self) -> None:
        if self.stopping:
            return
        while True:
            ready = self.sched.ready()
            for name in ready:
                self._start(self.graph.nodes[name])
            self._emit_skips()
            if not ready:
                break
        self._submit_queued()
        self._submit_items()

    def _free(self) -> int:
        return self.opts.concurrency - self.inflight

    def _submit(self, works: list[Work]) -> None:
        fut = self.backend.submit([w.call for w in works])
        self.inflight += 1
        fut.add_done_callback(lambda f, w=works: self.done_q.put((w, f)))  # type: ignore[misc]

    def _submit_queued(self) -> None:
        while self.queued and self._free() > 0:
            work = self.queued.popleft()
            if work.index is not None:
                self.batch_inflight[work.node] = self.batch_inflight.get(work.node, 0) + 1
            self._emit_started(work)
            self._submit([work])

    def _submit_items(self) -> None:
        for batch in self.sched.open_batches():
            spec = self.graph.nodes[batch].spec
            assert spec.batch is not None
            cap = spec.batch.concurrency or self.opts.concurrency
            uses, params, timeout = spec.batch.uses, spec.batch.params, spec.config.timeout
            items, emit = self.items[batch], self.emit
            while self._free() > 0 and self.batch_inflight.get(batch, 0) < cap:
                idx = self.sched.take_items(batch, self._chunk_size(batch))
                if not idx:
                    break
                # The per-item path is the hot one: no lookups or helper calls inside it.
                works = [
                    Work(Call(f"{batch}[{i}]", uses, (items[i],), params, 1, i, timeout), batch, i)
                    for i in idx
                ]
                self.batch_inflight[batch] = self.batch_inflight.get(batch, 0) + 1
                now = time.time()
                for w in works:
                    emit(ev.NodeStarted(now, w.call.node, 1, batch, w.index))
                self._submit(works)

    def _chunk_size(self, batch: str) -> int:
        ms = self.item_ms.get(batch)
        if ms is None:
            return 1
        state = self.sched.batches[batch]
        per_item = max(ms, 1e-3)
        dispatch = self.backend.dispatch_ms
        # Few enough items per chunk to spread the rest over the workers, but never so few
        # that the round trip to the backend costs more than the items themselves.
        worth_a_trip = int(dispatch / per_item)
        spread = max(
            1, worth_a_trip, (state.remaining - state.handed) // (2 * self.opts.concurrency)
        )
        return max(1, min(MAX_CHUNK, int(max(CHUNK_TARGET_MS, dispatch) / per_item), spread))

    # -- starting nodes --------------------------------------------------------------------
    def _start(self, node: GraphNode) -> None:
        if node.kind is Kind.SCATTER:
            self._scatter(node)
        elif node.kind is Kind.GATHER:
            self._gather(node)
        else:
            self._task(node)

    def _task(self, node: GraphNode) -> None:
        stored = self.stored.nodes.get(node.id)
        if stored is not None and stored[0] in ("succeeded", "recovered"):
            status, output, action, attempts = stored
            taken = self._taken_or_fail(node.id, output, action, attempts)
            if taken is not None:
                self.reports[node.id] = NodeReport(status, attempts)
                self.emit(
                    ev.NodeSucceeded(time.time(), node.id, attempts, output=output, reused=True)
                )
                self.sched.finish(node.id, Status(status), taken)
            return
        try:
            args, kwargs = self.router.input(node)
        except InputError as exc:
            self._fail_inline(node.id, "InputError", str(exc))
            return
        spec = node.spec
        assert spec.uses is not None
        call = Call(
            node.id, spec.uses, args, with_kwargs(kwargs, spec.params), 1, None, spec.config.timeout
        )
        self.queued.append(Work(call, node.id, input_kwargs=kwargs))

    def _scatter(self, node: GraphNode) -> None:
        spec = node.spec
        assert spec.batch is not None and node.batch is not None
        key = spec.batch.input_key
        try:
            value = self.router.read(key)
        except InputError as exc:
            self._fail_inline(node.batch, "InputError", f"batch '{node.batch}': {exc}", node.id)
            return
        if not isinstance(value, list):
            found = "null" if value is None else type(value).__name__
            msg = f"batch '{node.batch}': inputKey '{key}' holds {found}, expected a list"
            self._fail_inline(node.batch, "TypeError", msg, node.id)
            return
        self.items[node.batch] = value
        done = self.stored.items.get(node.batch, {})
        done = {i: v for i, v in done.items() if i < len(value)}
        self.reports[node.batch] = NodeReport(
            "running", items={"total": len(value), "succeeded": 0, "failed": 0}
        )
        self.emit(ev.BatchStarted(time.time(), node.batch, len(value), len(done)))
        self.sched.bind(node.batch, len(value), done)

    def _gather(self, node: GraphNode) -> None:
        batch = node.batch
        spec = node.spec
        assert batch is not None and spec.batch is not None
        state = self.sched.batches[batch]
        results = list(state.results)
        self.context.set(spec.batch.output_key, results)
        rep = self.reports[batch]
        rep.items = {"total": state.total, "succeeded": state.succeeded, "failed": state.failed}
        try:
            taken = self.router.edges(node.id, results, None)
        except ExprEvalError as exc:
            self._fail_inline(batch, "ExprEvalError", str(exc), node.id)
            self._batch_finished(batch, "failed")
            return
        rep.status = "succeeded"
        self._batch_finished(batch, "succeeded", results)
        self.sched.finish(node.id, Status.SUCCEEDED, taken)

    def _batch_finished(self, batch: str, status: str, output: Any = None) -> None:
        state = self.sched.batches[batch]
        spec = self.graph.nodes[batch].spec
        assert spec.batch is not None
        self.emit(
            ev.BatchFinished(
                time.time(),
                batch,
                status,
                state.total,
                state.succeeded,
                state.failed,
                spec.batch.output_key,
                output,
            )
        )

    # -- completions -----------------------------------------------------------------------
    def _complete(self, works: list[Work], fut: Future[list[Outcome]]) -> None:
        self.inflight -= 1
        batch = works[0].node if works[0].index is not None else None
        if batch is not None:
            self.batch_inflight[batch] -= 1
        try:
            outcomes = fut.result()
        except BaseException as exc:  # the backend itself failed (a worker process died...)
            outcomes = [_crashed(w.call, exc) for w in works]
        # A cancelled chunk returns early: the calls it did not run stay pending.
        for work, outcome in zip(works, outcomes, strict=False):
            self._outcome(work, outcome)
        if batch is not None and outcomes:
            ms = sum(o.duration_ms for o in outcomes) / len(outcomes)
            old = self.item_ms.get(batch)
            self.item_ms[batch] = ms if old is None else 0.7 * old + 0.3 * ms

    def _outcome(self, work: Work, out: Outcome) -> None:
        if out.updates and not self.backend.shared_context:
            for k, v in out.updates.items():
                self.context.set(k, v)
        if out.ok:
            self._succeeded(work, out)
        else:
            self._failed_attempt(work, out)

    def _succeeded(self, work: Work, out: Outcome) -> None:
        call = work.call
        taken = None
        if work.fallback_for is None and work.index is None:
            # Edges first: a failing condition fails the node, and it must never be announced
            # as succeeded (the display, the store and the events file would say so).
            taken = self._taken_or_fail(work.node, out.output, out.action, call.attempt)
            if taken is None:
                return
        self.emit(
            ev.NodeSucceeded(
                time.time(), call.node, call.attempt, out.duration_ms, _batch(work), call.index,
                out.action, out.output, out.output_json, False, out.updates,
            )
        )  # fmt: skip
        if work.fallback_for is not None:
            self._recovered(work, out)
        elif work.index is not None:
            self.sched.item_done(work.node, work.index, True, out.output)
            self._after_item(work.node)
        else:
            self.reports[work.node] = NodeReport("succeeded", call.attempt, out.duration_ms)
            self.sched.finish(work.node, Status.SUCCEEDED, taken)

    def _taken_or_fail(
        self, node: str, output: Any, action: str | None, attempt: int
    ) -> dict[str, Any] | None:
        """Store the output and evaluate the outgoing edges; on an expression error, fail the
        node (event, error, report) and return None."""
        self.context.set(node, output)
        try:
            return self.router.edges(node, output, action)
        except ExprEvalError as exc:
            self.ctx.pop(node, None)
            self.emit(ev.NodeFailed(time.time(), node, attempt, 0.0, "ExprEvalError", str(exc)))
            self._record_failure(node, "ExprEvalError", str(exc))
            self.reports[node] = NodeReport("failed", attempt)
            self.sched.finish(node, Status.FAILED)
            return None

    def _failed_attempt(self, work: Work, out: Outcome) -> None:
        call = work.call
        cfg = self.graph.nodes[work.node].spec.config
        if call.attempt <= cfg.max_retries and not self.stopping:
            delay = cfg.delay_before(call.attempt + 1)
            self.emit(
                ev.NodeRetry(
                    time.time(), call.node, call.attempt, delay, out.error_type, out.message,
                    out.traceback, _batch(work), call.index,
                )
            )  # fmt: skip
            retry = dataclasses.replace(
                work, call=dataclasses.replace(call, attempt=call.attempt + 1)
            )
            heapq.heappush(self.timers, (self.clock() + delay, next(self._seq), retry))
            return
        self.emit(
            ev.NodeFailed(
                time.time(), call.node, call.attempt, out.duration_ms, out.error_type,
                out.message, out.traceback, _batch(work), call.index,
            )
        )  # fmt: skip
        fb = cfg.fallback if work.fallback_for is None else None
        if fb is not None and not self.stopping:
            self._start_fallback(work, fb, out)
        else:
            self._final_failure(work, out)

    def _start_fallback(self, work: Work, fb: str, out: Outcome) -> None:
        spec = self.graph.nodes[fb].spec
        assert spec.uses is not None
        # The fallback receives the failed node's input, never its params.
        call = Call(fb, spec.uses, work.call.args, with_kwargs(work.input_kwargs or {},
                    spec.params), 1, work.call.index, spec.config.timeout)  # fmt: skip
        self.queued.append(Work(call, fb, None, work, out))

    def _recovered(self, work: Work, out: Outcome) -> None:
        failed = work.fallback_for
        assert failed is not None
        self.reports[work.node] = NodeReport("succeeded", work.call.attempt, out.duration_ms)
        self.context.set(work.node, out.output)
        if failed.index is not None:
            self.emit(ev.NodeRecovered(time.time(), failed.call.node, work.node, out.output))
            self.sched.item_done(failed.node, failed.index, True, out.output)
            self._after_item(failed.node)
            return
        taken = self._taken_or_fail(failed.node, out.output, out.action, failed.call.attempt)
        if taken is None:
            return
        self.emit(ev.NodeRecovered(time.time(), failed.call.node, work.node, out.output))
        self.reports[failed.node] = NodeReport("recovered", failed.call.attempt, out.duration_ms)
        self.sched.finish(failed.node, Status.RECOVERED, taken)

    def _final_failure(self, work: Work, out: Outcome) -> None:
        if work.fallback_for is not None:
            self.reports[work.node] = NodeReport("failed", work.call.attempt, out.duration_ms)
            self.errors.append({"node": work.node, "type": out.error_type, "message": out.message})
            work, out = work.fallback_for, work.first_error or out
        self._record_failure(work.call.node, out.error_type, out.message, item=work.index)
        if work.index is not None:
            self.sched.item_done(work.node, work.index, False)
            self._after_item(work.node)
            return
        self.reports[work.node] = NodeReport("failed", work.call.attempt, out.duration_ms)
        self.sched.finish(work.node, Status.FAILED)

    def _after_item(self, batch: str) -> None:
        state = self.sched.batches[batch]
        if state.over_budget and self.sched.status[batch] is Status.FAILED:
            rep = self.reports[batch]
            if rep.status != "failed":
                rep.status = "failed"
                self._run_failed()
                self._batch_finished(batch, "failed")

    def _record_failure(self, node: str, etype: str, message: str, item: int | None = None) -> None:
        self.errors.append({"node": node, "type": etype, "message": message})
        if item is None:
            self._run_failed()

    def _run_failed(self) -> None:
        self.failed = True
        if self.opts.fail_fast:
            self.stopping = True

    def _fail_inline(self, user_id: str, etype: str, message: str, node: str | None = None) -> None:
        """A node that failed without running a function (bad input, expression error)."""
        name = node or user_id
        self.emit(ev.NodeFailed(time.time(), user_id, 1, 0.0, etype, message, ""))
        self.reports[user_id] = NodeReport("failed", 0 if node else 1)
        self._record_failure(user_id, etype, message)
        if self.sched.status[name] is Status.RUNNING:
            self.sched.finish(name, Status.FAILED)

    # -- reporting -------------------------------------------------------------------------
    def _emit_started(self, work: Work) -> None:
        c = work.call
        self.emit(ev.NodeStarted(time.time(), c.node, c.attempt, _batch(work), c.index))

    def _emit_skips(self) -> None:
        for name in self.sched.drain_skipped():
            node = self.graph.nodes[name]
            if node.kind in (Kind.WORKER, Kind.GATHER):
                continue
            user = node.batch or name
            self.reports[user].status = "skipped"
            self.emit(ev.NodeSkipped(time.time(), user))

    def _initial_reports(self) -> dict[str, NodeReport]:
        reports: dict[str, NodeReport] = {}
        for spec in self.graph.blueprint.nodes:
            reports[spec.id] = NodeReport()
        return reports

    def _finalise_reports(self) -> None:
        for batch, state in self.sched.batches.items():
            self.reports[batch].items = {
                "total": state.total,
                "succeeded": state.succeeded,
                "failed": state.failed,
            }
        for name in self.graph.fallbacks:
            if self.reports[name].status == "pending":
                self.reports[name].status = "skipped"
        for rep in self.reports.values():
            if rep.status == "running":
                rep.status = "pending"


def _batch(work: Work) -> str | None:
    return work.node if work.index is not None else None


def _crashed(call: Call, exc: BaseException) -> Outcome:
    return Outcome(
        call.node, False, time.time(), 0.0, error_type=type(exc).__name__, message=str(exc)
    )
