"""The seam every node kind implements, and what the driver offers the kinds.

A node kind answers, for the blueprint nodes it claims:

- at load time (`engine.expand`): which graph nodes and internal edges a node becomes, which of
  them an edge enters and leaves, what the node reads and which context key it writes;
- at run time (`engine.driver`): what to do when one of its graph nodes is ready (`start`),
  how to hand out more work while there is room (`fill`), and how an outcome settles it
  (`succeeded`, `failed`, `recovered`, `returned`);
- for durability: what an earlier run left for it (`Stored`) and that it does not call again;
- for people: the events it emits (`BatchStarted` and the like), which the store, the report,
  the display and the `--events` file record without knowing any kind by name.

The driver builds one instance of each kind per run, passing itself as the `Runtime`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from flowrun import events as ev
from flowrun.engine.invoke import Call, Outcome
from flowrun.engine.scheduler import Scheduler, Status
from flowrun.errors import PathT, Problem
from flowrun.expr.compiler import ExprEvalError
from flowrun.expr.template import with_kwargs
from flowrun.frozen import Mutable, fast_mutable
from flowrun.model import Blueprint, Graph, GraphEdge, GraphNode, NodeSpec
from flowrun.node import SharedContext

if TYPE_CHECKING:
    from flowrun.engine.pools import Pools
    from flowrun.engine.routing import Router


@fast_mutable
class Work(Mutable):
    """A call in flight, and whom its outcome is for."""

    call: Call
    node: str  # the blueprint node it belongs to (a batch's id for its items)
    owner: NodeKind  # the kind that settles it
    index: int | None = None  # the item index, for a call that is one of a group
    fallback_for: Work | None = None  # the failed work this fallback stands in for
    first_error: Outcome | None = None  # that work's last failure
    input_kwargs: Mapping[str, Any] | None = None  # from an `inputs` mapping (not params)


@fast_mutable
class Stored(Mutable):
    """What an earlier run left (for `--resume`): outputs of settled-ok nodes and items."""

    nodes: dict[str, tuple[str, Any, str | None, int]]  # id -> (status, output, action, attempts)
    items: Mapping[str, Mapping[int, Any]]  # group (batch) -> index -> output


class Runtime(Protocol):
    """What a running kind may use: the driver's state and verbs."""

    graph: Graph
    sched: Scheduler
    router: Router
    pools: Pools  # every submission is gated by `pools.room(node)`
    context: SharedContext
    stored: Stored
    concurrency: int
    dispatch_ms: float

    @property
    def stopping(self) -> bool:
        """Cancelled, or --fail-fast after a failure: start no new work."""
        ...

    @property
    def kinds(self) -> Mapping[str, NodeKind]:
        """This run's instance of each kind, by name."""
        ...

    def emit(self, event: ev.Event) -> None:
        """Hand `event` to every sink."""
        ...

    def free(self) -> int:
        """How many more slots may be taken now (a chunk takes one; a chunk run together,
        one per call)."""
        ...

    def together(self, uses: str) -> bool:
        """Do chunks of `uses` run together (coroutine functions on one event loop)?"""
        ...

    def queue(self, work: Work) -> None:
        """Run `work` (one call) as soon as the concurrency limit allows."""
        ...

    def submit(self, works: list[Work]) -> None:
        """Hand a chunk of calls to the backend now (the caller checked `free()`)."""
        ...

    def taken_or_fail(
        self, node: str, output: Any, action: str | None, attempt: int
    ) -> dict[str, Any] | None:
        """Store a blueprint node's output and evaluate its edges; on an expression error fail
        the node (event and status) and return None."""
        ...

    def fail_inline(self, node: str, etype: str, message: str, graph_node: str) -> None:
        """Fail blueprint node `node` without having called anything (bad input, expression)."""
        ...

    def retry_later(self, work: Work, delay: float) -> None:
        """Queue `work` (the next attempt) after `delay` seconds, unless the run is stopping."""
        ...

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Call `fn` on the driver's thread after `delay` seconds, unless the run is stopping."""
        ...

    def run_failed(self) -> None:
        """The run has failed (with `--fail-fast`, stop starting work)."""
        ...


class NodeKind:
    """One kind of blueprint node. Subclasses override what differs from a plain task."""

    name: ClassVar[str] = "task"
    #: may a node of this kind be another node's `config.fallback`?
    can_stand_in: ClassVar[bool] = True
    #: does `fill` do anything (hand out items, pump child runs)?
    fills: ClassVar[bool] = False
    #: may the driver put this kind's queued calls in one chunk with other calls of the same
    #: function (its `returned` keeps no count of chunks)?
    shares_chunks: ClassVar[bool] = False

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    # -- load time ---------------------------------------------------------------------------
    @classmethod
    def claims(cls, spec: NodeSpec) -> bool:
        raise NotImplementedError

    @classmethod
    def graph_nodes(cls, spec: NodeSpec) -> list[GraphNode]:
        raise NotImplementedError

    @classmethod
    def internal_edges(cls, spec: NodeSpec) -> list[GraphEdge]:
        return []

    @classmethod
    def entry(cls, spec: NodeSpec) -> str:
        """The graph node an edge to this blueprint node enters."""
        return spec.id

    @classmethod
    def exit(cls, spec: NodeSpec) -> str:
        """The graph node an edge from this blueprint node leaves."""
        return spec.id

    @classmethod
    def output_key(cls, spec: NodeSpec) -> str:
        """The context key the node's output is stored under."""
        return spec.id

    @classmethod
    def reads(cls, spec: NodeSpec) -> Sequence[tuple[PathT, str]]:
        """(document path, source text) of every context source the node reads."""
        return []

    @classmethod
    def expressions(cls, spec: NodeSpec) -> Sequence[tuple[str, PathT, str, Sequence[str]]]:
        """(field, path inside the node, text, names in scope besides node ids and context
        keys) of each expression the node's stanza holds; `graph.expressions` has them
        compiled under (node id, field)."""
        return []

    @classmethod
    def child(
        cls, spec: NodeSpec, bp: Blueprint, chain: tuple[str, ...]
    ) -> tuple[Graph | None, list[Problem]]:
        """The expanded blueprint this node runs as a subflow (None for most kinds), and the
        problems found loading it."""
        return None, []

    @classmethod
    def problems(cls, spec: NodeSpec, base: Path | None) -> Sequence[tuple[PathT, str, str]]:
        """(document path, code, message) of what is wrong with the node that only the file
        system can tell (`base` is the blueprint's directory, None without a file)."""
        return []

    @classmethod
    def reader(cls, spec: NodeSpec) -> str:
        """The graph node that reads those sources when it starts."""
        return cls.entry(spec)

    # -- run time ----------------------------------------------------------------------------
    def start(self, node: GraphNode) -> None:
        """Graph node `node` (of this kind) is ready: queue its work or settle it."""
        raise NotImplementedError

    def fill(self) -> None:
        """Hand out more work while there is room (kinds that hand out items)."""

    def succeeded(self, work: Work, out: Outcome) -> None:
        raise NotImplementedError

    def failed(self, work: Work, out: Outcome) -> None:
        """`work` failed for good (its retries used, no fallback, or the fallback failed)."""
        raise NotImplementedError

    def recovered(self, work: Work, out: Outcome, fallback: str) -> None:
        """`work` failed and its fallback `fallback` succeeded with `out`."""
        raise NotImplementedError

    def queued(self, work: Work) -> None:
        """`work` (one call: a first attempt or a retry) is about to be submitted on its own."""

    def returned(self, works: list[Work], outcomes: list[Outcome]) -> None:
        """A chunk of this kind's work came back (before its outcomes are settled)."""

    # -- what every kind shares: retries and fallbacks (`config`) ----------------------------
    def settle(self, work: Work, out: Outcome) -> None:
        """An outcome that is not a plain success: a failed attempt, or a fallback's result."""
        if not out.ok:
            self.attempt_failed(work, out)
            return
        failed, call = work.fallback_for, work.call
        assert failed is not None
        self.rt.emit(
            ev.NodeSucceeded(
                time.time(), call.node, call.attempt, out.duration_ms, None, call.index,
                out.action, out.output, out.output_json, False, out.updates, "succeeded",
                out.logs,
            )
        )  # fmt: skip
        self.rt.context.set(work.node, out.output)
        failed.owner.recovered(failed, out, work.node)

    def attempt_failed(self, work: Work, out: Outcome) -> None:
        """Retry after `config.retryDelay`, else fail for good, or start `config.fallback`."""
        rt, call = self.rt, work.call
        cfg = rt.graph.nodes[work.node].spec.config
        retry = call.attempt <= cfg.max_retries and out.retryable
        if retry and rt.stopping:
            return  # it would have been retried: it stays pending, as a retry due now would
        if retry:
            delay = cfg.delay_before(call.attempt + 1)
            rt.emit(
                ev.NodeRetry(
                    time.time(), call.node, call.attempt, delay, out.error_type, out.message,
                    out.traceback, group(work), call.index, out.logs, cfg.max_retries + 1,
                )
            )  # fmt: skip
            again = dataclasses.replace(call, attempt=call.attempt + 1)
            rt.retry_later(dataclasses.replace(work, call=again), delay)
            return
        failed = work.fallback_for
        fb = cfg.fallback if failed is None and not rt.stopping else None
        rt.emit(
            ev.NodeFailed(
                time.time(), call.node, call.attempt, out.duration_ms, out.error_type,
                out.message, out.traceback, group(work), call.index, fb is None,
                None if failed is None else failed.call.node, out.logs,
            )
        )  # fmt: skip
        if fb is not None:
            self._start_fallback(work, fb, out)
        elif failed is not None:
            failed.owner.failed(failed, work.first_error or out)
        else:
            self.failed(work, out)

    def _start_fallback(self, work: Work, fb: str, out: Outcome) -> None:
        node = self.rt.graph.nodes[fb]
        # The fallback receives the failed node's input, never its params.
        kwargs = with_kwargs(work.input_kwargs or {}, node.spec.params)
        call = Call(fb, node.task_uses, work.call.args, kwargs, 1, work.call.index,
                    node.spec.config.timeout)  # fmt: skip
        self.rt.queue(Work(call, fb, self.rt.kinds[node.node_kind], None, work, out))


def group(work: Work) -> str | None:
    """The group (batch) an item call belongs to, for its events; None for a node's own call."""
    return work.node if work.index is not None else None


class Verbs:
    """The Runtime verbs that only need the run's graph state; the driver and a subflow's
    child run (`kinds.subflow`) share them."""

    context: SharedContext
    router: Router
    sched: Scheduler
    emit: ev.Sink

    graph: Graph
    entries: dict[str, str]  # blueprint node id -> its entry graph node

    def run_failed(self) -> None:
        raise NotImplementedError

    @property
    def kinds(self) -> Mapping[str, NodeKind]:
        raise NotImplementedError

    def start_ready(self) -> None:
        """Start every graph node the scheduler has ready, and announce what it skipped."""
        sched = self.sched
        while True:
            ready = sched.ready()
            for name in ready:
                node = self.graph.nodes[name]
                self.kinds[node.node_kind].start(node)
            if sched.skipped:
                for name in sched.drain_skipped():
                    owner = self.graph.nodes[name].owner
                    if self.entries[owner] == name:  # one event per blueprint node, at its entry
                        self.emit(ev.NodeSkipped(time.time(), owner))
            if not ready or not sched.has_ready():  # (what `ready()` would hand out next)
                return

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
