"""What flows along the graph at run time: a node's input, and which edges its output takes.

Pure functions of the graph, the live run context and the values the scheduler recorded on
taken edges; the driver calls them, and nothing here runs nodes or emits events.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from flowrun.engine.scheduler import Scheduler
from flowrun.frozen import Frozen, fast_frozen
from flowrun.model import Expression, Graph, GraphEdge, GraphNode


@fast_frozen
class Source(Frozen):
    """Where a node's `inputs`/`inputKey` reads: a run-context key, then a path inside it."""

    key: str
    rest: tuple[str, ...] = ()

    def read(self, context: Mapping[str, Any]) -> Any:
        value = context[self.key]
        for part in self.rest:
            if isinstance(value, Mapping):
                value = value[part]
            elif isinstance(value, list | tuple) and part.lstrip("-").isdigit() and part.isascii():
                value = value[int(part)]
            else:
                raise KeyError(part)
        return value


def resolve_source(text: str, known: Collection[str]) -> Source | None:
    """Split `fetch.body.items` into the longest known key and the path after it. `known` is
    used as given (pass a set: this runs once per reference of a 10,000-node blueprint)."""
    if text in known:
        return Source(text)
    parts = text.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        key = ".".join(parts[:cut])
        if key in known:
            return Source(key, tuple(parts[cut:]))
    return None


class InputError(Exception):
    """A node's input names nothing, or something with no value (it did not run)."""


class Scope(Mapping[str, Any]):
    """Names an expression sees: output, action, context, and node outputs by id (a batch's id
    reads its `outputKey`)."""

    __slots__ = ("_aliases", "_context", "_local")

    def __init__(
        self, local: dict[str, Any], context: Mapping[str, Any], aliases: Mapping[str, str]
    ) -> None:
        self._local = local
        self._context = context
        self._aliases = aliases

    def __getitem__(self, key: str) -> Any:
        if key in self._local:
            return self._local[key]
        return self._context[self._aliases.get(key, key)]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._context, **dict.fromkeys(self._aliases), **self._local})

    def __len__(self) -> int:
        return len(set(self._context) | set(self._aliases) | set(self._local))


#: id(graph) -> (the graph, its aliases (node id -> output key where they differ), the names
#: its sources may start with whatever the run context holds, and the sources resolved among
#: those alone): worked out once per graph, not once per router (a batch over a subflow makes
#: a router per child run)
_Shape = tuple[Graph, dict[str, str], frozenset[str], dict[str, Source]]
_SHAPES: dict[int, _Shape] = {}


def _shape(graph: Graph) -> _Shape:
    aliases = {k: v for k, v in graph.output_keys.items() if k != v}
    # Declared context keys are in every run context of the graph from its start on.
    known = frozenset(
        {n.id for n in graph.blueprint.nodes} | set(aliases.values()) | set(graph.blueprint.context)
    )
    return graph, aliases, known, {}


class Router:
    """Reads inputs out of the run context `ctx` (the driver's live dict) and evaluates edges."""

    def __init__(self, graph: Graph, ctx: Mapping[str, Any], sched: Scheduler) -> None:
        self.graph = graph
        self.ctx = ctx
        self.sched = sched
        shape = _SHAPES.get(id(graph))
        if shape is None or shape[0] is not graph:
            shape = _SHAPES[id(graph)] = _shape(graph)
        _, self._aliases, self._known, self._shared = shape
        self._sources: dict[str, Source | None] = {}

    def read(self, text: str) -> Any:
        """The value at `text` (a key, or a dotted path into one); `InputError` if none."""
        src = self._sources.get(text) or self._shared.get(text)
        if src is None:
            known = self._known
            src = resolve_source(text, known | set(self.ctx))
            self._sources[text] = src
            if src is not None and text in known:  # found whatever the context holds
                self._shared[text] = src
        if src is None:
            raise InputError(f"'{text}' names nothing in the run context")
        try:
            return src.read(self.ctx)
        except (KeyError, IndexError, TypeError) as exc:
            why = "it did not run or set no value" if src.key not in self.ctx else f"no {exc}"
            raise InputError(f"'{text}' has no value ({why})") from exc

    def input(self, node: GraphNode) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(args, kwargs) for a task node: its `inputs`, else its predecessors' values."""
        inputs = node.spec.inputs
        if inputs is not None:
            if isinstance(inputs, str):
                return (self.read(inputs),), {}
            if isinstance(inputs, Mapping):
                return (), {k: self.read(v) for k, v in inputs.items()}
        preds = self.graph.preds[node.id]
        if not preds:  # a node no edge enters (most of a wide DAG)
            return (), {}
        sources = {e.source for e in preds}
        taken = self.sched.inputs(node.id)
        if not taken:  # a `runIf: failure|always` node whose predecessors gave nothing
            return (), {}
        if len(sources) == 1:
            return (next(iter(taken.values())),), {}
        return ({self.graph.nodes[k].owner: v for k, v in taken.items()},), {}

    def evaluate(self, expr: Expression, local: dict[str, Any]) -> Any:
        """Evaluate a node stanza's expression with `local` names over the run context."""
        return expr.evaluate(Scope(local, self.ctx, self._aliases))

    def edges(self, source: str, output: Any, action: str | None) -> dict[str, Any]:
        """`{target: value sent}` for the edges of `source` that are taken (SPEC §1 Edges): the
        edges of the action returned, and only when none of those was taken, the default edges
        (those without `action`). Raises `ExprEvalError` when a condition or transform fails."""
        succs = self.graph.succs[source]
        if not succs:
            return {}  # a final node (every node of a one-node child run)
        taken = self._take([e for e in succs if e.action is not None and e.action == action],
                           source, output, action)  # fmt: skip
        if not taken:
            taken = self._take([e for e in succs if e.action is None], source, output, action)
        return taken

    def _take(
        self, edges: list[GraphEdge], source: str, output: Any, action: str | None
    ) -> dict[str, Any]:
        taken: dict[str, Any] = {}
        scope = None
        for edge in edges:
            if edge.target in taken:
                continue
            if edge.condition is None and edge.transform is None:
                taken[edge.target] = output
                continue
            if scope is None:
                local = {"output": output, "action": action, "context": self.ctx}
                local["input"] = output  # flowcraft's name for it in a transform
                local["result"] = {"output": output, "action": action}
                scope = Scope(local, self.ctx, self._aliases)
            if edge.condition is not None and not edge.condition.evaluate(scope):
                continue
            taken[edge.target] = edge.transform.evaluate(scope) if edge.transform else output
        return taken
