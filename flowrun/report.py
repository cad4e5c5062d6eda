"""The result of a run, as the `--json` document of SPEC §2 describes it, built from events.

`ReportBuilder` is a sink of the event stream like the display, the store and the `--events` file:
the driver holds no report state. It knows no node kind: a node that reports item counts is one
that emitted `BatchStarted`.
"""

from __future__ import annotations

import json
from dataclasses import field
from typing import Any

from flowrun import events as ev
from flowrun.frozen import Mutable, fast_mutable

RUN_STATUSES = ("completed", "failed", "cancelled")


@fast_mutable
class NodeReport(Mutable):
    """One node's line in the run's report."""

    status: str = "pending"
    attempts: int = 0
    duration_ms: float = 0.0
    items: dict[str, int] | None = None  # batches: total / succeeded / failed

    def as_dict(self) -> dict[str, Any]:
        if self.items is not None:
            return {"status": self.status, "items": dict(self.items)}
        out: dict[str, Any] = {"status": self.status, "attempts": self.attempts}
        out["durationMs"] = round(self.duration_ms, 3)
        return out


@fast_mutable
class RunReport(Mutable):
    """What `flowrun.run` returns: the run's status, context, nodes and errors."""

    blueprint: str
    run_id: str
    status: str
    context: dict[str, Any]
    nodes: dict[str, NodeReport]
    errors: list[dict[str, str]] = field(default_factory=list)
    duration_ms: float = 0.0

    @property
    def exit_code(self) -> int:
        return {"completed": 0, "failed": 1, "cancelled": 130}[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {
            "blueprint": self.blueprint,
            "runId": self.run_id,
            "status": self.status,
            "context": self.context,
            "nodes": {k: v.as_dict() for k, v in self.nodes.items()},
            "errors": list(self.errors),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent, allow_nan=False)


def _error(e: ev.NodeFailed) -> dict[str, str]:
    return {"node": e.node, "type": e.error_type, "message": e.message}


class ReportBuilder:
    """Builds the `RunReport` from the events of one run; `report` is set by `RunFinished`.

    Failures are listed in `errors` in the order they became final. A failure that a fallback
    is about to stand in for (`final=False`) is held: the fallback's success drops it, the
    fallback's failure lists the fallback's error and then the held one."""

    def __init__(self) -> None:
        self.report: RunReport | None = None
        self._started: ev.RunStarted | None = None
        self._nodes: dict[str, NodeReport] = {}
        self._errors: list[dict[str, str]] = []
        self._held: dict[str, ev.NodeFailed] = {}
        #: event type -> handler; the bus calls these directly (`events.Bus`)
        self.handlers: dict[type[ev.Event], Any] = {
            ev.RunStarted: self._run_started,
            ev.NodeSucceeded: self._succeeded,
            ev.NodeFailed: self._failed,
            ev.NodeRecovered: self._recovered,
            ev.NodeSkipped: self._skipped,
            ev.BatchStarted: self._batch_started,
            ev.BatchFinished: self._batch_finished,
            ev.RunFinished: self._run_finished,
        }

    def __call__(self, event: ev.Event) -> None:
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _node(self, name: str) -> NodeReport:
        found = self._nodes.get(name)
        if found is None:
            found = self._nodes[name] = NodeReport()
        return found

    def _run_started(self, e: ev.RunStarted) -> None:
        self._started = e
        self._nodes = {name: NodeReport() for name in e.node_ids}

    def _succeeded(self, e: ev.NodeSucceeded) -> None:
        if e.batch is not None:  # an item: counted from `RunFinished.groups`
            return
        duration = 0.0 if e.reused else e.duration_ms
        self._nodes[e.node] = NodeReport(e.status, e.attempt, duration)

    def _failed(self, e: ev.NodeFailed) -> None:
        if not e.final:
            self._held[e.node] = e
            return
        if e.fallback_for is not None:
            self._nodes[e.node] = NodeReport("failed", e.attempt, e.duration_ms)
            self._errors.append(_error(e))
            held = self._held.pop(e.fallback_for, None)
            if held is not None:
                self._settle_failure(held)
            return
        self._settle_failure(e)

    def _settle_failure(self, e: ev.NodeFailed) -> None:
        self._errors.append(_error(e))
        if e.batch is not None:
            items = self._node(e.batch).items
            if items is not None:
                items["failed"] += 1
            return
        rep = self._node(e.node)
        rep.status, rep.attempts, rep.duration_ms = "failed", e.attempt, e.duration_ms

    def _recovered(self, e: ev.NodeRecovered) -> None:
        held = self._held.pop(e.node, None)
        if held is not None and held.batch is not None:
            items = self._node(held.batch).items
            if items is not None:
                items["succeeded"] += 1
            return
        fallback = self._node(e.fallback)
        attempts = held.attempt if held is not None else 0
        self._nodes[e.node] = NodeReport("recovered", attempts, fallback.duration_ms)

    def _skipped(self, e: ev.NodeSkipped) -> None:
        self._node(e.node).status = "skipped"

    def _batch_started(self, e: ev.BatchStarted) -> None:
        rep = self._node(e.node)
        rep.status = "running"
        rep.items = {"total": e.total, "succeeded": e.done, "failed": 0}

    def _batch_finished(self, e: ev.BatchFinished) -> None:
        rep = self._node(e.node)
        rep.status = e.status
        rep.items = {"total": e.total, "succeeded": e.succeeded, "failed": e.failed}

    def _run_finished(self, e: ev.RunFinished) -> None:
        started = self._started
        graph = started.graph if started is not None else None
        for name in getattr(graph, "fallbacks", ()):
            if self._nodes[name].status == "pending":
                self._nodes[name].status = "skipped"  # no node failed that needed it
        for group, (total, succeeded, failed) in e.groups.items():
            rep = self._node(group)
            rep.items = {"total": total, "succeeded": succeeded, "failed": failed}
        for rep in self._nodes.values():
            if rep.status == "running":
                rep.status = "pending"
        self.report = RunReport(
            started.blueprint if started is not None else "",
            started.run_id if started is not None else "",
            e.status,
            dict(e.context),
            self._nodes,
            self._errors,
            e.duration_ms,
        )
