"""Render an expanded `Graph` as text for `flowrun graph`: ascii, mermaid, dot or json.

Stdlib only and no layout engine. `ascii` is a layered listing (a node's layer is the longest
path to it from a root) that reads in an 80-column terminal; `mermaid` and `dot` are emitted
by hand and leave the drawing to their renderers; `json` is the machine-readable contract of
SPEC §2. Every piece of user text (ids, `uses`, actions, conditions, transforms) is escaped for
its format, so no label can break the syntax or put a terminal control code on screen.

Nodes come in `Graph.order` and edges in `Graph.edges` order, never in the iteration order of
a mapping or a set, so the same graph always gives the same text.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping

from flowrun.model import Graph, GraphEdge, GraphNode, Kind

__all__ = ["FORMATS", "render"]

FORMATS = ("ascii", "mermaid", "dot", "json")

_WIDTH = 80
_ID_COLUMN_MAX = 28  # ids longer than this push their description right instead of widening all

_ASCII_MARKERS = {
    Kind.SCATTER: ">> scatter",
    Kind.WORKER: "[worker xN]",
    Kind.GATHER: "<< gather",
    Kind.LOOP: "(loop)",
    Kind.SUBFLOW: "[subflow]",
}

# Mermaid resolves `#name;` / `#123;` entity codes before it parses, so every character that
# means something to its lexer inside a quoted label (or could start an entity) is encoded.
_MERMAID_ESCAPES = {
    '"': "#quot;",
    "#": "#35;",
    "&": "#amp;",
    "<": "#lt;",
    ">": "#gt;",
    "|": "#124;",
    "[": "#91;",
    "]": "#93;",
    "(": "#40;",
    ")": "#41;",
    "{": "#123;",
    "}": "#125;",
    "`": "#96;",  # a label opening with a backtick would be read as markdown
    "\\": "#92;",
    # Mermaid drops the last ";" of a line matching `style.*:\S*#.*;` (its own style syntax),
    # which would cut the final entity short; our lines carry no ":" of their own.
    ":": "#58;",
    "\n": "<br/>",
}
# Mermaid's lexer takes any line containing `direction LR` (TB, BT, RL) for a direction
# statement, even inside a quoted label, and drops the rest; an encoded space defuses it.
_MERMAID_DIRECTION = re.compile(r"(direction) ")
_MERMAID_SHAPES = {
    Kind.TASK: ('["', '"]'),
    Kind.SCATTER: ('[/"', '"\\]'),  # trapezoid: fans out
    Kind.WORKER: ('[["', '"]]'),  # subroutine: one call per item
    Kind.GATHER: ('[\\"', '"/]'),  # inverted trapezoid: fans in
    Kind.LOOP: ('(["', '"])'),  # stadium: runs again
    Kind.SUBFLOW: ('[["', '"]]'),  # subroutine: a blueprint of its own
}

_DOT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n"}
_DOT_SHAPES = {
    Kind.TASK: "box",
    Kind.SCATTER: "trapezium",
    Kind.WORKER: "box3d",
    Kind.GATHER: "invtrapezium",
    Kind.LOOP: "doubleoctagon",
    Kind.SUBFLOW: "component",
}


def render(graph: Graph, fmt: str = "ascii", *, expand: bool = False) -> str:
    """Return `graph` drawn in `fmt` (one of `FORMATS`), ending with a newline. With `expand`,
    each subflow's child blueprint is drawn inside it (mermaid subgraph, dot cluster, ascii
    indentation, json nesting), to any depth.

    Raises `ValueError` for an unknown format.
    """
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        expected = ", ".join(FORMATS)
        raise ValueError(f"unknown graph format {fmt!r}; expected one of: {expected}") from None
    return renderer(graph, expand)


# --- escaping -------------------------------------------------------------------------------


def _escape(text: str, table: Mapping[str, str]) -> str:
    """Apply `table` per character; show any other non-printable one as a Python escape."""
    out: list[str] = []
    for ch in text:
        if ch in table:
            out.append(table[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            # ``\x1b`` rather than the raw byte: a control code in a label must stay visible
            # text, and its backslash still goes through the format's own table.
            visible = ch.encode("unicode_escape").decode("ascii")
            out.append("".join(table.get(c, c) for c in visible))
    return "".join(out)


def _plain(text: str) -> str:
    return _escape(text, {})


def _mermaid(text: str) -> str:
    """Text for inside a double-quoted mermaid label; newlines become ``<br/>``."""
    return _MERMAID_DIRECTION.sub(r"\1#32;", _escape(text, _MERMAID_ESCAPES))


def _dot(text: str) -> str:
    """A double-quoted DOT string; newlines become DOT's ``\\n`` line break."""
    return '"' + _escape(text, _DOT_ESCAPES) + '"'


# --- shared pieces --------------------------------------------------------------------------


def _edge_parts(edge: GraphEdge, action_prefix: str = "") -> list[str]:
    """The raw (unescaped) pieces of an edge label: action, condition, transform."""
    parts: list[str] = []
    if edge.action is not None:
        parts.append(action_prefix + edge.action)
    if edge.condition is not None:
        parts.append("if " + edge.condition.source)
    if edge.transform is not None:
        parts.append("transform: " + edge.transform.source)
    return parts


def _edge_text(edge: GraphEdge) -> str:
    """A diagram's edge label, one line per part; empty for a plain edge."""
    return "\n".join(_edge_parts(edge))


def _node_label(node: GraphNode, graph: Graph | None = None) -> str:
    """The raw text of a node's box in a diagram: its id, then what it calls (and its pool)."""
    if (node.spec.subflow is not None and node.kind is Kind.SUBFLOW) or (
        node.kind is Kind.LOOP and _subflow_file(node)
    ):
        label = f"{node.id}\n{_subflow_file(node)}"
    else:
        label = node.id if node.uses is None else f"{node.id}\n{node.uses}"
    pool = _pool(graph, node) if graph is not None else None
    return label if pool is None else f"{label}\npool {pool}"


def _pool(graph: Graph, node: GraphNode) -> str | None:
    """`api: 4 at once, 10/s` for a node whose calls run in a pool (a task, a batch's worker)."""
    name = node.spec.pool if node.kind in (Kind.TASK, Kind.WORKER) else None
    spec = graph.blueprint.pools.get(name) if name is not None else None
    return None if spec is None else spec.describe()


def _subflow_file(node: GraphNode) -> str:
    """The child blueprint a subflow node (or a batch over a subflow) names, as written."""
    spec = node.spec
    sub = spec.subflow or (spec.batch.subflow if spec.batch else None)
    sub = sub or (spec.loop.subflow if spec.loop else None)
    return sub.blueprint if sub is not None else ""


def _fallback(node: GraphNode) -> str | None:
    """The node standing in for this one when it fails; a batch's is drawn from its worker,
    since a batch's `config` applies to each worker."""
    if node.kind in (Kind.TASK, Kind.WORKER, Kind.LOOP):
        return node.spec.config.fallback
    return None


def _layers(graph: Graph) -> list[list[str]]:
    """Node ids grouped by longest path from a root, each layer in topological order."""
    depth: dict[str, int] = {}
    for node_id in graph.order:
        preds = graph.preds.get(node_id, ())
        depth[node_id] = max((depth[edge.source] + 1 for edge in preds), default=0)
    # A fallback has no edges but runs after the node it stands in for failed: list it below
    # that node rather than among the roots.
    for source, fallback in _fallback_pairs(graph):
        if not graph.preds.get(fallback) and not graph.succs.get(fallback):
            depth[fallback] = max(depth[fallback], depth[source] + 1)
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node_id in graph.order:
        layers[depth[node_id]].append(node_id)
    return layers


def _fallback_pairs(graph: Graph) -> list[tuple[str, str]]:
    """``(node, its fallback)`` in topological order, for fallbacks present in the graph."""
    pairs = [(n, _fallback(graph.nodes[n])) for n in graph.order]
    return [(n, fb) for n, fb in pairs if fb is not None and fb in graph.nodes]


def _batch_groups(graph: Graph) -> Iterator[tuple[str | None, list[str]]]:
    """Yield ``(batch id, members)`` for each batch and ``(None, [id])`` for a plain node,
    in topological order of each group's first member."""
    seen: set[str] = set()
    for node_id in graph.order:
        batch = graph.nodes[node_id].batch
        if batch is None:
            yield None, [node_id]
        elif batch not in seen:
            seen.add(batch)
            yield batch, [n for n in graph.order if graph.nodes[n].batch == batch]


# --- ascii ----------------------------------------------------------------------------------


def _render_ascii(graph: Graph, expand: bool = False) -> str:
    header = f"{_plain(graph.blueprint.id)}: {len(graph.nodes)} nodes, {len(graph.edges)} edges"
    width = min(max((len(_plain(n)) for n in graph.order), default=0), _ID_COLUMN_MAX)
    lines = [header]
    for number, layer in enumerate(_layers(graph)):
        lines.append("")
        lines.append(f"layer {number}")
        for node_id in layer:
            node = graph.nodes[node_id]
            lines.append(
                f"  {_plain(node_id).ljust(width)}  {_ascii_describe(graph, node)}".rstrip()
            )
            lines.extend(_ascii_edge(edge) for edge in graph.succs.get(node_id, ()))
            if (fallback := _fallback(node)) is not None:
                lines.append(f"    ..fallback..> {_plain(fallback)}")
            child = graph.children.get(node_id) if expand else None
            if child is not None and node_id == node.owner:
                inner = _render_ascii(child, expand).rstrip("\n").split("\n")
                lines.extend("      | " + line if line else "      |" for line in inner)
    return "\n".join(_wrap(line) for line in lines) + "\n"


def _ascii_describe(graph: Graph, node: GraphNode) -> str:
    """What a node does, in a few words: its kind marker and what it calls or moves."""
    words = [_ASCII_MARKERS[node.kind]] if node.kind in _ASCII_MARKERS else []
    batch = node.spec.batch
    if node.kind is Kind.SCATTER and batch is not None:
        source = batch.input_key or f"file {batch.items_from or ''}"
        words.append(f"over {_plain(source)}")
    if node.kind is Kind.GATHER and batch is not None:
        target = f"file {batch.output_to}" if batch.output_to else batch.output_key
        words.append(f"into {_plain(target)}")
    if node.uses is not None:
        words.append(f"uses {_plain(node.uses)}")
    if node.id in graph.children and node.id == node.owner:
        words.append(f"runs {_plain(_subflow_file(node))}")
    if (pool := _pool(graph, node)) is not None:
        words.append(f"[pool {_plain(pool)}]")
    if node.id in graph.fallbacks:
        words.append("(fallback only)")
    return " ".join(words)


def _ascii_edge(edge: GraphEdge) -> str:
    parts = _edge_parts(edge, action_prefix="action=")
    arrow = f"--[{'; '.join(_plain(p) for p in parts)}]-->" if parts else "-->"
    return f"    {arrow} {_plain(edge.target)}"


def _wrap(line: str) -> str:
    """Fold a long line at spaces, continuing under the arrow, so it fits the terminal."""
    if len(line) <= _WIDTH:
        return line
    return textwrap.fill(
        line,
        width=_WIDTH,
        subsequent_indent=" " * 8,
        break_long_words=False,  # an id or a dotted path cut in half is worse than a long line
        break_on_hyphens=False,
    )


# --- mermaid --------------------------------------------------------------------------------


def _render_mermaid(graph: Graph, expand: bool = False) -> str:
    return "\n".join(["flowchart TD", *_mermaid_body(graph, expand, "n", "", "    ")]) + "\n"


def _mermaid_body(graph: Graph, expand: bool, prefix: str, group: str, pad: str) -> list[str]:
    # Generated ids: real ids may hold `-`, `.` or `[`, and `end` is a mermaid keyword.
    ids = {node_id: f"{prefix}{index}" for index, node_id in enumerate(graph.order)}
    lines = []
    for number, (batch, members) in enumerate(_batch_groups(graph)):
        indent = pad
        if batch is not None:
            lines.append(f'{pad}subgraph {group}b{number} ["{_mermaid(batch)}"]')
            indent = pad + "    "
        for m in members:
            node, child = graph.nodes[m], graph.children.get(m) if expand else None
            if child is None or m != node.owner:
                lines.append(indent + _mermaid_node(ids[m], node, graph))
                continue
            # The subflow is a subgraph of its own: edges to and from it reach the box.
            lines.append(f'{indent}subgraph {ids[m]} ["{_mermaid(_node_label(node, graph))}"]')
            lines += _mermaid_body(child, expand, ids[m] + "_", ids[m] + "_", indent + "    ")
            lines.append(f"{indent}end")
        if batch is not None:
            lines.append(f"{pad}end")
    for edge in graph.edges:
        text = _edge_text(edge)
        label = f'|"{_mermaid(text)}"|' if text else ""
        lines.append(f"{pad}{ids[edge.source]} -->{label} {ids[edge.target]}")
    # Fallbacks are not edges of the graph: a dotted arrow, after the real ones.
    for source, fallback in _fallback_pairs(graph):
        lines.append(f'{pad}{ids[source]} -.->|"fallback"| {ids[fallback]}')
    return lines


def _mermaid_node(ident: str, node: GraphNode, graph: Graph) -> str:
    opening, closing = _MERMAID_SHAPES[node.kind]
    return f"{ident}{opening}{_mermaid(_node_label(node, graph))}{closing}"


# --- dot ------------------------------------------------------------------------------------


def _render_dot(graph: Graph, expand: bool = False) -> str:
    lines = [f"digraph {_dot(graph.blueprint.id)} {{", "  rankdir=TB;"]
    lines += _dot_children(graph, "") if expand else []
    for batch, members in _batch_groups(graph):
        indent = "  "
        if batch is not None:
            # Graphviz draws a box around a subgraph only when its name starts with "cluster".
            lines.append(f"  subgraph {_dot('cluster_' + batch)} {{")
            lines.append(f"    label={_dot(batch)};")
            lines.append("    style=dashed;")
            indent = "    "
        lines.extend(indent + _dot_node(graph.nodes[m], graph) for m in members)
        if batch is not None:
            lines.append("  }")
    lines.extend("  " + _dot_edge(edge) for edge in graph.edges)
    for source, fallback in _fallback_pairs(graph):
        lines.append(f'  {_dot(source)} -> {_dot(fallback)} [label="fallback", style=dashed];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_children(graph: Graph, prefix: str) -> list[str]:
    """A dashed cluster per subflow holding its child's nodes (`parent/child`), reached from
    the subflow node by a dotted `runs` edge to each of the child's first nodes."""
    lines = []
    for owner, child in graph.children.items():
        name = prefix + owner
        lines.append(f"  subgraph {_dot('cluster_sub_' + name)} {{")
        lines.append(f"    label={_dot(name + ': ' + _subflow_file(graph.nodes[owner]))};")
        lines.append("    style=dashed;")
        for node_id in child.order:
            node = child.nodes[node_id]
            label, shape = _dot(_node_label(node, child)), _DOT_SHAPES[node.kind]
            lines.append(f"    {_dot(name + '/' + node_id)} [label={label}, shape={shape}];")
        for edge in child.edges:
            text = _edge_text(edge)
            attrs = f" [label={_dot(text)}]" if text else ""
            lines.append(
                f"    {_dot(name + '/' + edge.source)} -> {_dot(name + '/' + edge.target)}{attrs};"
            )
        lines.append("  }")
        for root in (n for n in child.order if not child.preds[n]):
            lines.append(
                f'  {_dot(name)} -> {_dot(name + "/" + root)} [label="runs", style=dotted];'
            )
        lines += _dot_children(child, name + "/")
    return lines


def _dot_node(node: GraphNode, graph: Graph) -> str:
    label = _dot(_node_label(node, graph))
    return f"{_dot(node.id)} [label={label}, shape={_DOT_SHAPES[node.kind]}];"


def _dot_edge(edge: GraphEdge) -> str:
    text = _edge_text(edge)
    attrs = f" [label={_dot(text)}]" if text else ""
    return f"{_dot(edge.source)} -> {_dot(edge.target)}{attrs};"


# --- json -----------------------------------------------------------------------------------


def _render_json(graph: Graph, expand: bool = False) -> str:
    return json.dumps(_json_doc(graph, expand), indent=2) + "\n"


def _json_doc(graph: Graph, expand: bool) -> dict[str, object]:
    def node(n: str) -> dict[str, object]:
        gnode = graph.nodes[n]
        out: dict[str, object] = {"id": n, "kind": gnode.kind.value}
        if gnode.kind in (Kind.TASK, Kind.WORKER) and gnode.spec.pool is not None:
            out["pool"] = gnode.spec.pool
        child = graph.children.get(n)
        if child is not None and n == gnode.owner:
            out["blueprint"] = _subflow_file(gnode)
            if expand:
                out["graph"] = _json_doc(child, expand)
        return out

    return {
        "nodes": [node(n) for n in graph.order],
        "edges": [
            {
                "source": edge.source,
                "target": edge.target,
                "action": edge.action,
                "condition": edge.condition.source if edge.condition is not None else None,
            }
            for edge in graph.edges
        ],
    }


_RENDERERS: dict[str, Callable[[Graph, bool], str]] = {
    "ascii": _render_ascii,
    "mermaid": _render_mermaid,
    "dot": _render_dot,
    "json": _render_json,
}
