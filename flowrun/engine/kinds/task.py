"""A task: one call of a function per node (`uses`, `params`, `inputs`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import ClassVar

from flowrun import events as ev
from flowrun.engine.invoke import Call, Outcome
from flowrun.engine.kinds.base import NodeKind, Runtime, Work
from flowrun.engine.routing import InputError
from flowrun.engine.scheduler import Status
from flowrun.errors import PathT
from flowrun.expr.template import with_kwargs
from flowrun.model import GraphNode, Kind, NodeSpec


class Task(NodeKind):
    name: ClassVar[str] = "task"
    shares_chunks: ClassVar[bool] = True

    @classmethod
    def claims(cls, spec: NodeSpec) -> bool:
        return spec.batch is None

    @classmethod
    def graph_nodes(cls, spec: NodeSpec) -> list[GraphNode]:
        return [GraphNode(spec.id, Kind.TASK, spec, None, cls.name)]

    @classmethod
    def reads(cls, spec: NodeSpec) -> Sequence[tuple[PathT, str]]:
        if isinstance(spec.inputs, str):
            return [((*spec.path, "inputs"), spec.inputs)]
        if isinstance(spec.inputs, Mapping):
            return [((*spec.path, "inputs", k), v) for k, v in spec.inputs.items()]
        return []

    def start(self, node: GraphNode) -> None:
        rt = self.rt
        if reused(rt, node):
            return
        try:
            args, kwargs = rt.router.input(node)
        except InputError as exc:
            rt.fail_inline(node.id, "InputError", str(exc), node.id)
            return
        spec = node.spec
        params = with_kwargs(kwargs, spec.params)
        call = Call(node.id, node.task_uses, args, params, 1, None, spec.config.timeout)
        rt.queue(Work(call, node.id, self, input_kwargs=kwargs))

    def succeeded(self, work: Work, out: Outcome) -> None:
        rt, call = self.rt, work.call
        # Edges first: a failing condition fails the node, and it must never be announced as
        # succeeded (the display, the store and the events file would say so).
        taken = rt.taken_or_fail(work.node, out.output, out.action, call.attempt)
        if taken is None:
            return
        rt.emit(
            ev.NodeSucceeded(
                time.time(), call.node, call.attempt, out.duration_ms, None, call.index,
                out.action, out.output, out.output_json, False, out.updates, "succeeded",
                out.logs,
            )
        )  # fmt: skip
        rt.sched.finish(work.node, Status.SUCCEEDED, taken)

    def failed(self, work: Work, out: Outcome) -> None:
        self.rt.run_failed()
        self.rt.sched.finish(work.node, Status.FAILED)

    def recovered(self, work: Work, out: Outcome, fallback: str) -> None:
        rt = self.rt
        taken = rt.taken_or_fail(work.node, out.output, out.action, work.call.attempt)
        if taken is None:
            return
        rt.emit(ev.NodeRecovered(time.time(), work.call.node, fallback, out.output))
        rt.sched.finish(work.node, Status.RECOVERED, taken)


def reused(rt: Runtime, node: GraphNode) -> bool:
    """Did an earlier run (`--resume`) finish `node`? Then settle it from what it stored."""
    stored = rt.stored.nodes.get(node.id)
    if stored is None or stored[0] not in ("succeeded", "recovered"):
        return False
    reuse(rt, node, *stored)
    return True


def reuse(rt: Runtime, node: GraphNode, status: str, output: object, action: str | None,
          attempts: int) -> None:  # fmt: skip
    """Settle a node from what an earlier run stored, without calling it again."""
    taken = rt.taken_or_fail(node.id, output, action, attempts)
    if taken is not None:
        rt.emit(
            ev.NodeSucceeded(time.time(), node.id, attempts, output=output, reused=True,
                             status=status)
        )  # fmt: skip
        rt.sched.finish(node.id, Status(status), taken)
