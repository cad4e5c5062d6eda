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
    known = _KIND_OF.get(id(spec))
    if known is not None and known[0] is spec:
        return known[1]
    for kind in KINDS:
        if kind.claims(spec):
            if len(_KIND_OF) >= _KIND_OF_MAX:
                _KIND_OF.clear()
            _KIND_OF[id(spec)] = (spec, kind)
            return kind
    raise TypeError(f"no node kind claims node {spec.id!r}")


#: id(spec) -> (the spec, its kind): expanding a blueprint asks for each node's kind about ten
#: times; bounded, so a long-lived process that loads many blueprints does not keep them all
_KIND_OF: dict[int, tuple[NodeSpec, type[NodeKind]]] = {}
_KIND_OF_MAX = 100_000


__all__ = ["BY_NAME", "KINDS", "NodeKind", "Runtime", "Stored", "Work", "entries_of", "kind_for"]
