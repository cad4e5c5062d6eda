"""A loop: call the body again and again, iteration k+1 with iteration k's output, while the
`while` expression (seeing `output`, `iteration`, `context`) is true; the node's output is the
last iteration's. Iterations run one at a time as `poll#1`, `poll#2`, ... (`ctx.index` is the
iteration number), with the node's `config` (retries, timeout) applying to each.

For the store, the display and the report an iteration is one item of the loop's group: the
loop emits `BatchStarted` (total: `maxIterations`) and `BatchFinished`, so it shows as one row
with its own progress, its iterations are recorded as they finish, and `--resume` continues
after the last recorded iteration without calling it again.

With `loop.subflow` each iteration is one child run (`kinds.subflow.ChildRun`) whose `input`
is the previous iteration's output (at first the node's input): its nodes are `poll#k/child`,
recorded like any child run's, so `--resume` re-runs only the unfinished nodes of an
unfinished iteration; `config` (retries, timeout as a whole) applies to each child run.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from flowrun import events as ev
from flowrun.engine.invoke import Call, Outcome, json_text
from flowrun.engine.kinds.base import NodeKind, Runtime, Work
from flowrun.engine.kinds.subflow import (
    ChildRun,
    child_context,
    child_failed,
    load_child,
    replay,
    retry_child,
    timed_out,
)
from flowrun.engine.kinds.task import Task
from flowrun.engine.routing import InputError
from flowrun.engine.scheduler import Status
from flowrun.errors import PathT, Problem
from flowrun.expr.compiler import ExprEvalError
from flowrun.model import Blueprint, Graph, GraphNode, Kind, LoopSpec, NodeSpec

WHILE_NAMES = ("output", "iteration", "context")


def iteration_id(loop: str, k: int) -> str:
    return f"{loop}#{k}"


class Loop(NodeKind):
    name: ClassVar[str] = "loop"
    can_stand_in: ClassVar[bool] = False
    fills: ClassVar[bool] = True  # pumps the child runs of `loop.subflow` iterations

    # -- load time ---------------------------------------------------------------------------
    @classmethod
    def claims(cls, spec: NodeSpec) -> bool:
        return spec.loop is not None

    @classmethod
    def graph_nodes(cls, spec: NodeSpec) -> list[GraphNode]:
        return [GraphNode(spec.id, Kind.LOOP, spec, None, cls.name)]

    @classmethod
    def reads(cls, spec: NodeSpec) -> Sequence[tuple[PathT, str]]:
        sub = spec.loop.subflow if spec.loop is not None else None
        if sub is None:
            return Task.reads(spec)
        at = (*spec.path, "loop", "subflow", "inputs")
        return [*Task.reads(spec), *[((*at, k), v) for k, v in sub.inputs.items()]]

    @classmethod
    def child(
        cls, spec: NodeSpec, bp: Blueprint, chain: tuple[str, ...]
    ) -> tuple[Graph | None, list[Problem]]:
        if spec.loop is None or spec.loop.subflow is None:
            return None, []
        return load_child(spec, spec.loop.subflow, bp, chain, (*spec.path, "loop", "subflow"))

    @classmethod
    def expressions(cls, spec: NodeSpec) -> Sequence[tuple[str, PathT, str, Sequence[str]]]:
        while_ = spec.loop.while_ if spec.loop is not None else ""
        return [("while", ("loop", "while"), while_, WHILE_NAMES)]

    # -- run time ----------------------------------------------------------------------------
    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self.counts: dict[str, tuple[int, int]] = {}  # loop -> (succeeded, failed) iterations
        #: loop over a subflow -> (its open iteration's child run, that iteration's attempt)
        self.children: dict[str, tuple[ChildRun, Work]] = {}
        self.inputs: dict[str, dict[str, Any]] = {}  # loop -> what `subflow.inputs` read

    @staticmethod
    def _spec(node: GraphNode) -> LoopSpec:
        return node.loop_spec

    def start(self, node: GraphNode) -> None:
        rt = self.rt
        try:
            args, kwargs = rt.router.input(node)
        except InputError as exc:
            rt.fail_inline(node.id, "InputError", str(exc), node.id)
            return
        done = rt.stored.items.get(node.id, {})
        last = 0
        while last + 1 in done:  # iterations an earlier run finished, in order
            last += 1
        spec = self._spec(node)
        if spec.subflow is not None:
            try:
                reads = spec.subflow.inputs.items()
                self.inputs[node.id] = {k: rt.router.read(v) for k, v in reads}
            except InputError as exc:
                rt.fail_inline(node.id, "InputError", str(exc), node.id)
                return
        self.counts[node.id] = (last, 0)
        rt.emit(ev.BatchStarted(time.time(), node.id, spec.max_iterations, last))
        if last and spec.subflow is not None:
            replay(rt, {iteration_id(node.id, k) for k in range(1, last + 1)})
        if last:
            self._next(node, last, done[last], None)
            return
        self._iterate(node, 1, args, kwargs, delay=0.0)

    def _iterate(
        self, node: GraphNode, k: int, args: tuple[Any, ...], kwargs: dict[str, Any], delay: float
    ) -> None:
        spec = self._spec(node)
        call = Call(iteration_id(node.id, k), spec.uses, args, {**kwargs, **spec.params}, 1, k,
                    node.spec.config.timeout)  # fmt: skip
        work = Work(call, node.id, self, k, input_kwargs=kwargs)
        if spec.subflow is not None:
            call.kwargs = {}  # a fallback standing in for the iteration gets its input
            if delay > 0:
                self.rt.later(delay, lambda: self._open(work, node, 1))
            else:
                self._open(work, node, 1)
            return
        if delay > 0:
            self.rt.retry_later(work, delay)
        else:
            self.rt.queue(work)

    # -- `loop.subflow`: each iteration is a child run ------------------------------------------
    def _open(self, work: Work, node: GraphNode, attempt: int) -> None:
        """Start attempt `attempt` of iteration `work.index` as a child run."""
        rt, call = self.rt, work.call
        call.attempt = attempt
        graph = rt.graph.children[node.id]
        value = call.args[0] if call.args else (dict(work.input_kwargs or {}) or None)
        context = child_context(graph, value, self.inputs.get(node.id, {}))
        child = ChildRun(rt, call.node, graph, context, fails_run=False)
        if node.spec.config.timeout is not None:
            child.limit(node.spec.config.timeout)
        self.children[node.id] = (child, work)
        rt.emit(ev.NodeStarted(time.time(), call.node, attempt, node.id, call.index))

    def fill(self) -> None:
        while self.children and self._pump():
            pass  # an iteration that ended may have opened the next one

    def _pump(self) -> int:
        """Pump every open iteration's child run; how many ended."""
        ended = 0
        for loop, (child, work) in list(self.children.items()):
            child.pump()
            node = self.rt.graph.nodes[loop]
            expired = child.deadline is not None and child.expired()
            if expired:
                out = timed_out(work, node, child)
            elif child.done():
                sub = self._spec(node).subflow
                assert sub is not None
                if child.failed:
                    out = child_failed(work, child, sub)
                else:
                    output = child.output(sub)
                    ms = (time.monotonic() - child.t0) * 1000
                    text = json_text(output)
                    out = Outcome(work.call.node, True, time.time(), ms, output, text)
            else:
                continue
            del self.children[loop]
            ended += 1
            if out.ok:
                self.succeeded(work, out)
            else:
                retry_child(self, work, out, functools.partial(self._open, work))
            if not expired:  # (a timed-out run's calls may still come back to its kinds)
                child.close()
        return ended

    def _next(self, node: GraphNode, k: int, output: Any, action: str | None) -> None:
        """Iteration `k` gave `output`: run iteration k+1, or settle the loop."""
        rt, spec = self.rt, self._spec(node)
        expr = rt.graph.expressions[(node.id, "while")]
        try:
            again = rt.router.evaluate(
                expr, {"output": output, "iteration": k, "context": rt.context.data}
            )
        except ExprEvalError as exc:
            self._fail(node, k, "ExprEvalError", f"loop '{node.id}': {exc}")
            return
        if not again:
            taken = rt.taken_or_fail(node.id, output, action, k)
            if taken is not None:
                self._finished(node.id, "succeeded", output)
                rt.sched.finish(node.id, Status.SUCCEEDED, taken)
            else:
                self._finished(node.id, "failed")
            return
        if k >= spec.max_iterations:
            message = (
                f"loop '{node.id}' reached maxIterations ({spec.max_iterations}) and "
                f"`while` ({spec.while_}) is still true"
            )
            self._fail(node, k, "LoopLimitError", message)
            return
        self._iterate(node, k + 1, (output,), {}, delay=spec.delay)

    def _fail(self, node: GraphNode, k: int, etype: str, message: str) -> None:
        self.rt.emit(ev.NodeFailed(time.time(), node.id, k, 0.0, etype, message, ""))
        self.rt.run_failed()
        self._finished(node.id, "failed")
        self.rt.sched.finish(node.id, Status.FAILED)

    def _finished(self, loop: str, status: str, output: Any = None) -> None:
        ok, failed = self.counts.pop(loop, (0, 0))
        self.rt.emit(
            ev.BatchFinished(time.time(), loop, status, ok + failed, ok, failed, loop, output)
        )

    def _count(self, loop: str, ok: int, failed: int) -> None:
        s, f = self.counts.get(loop, (0, 0))
        self.counts[loop] = (s + ok, f + failed)

    def succeeded(self, work: Work, out: Outcome) -> None:
        call = work.call
        self.rt.emit(
            ev.NodeSucceeded(
                time.time(), call.node, call.attempt, out.duration_ms, work.node, call.index,
                out.action, out.output, out.output_json, False, out.updates, "succeeded",
                out.logs,
            )
        )  # fmt: skip
        self._count(work.node, 1, 0)
        self._next(self.rt.graph.nodes[work.node], call.index or 0, out.output, out.action)

    def failed(self, work: Work, out: Outcome) -> None:
        self._count(work.node, 0, 1)
        self.rt.run_failed()
        self._finished(work.node, "failed")
        self.rt.sched.finish(work.node, Status.FAILED)

    def recovered(self, work: Work, out: Outcome, fallback: str) -> None:
        self.rt.emit(ev.NodeRecovered(time.time(), work.call.node, fallback, out.output))
        self._count(work.node, 1, 0)
        node = self.rt.graph.nodes[work.node]
        self._next(node, work.call.index or 0, out.output, out.action)
