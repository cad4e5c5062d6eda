"""Expand a `Blueprint` into the `Graph` that runs, and check what spans nodes.

Each blueprint node becomes the graph nodes its kind (`engine.kinds`) says: a task one, a batch
`B` three (`B_scatter` -> `B` (worker template) -> `B_gather`); user edges may name `B` as a
target (meaning its entry, `B_scatter`) or as a source (its exit, `B_gather`). All problems
are collected, then raised together as one `BlueprintError`: duplicate ids, unknown nodes,
references (`inputs`, `inputKey`, `fallback`) to nothing known or to nothing upstream,
cycles, and expressions.
"""

from __future__ import annotations

import dataclasses
import graphlib
import itertools
import re
from collections.abc import Mapping
from typing import Any

from flowrun.blueprint import params
from flowrun.engine.kinds import NodeKind, kind_for
from flowrun.engine.routing import resolve_source
from flowrun.errors import BlueprintError, PathT, Problem
from flowrun.errors import did_you_mean as suggest
from flowrun.expr.compiler import ExprError, compile_expr
from flowrun.model import Blueprint, EdgeSpec, Graph, GraphEdge, GraphNode, NodeSpec

# What an edge expression sees besides node ids; `input` and `result` are flowcraft's names
# (`input` is the output in a transform; `result.output`, `result.action`).
SCOPE_NAMES = ("output", "action", "context", "input", "result")
#: blueprint node id -> its node kind
Kinds = Mapping[str, type[NodeKind]]


class _Checker:
    def __init__(self, bp: Blueprint) -> None:
        self.bp = bp
        self.problems: list[Problem] = []

    def add(
        self, path: PathT, code: str, message: str, *, key: bool = False, at: Any = None
    ) -> None:
        """Record a problem at `path`; `at` (text, 1-based column) points inside a string value."""
        doc = self.bp.document
        if doc is None:
            self.problems.append(Problem(self.bp.file, 1, 1, "$", code, message))
            return
        problem = doc.problem(path, code, message, key=key)
        source = getattr(doc, "text", None)  # the loader's Document keeps it; a stand-in may not
        if at is not None and isinstance(source, str):
            column = _column_in_value(source, problem.line, problem.column, *at)
            problem = dataclasses.replace(problem, column=column or problem.column)
        self.problems.append(problem)


#: what YAML counts as a line break (compiled on first use, by `re`, for an error message)
_LINE_BREAK = r"\r\n|[\r\n\x85\u2028\u2029]"


def _column_in_value(source: str, line: int, column: int, text: str, offset: int) -> int | None:
    """The file column of character `offset` (1-based) of the string `text`, whose value starts
    at `line`:`column`; None unless the value is written on one line exactly as `text` (plain
    or quoted, no escapes), the only case where the two kinds of column line up."""
    lines = re.split(_LINE_BREAK, source)
    if re.search(_LINE_BREAK, text) or not 0 < line <= len(lines):
        return None
    raw, start = lines[line - 1], column - 1
    if raw[start : start + 1] in ("'", '"'):
        start += 1
    return start + offset if raw.startswith(text, start) else None


def expand(bp: Blueprint, *, chain: tuple[str, ...] = ()) -> Graph:
    """Build the expanded graph; raise `BlueprintError` listing every problem found. `chain`
    holds the files of the blueprints whose subflows led here (to refuse a cycle)."""
    chk = _Checker(bp)
    specs = params.compile_all(bp, _unique_nodes(bp, chk), chk.add)
    # Each node's kind, asked once: every stage below needs it for every node.
    kinds = {sid: kind_for(s) for sid, s in specs.items()}
    nodes = _graph_nodes(specs, kinds)
    producers = _producers(specs, kinds, chk)
    edges = _edges(bp, specs, kinds, nodes, chk)
    fallbacks = _check_fallbacks(specs, kinds, edges, chk)
    _check_run_if(specs, kinds, chk)
    expressions = _node_expressions(specs, kinds, bp, chk)
    children = _children(specs, kinds, bp, chain, chk)
    preds, succs = _index(nodes, edges)
    order = _order(nodes, preds, bp, chk)
    if order:
        _check_sources(specs, kinds, producers, preds, bp, chk)
    _check_files_and_pools(specs, kinds, bp, chk)
    if chk.problems:
        raise BlueprintError(sorted(chk.problems, key=lambda p: (p.line, p.column)))
    return Graph(
        blueprint=bp,
        nodes=nodes,
        edges=tuple(edges),
        order=tuple(order),
        preds=preds,
        succs=succs,
        fallbacks=frozenset(fallbacks),
        exits={sid: kinds[sid].exit(s) for sid, s in specs.items()},
        expressions=expressions,
        children=children,
        output_keys={sid: kinds[sid].output_key(s) for sid, s in specs.items()},
    )


def _unique_nodes(bp: Blueprint, chk: _Checker) -> dict[str, NodeSpec]:
    specs: dict[str, NodeSpec] = {}
    for spec in bp.nodes:
        if spec.id in specs:
            first = chk.bp.document.where(specs[spec.id].path) if chk.bp.document else (0, 0)
            chk.add(
                (*spec.path, "id"),
                "duplicate-id",
                f"node id '{spec.id}' is used twice (first at line {first[0]}); ids must be unique",
            )
            continue
        specs[spec.id] = spec
    return specs


def _graph_nodes(specs: Mapping[str, NodeSpec], kinds: Kinds) -> dict[str, GraphNode]:
    nodes: dict[str, GraphNode] = {}
    for sid, spec in specs.items():
        for node in kinds[sid].graph_nodes(spec):
            nodes[node.id] = node
    return nodes


def _producers(specs: Mapping[str, NodeSpec], kinds: Kinds, chk: _Checker) -> dict[str, str]:
    """Run-context keys that nodes write -> the graph node that writes them."""
    out = {sid: kinds[sid].exit(s) for sid, s in specs.items()}
    for sid, spec in specs.items():
        kind = kinds[sid]
        key, writer = kind.output_key(spec), out[sid]
        if key == sid:
            continue
        if key in out and out[key] != writer:
            chk.add(
                (*spec.path, kind.name, "outputKey"),
                "output-key-clash",
                f"{kind.name} '{sid}' writes outputKey '{key}', which is already the output of "
                f"node '{key}'; choose another outputKey",
            )
        out.setdefault(key, writer)
    return out


def _edge_end(name: str, spec: NodeSpec | None, *, as_source: bool) -> str:
    if spec is None:
        return name
    kind = kind_for(spec)
    return kind.exit(spec) if as_source else kind.entry(spec)


def _edges(
    bp: Blueprint,
    specs: Mapping[str, NodeSpec],
    kinds: Kinds,
    nodes: Mapping[str, GraphNode],
    chk: _Checker,
) -> list[GraphEdge]:
    edges: list[GraphEdge] = []
    names = [*SCOPE_NAMES, *(n for n in [*specs, *bp.context] if n.isidentifier())]
    for sid, spec in specs.items():
        edges += kinds[sid].internal_edges(spec)
    for espec in bp.edges:
        src = _endpoint(espec, "source", specs, nodes, chk)
        dst = _endpoint(espec, "target", specs, nodes, chk)
        cond = _compile(espec, "condition", names, chk)
        tran = _compile(espec, "transform", names, chk)
        if src is None or dst is None:
            continue
        if src == dst:
            chk.add(espec.path, "self-loop", f"edge {espec.source} -> {espec.target} loops back")
            continue
        edges.append(GraphEdge(src, dst, espec.action, cond, tran, espec))
    return edges


def _endpoint(
    espec: EdgeSpec,
    field: str,
    specs: Mapping[str, NodeSpec],
    nodes: Mapping[str, GraphNode],
    chk: _Checker,
) -> str | None:
    name: str = getattr(espec, field)
    as_source = field == "source"
    resolved = _edge_end(name, specs.get(name), as_source=as_source)
    node = nodes.get(resolved)
    if node is None:
        chk.add(
            (*espec.path, field),
            "unknown-node",
            f"edge {field} '{name}' is not a node{suggest(name, nodes)}",
        )
        return None
    owner = specs.get(node.owner)
    if owner is not None and name != owner.id:
        kind = kind_for(owner)
        end = kind.exit(owner) if as_source else kind.entry(owner)
        if resolved != end:
            chk.add(
                (*espec.path, field),
                f"{kind.name}-internal",
                f"edge {field} '{name}' is inside {kind.name} '{owner.id}'; use '{owner.id}' "
                f"or '{end}'",
            )
            return None
    return resolved


def _compile(espec: EdgeSpec, field: str, names: list[str], chk: _Checker) -> Any:
    text = getattr(espec, field)
    if text is None:
        return None
    try:
        return compile_expr(text, names, kind=field)
    except ExprError as exc:
        message = f"{field} {_quoted(text)}: {exc.message}"
        chk.add((*espec.path, field), f"expr-{field}", message, at=(text, exc.column))
        return None


def _quoted(text: str, width: int = 120) -> str:
    """`repr(text)`, cut short for a long expression (the location says where it is)."""
    return repr(text) if len(text) <= width else repr(text[: width - 20]) + "..."


def _node_expressions(
    specs: Mapping[str, NodeSpec], kinds: Kinds, bp: Blueprint, chk: _Checker
) -> dict[tuple[str, str], Any]:
    """Compile the expressions node stanzas hold (a loop's `while`), keyed (node id, field)."""
    ids = [n for n in [*specs, *bp.context] if n.isidentifier()]
    out: dict[tuple[str, str], Any] = {}
    for sid, spec in specs.items():
        for field, path, text, names in kinds[sid].expressions(spec):
            try:
                out[(spec.id, field)] = compile_expr(text, [*names, *ids], kind=field)
            except ExprError as exc:
                message = f"{field} {_quoted(text)}: {exc.message}"
                chk.add((*spec.path, *path), f"expr-{field}", message, at=(text, exc.column))
    return out


def _children(
    specs: Mapping[str, NodeSpec],
    kinds: Kinds,
    bp: Blueprint,
    chain: tuple[str, ...],
    chk: _Checker,
) -> dict[str, Graph]:
    """Expand the blueprints that nodes run as subflows; a child's problems name its file."""
    out: dict[str, Graph] = {}
    for sid, spec in specs.items():
        child, problems = kinds[sid].child(spec, bp, chain)
        chk.problems += problems
        if child is not None:
            out[spec.id] = child
    return out


def _check_fallbacks(
    specs: Mapping[str, NodeSpec], kinds: Kinds, edges: list[GraphEdge], chk: _Checker
) -> set[str]:
    wired = {e.source for e in edges} | {e.target for e in edges}
    fallbacks: set[str] = set()
    for spec in specs.values():
        fb = spec.config.fallback
        if fb is None:
            continue
        where = (*spec.path, "config", "fallback")
        target = specs.get(fb)
        if target is None:
            chk.add(where, "unknown-fallback", f"fallback '{fb}' is not a node{suggest(fb, specs)}")
        elif fb == spec.id:
            chk.add(where, "self-fallback", f"node '{fb}' cannot be its own fallback")
        elif not kinds[fb].can_stand_in:
            name = kinds[fb].name
            chk.add(where, f"{name}-fallback", f"fallback '{fb}' is a {name}; use a task node")
        elif fb in wired:
            chk.add(
                where,
                "wired-fallback",
                f"fallback '{fb}' has edges; a fallback node runs only in place of a failed "
                "node, so remove its edges",
            )
        else:
            fallbacks.add(fb)
    return fallbacks


def _check_run_if(specs: Mapping[str, NodeSpec], kinds: Kinds, chk: _Checker) -> None:
    for sid, spec in specs.items():
        kind = kinds[sid]
        if spec.config.run_if != "success" and kind.name != "task":
            chk.add(
                (*spec.path, "config", "runIf"),
                "run-if-kind",
                f"config.runIf applies to task nodes; '{spec.id}' is a {kind.name} (put a task "
                "with runIf after it instead)",
            )


def _index(
    nodes: Mapping[str, GraphNode], edges: list[GraphEdge]
) -> tuple[dict[str, tuple[GraphEdge, ...]], dict[str, tuple[GraphEdge, ...]]]:
    into: dict[str, list[GraphEdge]] = {}
    out: dict[str, list[GraphEdge]] = {}
    for edge in edges:
        into.setdefault(edge.target, []).append(edge)
        out.setdefault(edge.source, []).append(edge)
    # Every node has an entry, in node order; most independent nodes share the empty tuple.
    preds: dict[str, tuple[GraphEdge, ...]] = dict.fromkeys(nodes, ())
    succs: dict[str, tuple[GraphEdge, ...]] = dict.fromkeys(nodes, ())
    preds.update((k, tuple(v)) for k, v in into.items())
    succs.update((k, tuple(v)) for k, v in out.items())
    return preds, succs


def _order(
    nodes: Mapping[str, GraphNode],
    preds: Mapping[str, tuple[GraphEdge, ...]],
    bp: Blueprint,
    chk: _Checker,
) -> list[str]:
    order = _static_order(nodes, preds)
    if order is not None:
        return order
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name in nodes:
        sorter.add(name, *(e.source for e in preds[name]))
    try:
        return list(sorter.static_order())  # raises: graphlib names the cycle
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        # Name batches as the user wrote them: B, not B_scatter -> B -> B_gather.
        names = [nodes[n].owner for n in cycle]
        shown = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
        shown += shown[-1:] if len(shown) == 1 else []  # a batch feeding itself: B -> B
        chk.add(
            _cycle_location(cycle, nodes, preds),
            "cycle",
            f"edges form a cycle: {' -> '.join(shown)}; a blueprint must be acyclic, so remove "
            "one of these edges",
        )
        return []


def _static_order(
    nodes: Mapping[str, GraphNode], preds: Mapping[str, tuple[GraphEdge, ...]]
) -> list[str] | None:
    """The order `graphlib.TopologicalSorter.static_order()` gives when each node is added
    with its edges' sources, in the order of `nodes` (so the run starts nodes in the same
    order), without an object per node; None when the edges form a cycle."""
    waiting: dict[str, int] = {}  # the sorter's nodes, in the order it first saw each
    succs: dict[str, list[str]] = {}
    for name in nodes:
        sources = preds[name]
        waiting[name] = waiting.get(name, 0) + len(sources)
        for edge in sources:
            source = edge.source
            if source not in waiting:
                waiting[source] = 0
            found = succs.get(source)
            if found is None:
                succs[source] = [name]
            else:
                found.append(name)
    order: list[str] = []
    ready = [name for name, n in waiting.items() if n == 0]
    while ready:
        order += ready
        after: list[str] = []
        for name in ready:
            for succ in succs.get(name, ()):
                left = waiting[succ] = waiting[succ] - 1
                if left == 0:
                    after.append(succ)
        ready = after
    return order if len(order) == len(waiting) else None


def _cycle_location(
    cycle: list[str], nodes: Mapping[str, GraphNode], preds: Mapping[str, tuple[GraphEdge, ...]]
) -> PathT:
    """The blueprint edge that closes `cycle` (a -> b -> ... -> a), else the first node's path."""
    for source, target in reversed(list(itertools.pairwise(cycle))):
        for edge in preds[target]:
            if edge.source == source and edge.spec is not None:
                return edge.spec.path
    return nodes[cycle[0]].spec.path


def _check_sources(
    specs: Mapping[str, NodeSpec],
    kinds: Kinds,
    producers: Mapping[str, str],
    preds: Mapping[str, tuple[GraphEdge, ...]],
    bp: Blueprint,
    chk: _Checker,
) -> None:
    known = set(producers) | set(bp.context)
    for sid, spec in specs.items():
        kind = kinds[sid]
        reader = kind.reader(spec)
        for path, text in kind.reads(spec):
            src = resolve_source(text, known)
            if src is None:
                chk.add(
                    path,
                    "unknown-source",
                    f"node '{spec.id}' reads '{text}', which is not a node, a batch outputKey "
                    f"or a context key{suggest(text, known)}; declare it under `context:` "
                    "(null is fine) if --set or a node supplies it",
                )
                continue
            for part in src.rest:
                if why := _bad_index(part):
                    chk.add(path, "bad-index", f"node '{spec.id}' reads '{text[:80]}': {why}")
            writer = producers.get(src.key)
            if (
                writer is not None
                and src.key not in bp.context
                and not _upstream(writer, reader, preds)
            ):
                chk.add(
                    path,
                    "not-upstream",
                    f"node '{spec.id}' reads '{src.key}', but '{src.key}' does not run before "
                    f"it; add an edge from '{src.key}' (directly or through other nodes)",
                )


MAX_INDEX_DIGITS = 100  # a longer digit string is no list index, and slow to convert


def _bad_index(part: str) -> str | None:
    """Why a part of an input path that reads as a list index cannot be one, else None."""
    digits = part.removeprefix("-")
    if not digits.isdigit():
        return None
    if not digits.isascii():
        return f"'{part[:20]}' is not an index: write list indices with the digits 0-9"
    if len(digits) > MAX_INDEX_DIGITS:
        return f"the index {part[:20]}... has {len(digits):,} digits (at most {MAX_INDEX_DIGITS})"
    return None


def _check_files_and_pools(
    specs: Mapping[str, NodeSpec], kinds: Kinds, bp: Blueprint, chk: _Checker
) -> None:
    base = bp.document.path.parent if bp.document is not None else None
    for sid, spec in specs.items():
        for path, code, message in kinds[sid].problems(spec, base):
            chk.add(path, code, message)
        for where, pool in _pool_refs(spec):
            if pool not in bp.pools:
                chk.add(
                    where,
                    "unknown-pool",
                    f"node '{spec.id}' names pool '{pool}', which is not under `pools:`"
                    f"{suggest(pool, bp.pools)}",
                )


def _pool_refs(spec: NodeSpec) -> list[tuple[PathT, str]]:
    refs: list[tuple[PathT, str]] = []
    if spec.config.pool is not None:
        refs.append(((*spec.path, "config", "pool"), spec.config.pool))
    if spec.batch is not None and spec.batch.pool is not None:
        refs.append(((*spec.path, "batch", "pool"), spec.batch.pool))
    return refs


def _upstream(writer: str, reader: str, preds: Mapping[str, tuple[GraphEdge, ...]]) -> bool:
    """Is `writer` an ancestor of `reader`? Depth-first, stopping at the first hit."""
    seen: set[str] = set()
    stack = [reader]
    while stack:
        for edge in preds[stack.pop()]:
            if edge.source == writer:
                return True
            if edge.source not in seen:
                seen.add(edge.source)
                stack.append(edge.source)
    return False
