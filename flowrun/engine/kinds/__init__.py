"""Node kinds: each module says how its nodes expand, run, settle, resume and show.

`KINDS` lists them; `kind_for(spec)` is the one that claims a blueprint node. A new kind is a
new module here and one line in `KINDS` (plus its stanza in the schema).
"""

from __future__ import annotations

from flowrun.engine.kinds.base import NodeKind, Runtime, Stored, Work
from flowrun.engine.kinds.batch import Batch
from flowrun.engine.kinds.loop import Loop
from flowrun.engine.kinds.subflow import Subflow
from flowrun.engine.kinds.task import Task
from flowrun.model import Graph, NodeSpec

# Most specific first: the first kind that claims a node is its kind.
KINDS: tuple[type[NodeKind], ...] = (Batch, Loop, Subflow, Task)
BY_NAME: dict[str, type[NodeKind]] = {k.name: k for k in KINDS}


def entries_of(graph: Graph) -> dict[str, str]:
    """Blueprint node id -> the graph node an edge to it enters."""
    return {s.id: kind_for(s).entry(s) for s in graph.blueprint.nodes}


def kind_for(spec: NodeSpec) -> type[NodeKind]:
    """The kind of blueprint node `spec`."""
    for kind in KINDS:
        if kind.claims(spec):
            return kind
    raise TypeError(f"no node kind claims node {spec.id!r}")


__all__ = ["BY_NAME", "KINDS", "NodeKind", "Runtime", "Stored", "Work", "entries_of", "kind_for"]
