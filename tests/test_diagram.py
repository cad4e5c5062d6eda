"""`flowrun.diagram.render`: golden files per format, plus structural checks per format.

Graphs are built by hand (no loader, no expander) so these tests pin the renderer alone.
Regenerate the golden files after an intended change with::

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_diagram.py

Neither Graphviz nor Mermaid is needed: DOT and Mermaid text are checked against their grammar.
"""

from __future__ import annotations

import graphlib
import html
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowrun.diagram import FORMATS, render
from flowrun.model import (
    BatchSpec,
    Blueprint,
    Config,
    EdgeSpec,
    Graph,
    GraphEdge,
    GraphNode,
    Kind,
    NodeSpec,
)

GOLDEN = Path(__file__).parent / "golden" / "graph"
SUFFIX = {"ascii": "txt", "mermaid": "mmd", "dot": "dot", "json": "json"}


# --- building graphs by hand ----------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    """Stands in for a compiled expression: a diagram only ever reads `.source`."""

    source: str

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        raise AssertionError("a diagram must not evaluate expressions")


def task(node_id: str, uses: str, fallback: str | None = None) -> NodeSpec:
    return NodeSpec(id=node_id, uses=uses, config=Config(fallback=fallback))


def batch(node_id: str, uses: str, input_key: str, output_key: str) -> NodeSpec:
    spec = BatchSpec(uses=uses, input_key=input_key, output_key=output_key)
    return NodeSpec(id=node_id, uses=None, batch=spec)


def build(blueprint_id: str, specs: list[NodeSpec], edges: list[EdgeSpec]) -> Graph:
    """Expand batches into scatter/worker/gather the way SPEC §1 describes, then index."""
    nodes: dict[str, GraphNode] = {}
    graph_edges: list[GraphEdge] = []
    for spec in specs:
        if spec.batch is None:
            nodes[spec.id] = GraphNode(spec.id, Kind.TASK, spec)
            continue
        b = spec.id
        for node_id, kind in ((f"{b}_scatter", Kind.SCATTER), (b, Kind.WORKER)):
            nodes[node_id] = GraphNode(node_id, kind, spec, batch=b)
        nodes[f"{b}_gather"] = GraphNode(f"{b}_gather", Kind.GATHER, spec, batch=b)
        graph_edges += [GraphEdge(f"{b}_scatter", b), GraphEdge(b, f"{b}_gather")]
    batches = {spec.id for spec in specs if spec.batch is not None}
    for e in edges:
        source = f"{e.source}_gather" if e.source in batches else e.source
        target = f"{e.target}_scatter" if e.target in batches else e.target
        condition = Expr(e.condition) if e.condition is not None else None
        transform = Expr(e.transform) if e.transform is not None else None
        graph_edges.append(GraphEdge(source, target, e.action, condition, transform, e))
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for node_id in nodes:
        sorter.add(node_id, *(g.source for g in graph_edges if g.target == node_id))
    blueprint = Blueprint(id=blueprint_id, nodes=tuple(specs), edges=tuple(edges))
    return Graph(
        blueprint=blueprint,
        nodes=nodes,
        edges=tuple(graph_edges),
        order=tuple(sorter.static_order()),
        preds={n: tuple(g for g in graph_edges if g.target == n) for n in nodes},
        succs={n: tuple(g for g in graph_edges if g.source == n) for n in nodes},
        fallbacks=frozenset(s.config.fallback for s in specs if s.config.fallback is not None),
    )


def seed_graph() -> Graph:
    """The SPEC §1 example."""
    return build(
        "batch-workflow",
        [
            task("start", "tasks.numbers"),
            batch("double-items", "tasks.double", "start", "doubled"),
            task("sum-results", "builtins.sum"),
        ],
        [
            EdgeSpec("start", "double-items_scatter"),
            EdgeSpec("double-items_gather", "sum-results"),
        ],
    )


def branching_graph() -> Graph:
    """Actions and a condition fan out from `score`; every branch re-joins at `report`.
    `publish` has a fallback, `notify`, which has no edges of its own."""
    return build(
        "review-flow",
        [
            task("fetch", "tasks.fetch"),
            task("score", "tasks.score"),
            task("publish", "tasks.publish", fallback="notify"),
            task("notify", "tasks.notify"),
            task("revise", "tasks.revise"),
            task("escalate", "tasks.escalate"),
            task("report", "tasks.report"),
        ],
        [
            EdgeSpec("fetch", "score"),
            EdgeSpec("score", "publish", action="approve"),
            EdgeSpec("score", "revise", action="reject"),
            EdgeSpec(
                "score", "escalate", condition="output.score > 0.5", transform="output.details"
            ),
            EdgeSpec("publish", "report"),
            EdgeSpec("revise", "report"),
            EdgeSpec("escalate", "report"),
            EdgeSpec("fetch", "report"),  # a short cut: `report` still sits below all branches
        ],
    )


NASTY_ACTION = 'say "hi" | <b>bold</b> \\ back\nslash'
LONG_CONDITION = (
    'context.mode == "direction LR" and len(output["rows"]) > 100 and output.flag is True'
)


def nasty_graph() -> Graph:
    """Ids and labels that break naive quoting in every format."""
    return build(
        "nasty-labels.v1",
        [
            task("load-data.v2", "tasks.café"),
            task("end", "tasks.end"),  # a mermaid keyword
            task("node", "tasks.node"),  # a DOT keyword
            batch("fan.out-1", "tasks.work", "node", "results"),
            task("x[0]", "tasks.x"),
        ],
        [
            EdgeSpec("load-data.v2", "end", action=NASTY_ACTION),
            EdgeSpec("load-data.v2", "node", condition='output["a"] > 1'),
            EdgeSpec("node", "fan.out-1"),
            EdgeSpec(
                "fan.out-1",
                "x[0]",
                action="#quot; & {x} (y) [z] `tick` #35; style a:b;",
                transform="output[0]",
            ),
            EdgeSpec("end", "x[0]", action="\x1b[31mred\x1b[0m", condition=LONG_CONDITION),
        ],
    )


GRAPHS = {"seed": seed_graph, "branching": branching_graph, "nasty": nasty_graph}
CASES = [(name, fmt) for name in GRAPHS for fmt in FORMATS]


def visible(text: str) -> str:
    """What the renderer promises to show for `text`: control codes as Python escapes."""
    return "".join(
        ch if ch.isprintable() or ch == "\n" else ch.encode("unicode_escape").decode()
        for ch in text
    )


def edge_label(edge: GraphEdge) -> str:
    parts = [edge.action] if edge.action is not None else []
    parts += [f"if {edge.condition.source}"] if edge.condition is not None else []
    parts += [f"transform: {edge.transform.source}"] if edge.transform is not None else []
    return visible("\n".join(parts))


# --- every format ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_matches_golden_file(name: str, fmt: str) -> None:
    text = render(GRAPHS[name](), fmt)
    path = GOLDEN / f"{name}.{SUFFIX[fmt]}"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    assert text == path.read_bytes().decode("utf-8")  # bytes: no newline translation


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_output_is_plain_text_ending_in_newline(name: str, fmt: str) -> None:
    text = render(GRAPHS[name](), fmt)
    assert text.endswith("\n")
    assert "\x1b" not in text
    assert all(ch == "\n" or ch.isprintable() for ch in text)


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_same_graph_same_text_whatever_the_mapping_order(name: str, fmt: str) -> None:
    graph = GRAPHS[name]()
    shuffled = Graph(
        blueprint=graph.blueprint,
        nodes=dict(reversed(graph.nodes.items())),
        edges=graph.edges,
        order=graph.order,
        preds=dict(reversed(graph.preds.items())),
        succs=dict(reversed(graph.succs.items())),
        fallbacks=graph.fallbacks,
    )
    assert render(shuffled, fmt) == render(graph, fmt)


def test_default_format_is_ascii() -> None:
    assert render(seed_graph()) == render(seed_graph(), "ascii")


@pytest.mark.parametrize("fmt", ["svg", "ASCII", ""])
def test_unknown_format_is_a_value_error_naming_the_choices(fmt: str) -> None:
    with pytest.raises(ValueError, match="ascii, mermaid, dot, json"):
        render(seed_graph(), fmt)


# --- ascii ----------------------------------------------------------------------------------


def ascii_layers(text: str) -> dict[str, int]:
    """Node id -> layer number, read back from the ascii listing."""
    layers: dict[str, int] = {}
    layer = -1
    for line in text.splitlines():
        if line.startswith("layer "):
            layer = int(line.split()[1])
        elif line.startswith("  ") and not line.startswith("    "):
            layers[line.split()[0]] = layer
    return layers


@pytest.mark.parametrize("name", GRAPHS)
def test_ascii_fits_an_80_column_terminal(name: str) -> None:
    for line in render(GRAPHS[name](), "ascii").splitlines():
        assert len(line) <= 80, line


def test_ascii_header_kinds_and_edges() -> None:
    text = render(seed_graph(), "ascii")
    assert text.startswith("batch-workflow: 5 nodes, 4 edges\n")
    assert ">> scatter over start" in text
    assert "[worker xN] uses tasks.double" in text
    assert "<< gather into doubled" in text
    assert "    --> double-items_scatter\n" in text


def test_ascii_layer_is_the_longest_path_from_a_root() -> None:
    graph = branching_graph()
    layers = ascii_layers(render(graph, "ascii"))
    assert layers == {
        "fetch": 0,
        "score": 1,
        "publish": 2,
        "revise": 2,
        "escalate": 2,
        "report": 3,  # not 1, although `fetch -> report` is a direct edge
        "notify": 3,  # no edges, but it runs only after `publish` failed
    }
    for edge in graph.edges:
        assert layers[edge.source] < layers[edge.target]


def test_ascii_edge_labels_show_action_condition_and_transform() -> None:
    text = render(branching_graph(), "ascii")
    assert "    --[action=approve]--> publish\n" in text
    assert "    --[if output.score > 0.5; transform: output.details]--> escalate\n" in text


def test_ascii_shows_control_characters_as_escapes() -> None:
    text = render(nasty_graph(), "ascii")
    assert "--[action=\\x1b[31mred\\x1b[0m; if" in text
    assert "back\\nslash" in text


# --- json -----------------------------------------------------------------------------------


def test_json_seed_document_exactly() -> None:
    assert json.loads(render(seed_graph(), "json")) == {
        "nodes": [
            {"id": "start", "kind": "task"},
            {"id": "double-items_scatter", "kind": "scatter"},
            {"id": "double-items", "kind": "worker"},
            {"id": "double-items_gather", "kind": "gather"},
            {"id": "sum-results", "kind": "task"},
        ],
        "edges": [
            {"source": s, "target": t, "action": None, "condition": None}
            for s, t in [
                ("double-items_scatter", "double-items"),
                ("double-items", "double-items_gather"),
                ("start", "double-items_scatter"),
                ("double-items_gather", "sum-results"),
            ]
        ],
    }


@pytest.mark.parametrize("name", GRAPHS)
def test_json_structure_follows_the_graph(name: str) -> None:
    graph = GRAPHS[name]()
    text = render(graph, "json")
    document = json.loads(text)
    assert text == json.dumps(document, indent=2) + "\n"
    assert list(document) == ["nodes", "edges"]
    assert [n["id"] for n in document["nodes"]] == list(graph.order)
    for node in document["nodes"]:
        assert list(node) == ["id", "kind"]
        assert node["kind"] == graph.nodes[node["id"]].kind.value
    assert len(document["edges"]) == len(graph.edges)
    for item, edge in zip(document["edges"], graph.edges, strict=True):
        condition = edge.condition.source if edge.condition is not None else None
        assert item == {
            "source": edge.source,
            "target": edge.target,
            "action": edge.action,
            "condition": condition,
        }


def test_json_keeps_nasty_labels_verbatim() -> None:
    edges = {e["target"]: e for e in json.loads(render(nasty_graph(), "json"))["edges"]}
    assert (edges["end"]["action"], edges["end"]["condition"]) == (NASTY_ACTION, None)
    assert (edges["node"]["action"], edges["node"]["condition"]) == (None, 'output["a"] > 1')


# --- dot ------------------------------------------------------------------------------------

DOT_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
DOT_LINE = re.compile(
    r"digraph Q \{"
    r"|rankdir=TB;"
    r"|subgraph Q \{"
    r"|label=Q;"
    r"|style=dashed;"
    r"|Q \[label=Q, shape=(box|trapezium|box3d|invtrapezium)\];"
    r"|Q -> Q( \[label=Q\])?;"
    r"|Q -> Q \[label=Q, style=dashed\];"
    r"|\}"
)


def dot_unescape(quoted: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], quoted[1:-1])


@pytest.mark.parametrize("name", GRAPHS)
def test_dot_quotes_every_id_and_label(name: str) -> None:
    text = render(GRAPHS[name](), "dot")
    # Every quoted string closes on its own line; what is left is DOT syntax with no stray quote.
    for line in text.splitlines():
        skeleton = DOT_STRING.sub("Q", line).strip()
        assert DOT_LINE.fullmatch(skeleton), line
    assert text.count("{") - sum(s.count("{") for s in DOT_STRING.findall(text)) == text.count(
        "}"
    ) - sum(s.count("}") for s in DOT_STRING.findall(text))


@pytest.mark.parametrize("name", GRAPHS)
def test_dot_edge_labels_round_trip(name: str) -> None:
    graph = GRAPHS[name]()
    lines = render(graph, "dot").splitlines()
    edge_lines = [line for line in lines if " -> " in line and "style=dashed" not in line]
    for line, edge in zip(edge_lines, graph.edges, strict=True):
        strings = [dot_unescape(s) for s in DOT_STRING.findall(line)]
        assert strings[:2] == [edge.source, edge.target]
        assert (strings[2] if len(strings) > 2 else "") == edge_label(edge)


# --- mermaid --------------------------------------------------------------------------------

MERMAID_LABEL = r'"[^"]*"'
MERMAID_LINE = re.compile(
    rf"n\d+(\[{MERMAID_LABEL}\]|\[/{MERMAID_LABEL}\\\]|\[\[{MERMAID_LABEL}\]\]"
    rf"|\[\\{MERMAID_LABEL}/\])"
    rf"|n\d+ -->(\|{MERMAID_LABEL}\|)? n\d+"
    r'|n\d+ -\.->\|"fallback"\| n\d+'
    rf"|subgraph b\d+ \[{MERMAID_LABEL}\]"
    r"|end"
)


def mermaid_unescape(label: str) -> str:
    """Decode mermaid entity codes (``#quot;``, ``#35;``) the way mermaid does, via HTML."""
    text = re.sub(r"#(\d+);", r"&#\1;", label.replace("<br/>", "\n"))
    return html.unescape(re.sub(r"#([a-z]+);", r"&\1;", text))


def mermaid_labels(text: str) -> list[str]:
    return re.findall(MERMAID_LABEL, text)


@pytest.mark.parametrize("name", GRAPHS)
def test_mermaid_lines_ids_and_labels_are_safe(name: str) -> None:
    lines = render(GRAPHS[name](), "mermaid").splitlines()
    assert lines[0] == "flowchart TD"
    for line in lines[1:]:
        assert MERMAID_LINE.fullmatch(line.strip()), line
        for label in mermaid_labels(line):
            inner = label[1:-1].replace("<br/>", "")
            assert not set(inner) & set('"<>|[](){}`\\:'), label
            assert re.fullmatch(r"([^#]|#\w+;)*", inner), label  # '#' only in entity codes
            assert "direction " not in inner
        outside = re.sub(MERMAID_LABEL, "", line)
        for ident in re.findall(r"\b[nb]\d+\b", outside):
            assert ident.isidentifier()


@pytest.mark.parametrize("name", GRAPHS)
def test_mermaid_edge_labels_round_trip(name: str) -> None:
    graph = GRAPHS[name]()
    ids = {f"n{i}": node_id for i, node_id in enumerate(graph.order)}
    lines = render(graph, "mermaid").splitlines()
    edge_lines = [line.strip() for line in lines if " -->" in line]
    for line, edge in zip(edge_lines, graph.edges, strict=True):
        source, target = line.split()[0], line.split()[-1]
        assert (ids[source], ids[target]) == (edge.source, edge.target)
        labels = mermaid_labels(line)
        decoded = mermaid_unescape(labels[0][1:-1]) if labels else ""
        assert decoded == edge_label(edge)


def test_mermaid_shapes_and_batch_subgraph() -> None:
    text = render(seed_graph(), "mermaid")
    assert 'n0["start<br/>tasks.numbers"]' in text
    assert '    subgraph b1 ["double-items"]\n' in text
    assert '        n1[/"double-items_scatter"\\]\n' in text
    assert '        n2[["double-items<br/>tasks.double"]]\n' in text
    assert '        n3[\\"double-items_gather"/]\n' in text


# --- fallbacks ------------------------------------------------------------------------------


def test_fallback_is_drawn_apart_from_real_edges() -> None:
    graph = branching_graph()
    ids = {node_id: f"n{i}" for i, node_id in enumerate(graph.order)}
    ascii_text = render(graph, "ascii")
    assert (
        "  publish   uses tasks.publish\n    --> report\n    ..fallback..> notify\n" in ascii_text
    )
    assert "  notify    uses tasks.notify (fallback only)\n" in ascii_text
    assert f'{ids["publish"]} -.->|"fallback"| {ids["notify"]}' in render(graph, "mermaid")
    assert '"publish" -> "notify" [label="fallback", style=dashed];' in render(graph, "dot")
    json_edges = json.loads(render(graph, "json"))["edges"]
    assert "notify" not in {e["target"] for e in json_edges}  # json lists graph edges only
