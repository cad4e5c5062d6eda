"""Which nodes a run runs: `--target` (those and what they need) and `--from` (those and what
follows them, re-run on `--resume`). Decided before the run starts, on the graph alone.

Names are blueprint node ids (a batch by its id). `targeted` gives the graph cut down to the
selected nodes, so the engine never sees the rest; `downstream` gives the ids whose stored
results `--from` throws away.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from flowrun.errors import UsageError
from flowrun.errors import did_you_mean as suggest
from flowrun.model import Graph, GraphEdge


def check_names(graph: Graph, names: Sequence[str], flag: str) -> None:
    """A `UsageError` listing every name that is not a node (with a suggestion)."""
    known = [spec.id for spec in graph.blueprint.nodes]
    wrong = [n for n in names if n not in known]
    if wrong:
        each = [f"{flag} {n}: no node '{n}' in the blueprint{suggest(n, known)}" for n in wrong]
        raise UsageError("; ".join(each))


def _user(graph: Graph, name: str) -> str:
    return graph.nodes[name].batch or name


def _walk(graph: Graph, starts: Iterable[str], *, up: bool) -> set[str]:
    """Graph node ids reachable from `starts` (user ids) against (`up`) or along the edges."""
    stack = [n for s in starts for n in _parts(graph, s)]
    seen = set(stack)
    while stack:
        name = stack.pop()
        edges = graph.preds[name] if up else graph.succs[name]
        for edge in edges:
            nxt = edge.source if up else edge.target
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _parts(graph: Graph, user_id: str) -> list[str]:
    batch = f"{user_id}_scatter"
    if batch in graph.nodes:
        return [batch, user_id, f"{user_id}_gather"]
    return [user_id]


def selected(graph: Graph, targets: Sequence[str]) -> set[str]:
    """User node ids that run for `--target`: the targets, their ancestors, their fallbacks."""
    check_names(graph, targets, "--target")
    users = {_user(graph, n) for n in _walk(graph, targets, up=True)}
    fallbacks = {s.config.fallback for s in graph.blueprint.nodes if s.id in users}
    return users | {f for f in fallbacks if f is not None}


def targeted(graph: Graph, keep: set[str]) -> Graph:
    """The graph with only the nodes in `keep` (user ids) and the edges between them."""
    nodes = {k: v for k, v in graph.nodes.items() if _user(graph, k) in keep}

    def inside(edges: tuple[GraphEdge, ...]) -> tuple[GraphEdge, ...]:
        return tuple(e for e in edges if e.source in nodes and e.target in nodes)

    bp = dataclasses.replace(
        graph.blueprint, nodes=tuple(s for s in graph.blueprint.nodes if s.id in keep)
    )
    return dataclasses.replace(
        graph,
        blueprint=bp,
        nodes=nodes,
        edges=inside(graph.edges),
        order=tuple(n for n in graph.order if n in nodes),
        preds={k: inside(v) for k, v in graph.preds.items() if k in nodes},
        succs={k: inside(v) for k, v in graph.succs.items() if k in nodes},
        fallbacks=frozenset(f for f in graph.fallbacks if f in keep),
    )


def downstream(graph: Graph, starts: Sequence[str]) -> set[str]:
    """User node ids at or after `starts` (`--from`)."""
    check_names(graph, starts, "--from")
    return {_user(graph, n) for n in _walk(graph, starts, up=False)}
