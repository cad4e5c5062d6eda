"""A loop: call the body again and again, iteration k+1 with iteration k's output, while the
`while` expression (seeing `output`, `iteration`, `context`) is true; the node's output is the
last iteration's. Iterations run one at a time as `poll#1`, `poll#2`, ... (`ctx.index` is the
iteration number), with the node's `config` (retries, timeout) applying to each.

For the store, the display and the report an iteration is one item of the loop's group: the
loop emits `BatchStarted` (total: `maxIterations`) and `BatchFinished`, so it shows as one row
with its own progress, its iterations are recorded as they finish, and `--resume` continues
after the last recorded iteration without calling it again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from flowrun import events as ev
from flowrun.engine.invoke import Call, Outcome
from flowrun.engine.kinds.base import NodeKind, Runtime, Work
from flowrun.engine.kinds.task import Task
from flowrun.engine.routing import InputError
from flowrun.engine.scheduler import Status
from flowrun.errors import PathT
from flowrun.expr.compiler import ExprEvalError
from flowrun.model import GraphNode, Kind, LoopSpec, NodeSpec

WHILE_NAMES = ("output", "iteration", "context")


def iteration_id(loop: str, k: int) -> str:
    return f"{loop}#{k}"


class Loop(NodeKind):
    name: ClassVar[str] = "loop"
    can_stand_in: ClassVar[bool] = False

    # -- load time ---------------------------------------------------------------------------
    @classmethod
    def claims(cls, spec: NodeSpec) -> bool:
        return spec.loop is not None

    @classmethod
    def graph_nodes(cls, spec: NodeSpec) -> list[GraphNode]:
        return [GraphNode(spec.id, Kind.LOOP, spec, None, cls.name)]

    @classmethod
    def reads(cls, spec: NodeSpec) -> Sequence[tuple[PathT, str]]:
        return Task.reads(spec)

    @classmethod
    def expressions(cls, spec: NodeSpec) -> Sequence[tuple[str, PathT, str, Sequence[str]]]:
        while_ = spec.loop.while_ if spec.loop is not None else ""
        return [("while", ("loop", "while"), while_, WHILE_NAMES)]

    # -- run time ----------------------------------------------------------------------------
    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self.counts: dict[str, tuple[int, int]] = {}  # loop -> (succeeded, failed) iterations

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
        self.counts[node.id] = (last, 0)
        rt.emit(ev.BatchStarted(time.time(), node.id, spec.max_iterations, last))
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
        if delay > 0:
            self.rt.retry_later(work, delay)
        else:
            self.rt.queue(work)

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
