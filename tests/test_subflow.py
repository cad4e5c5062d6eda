"""Subflows (SPEC §6): a node that runs another blueprint, inside the parent's run."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowrun import api
from flowrun.errors import BlueprintError
from tests import nodes

CHILD = """\
context: {input: null, who: null}
nodes:
  - id: total
    uses: builtins.sum
    inputs: input
  - id: greet
    uses: tests.nodes.kwargs
    inputs: {who: who, total: total}
edges:
  - {source: total, target: greet}
"""


def parent(outputs: str = "", child: str = "child.yaml") -> str:
    return f"""\
id: parent
context: {{name: ada}}
nodes:
  - id: start
    uses: tests.nodes.numbers
  - id: sub
    subflow:
      blueprint: {child}
      inputs: {{who: name}}{outputs}
  - id: after
    uses: tests.nodes.ident
edges:
  - {{source: start, target: sub}}
  - {{source: sub, target: after}}
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "parent.yaml").write_text(parent())
    return tmp_path


def test_the_child_gets_input_and_inputs_and_gives_its_final_output(files: Path) -> None:
    report = api.run(files / "parent.yaml", state_dir=files / "state")
    assert report.status == "completed"
    assert report.context["sub"] == {"who": "ada", "total": 60}
    assert report.context["after"] == {"who": "ada", "total": 60}
    assert report.nodes["sub/total"].status == "succeeded"
    assert report.nodes["sub/greet"].status == "succeeded"
    assert "total" not in report.context  # the child's context is its own


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ("\n      outputs: total", 60),
        ("\n      outputs: {sum: total, name: who}", {"sum": 60, "name": "ada"}),
    ],
)
def test_outputs_as_a_string_or_a_mapping(files: Path, outputs: str, expected: object) -> None:
    (files / "parent.yaml").write_text(parent(outputs))
    report = api.run(files / "parent.yaml", state_dir=files / "state")
    assert report.context["sub"] == expected


def test_subflows_nest_and_ids_name_the_path(files: Path) -> None:
    (files / "middle.yaml").write_text(
        "context: {input: null, who: null}\nnodes:\n  - id: inner\n    inputs: input\n"
        "    subflow:\n      blueprint: child.yaml\n      inputs: {who: who}\n"
    )
    (files / "parent.yaml").write_text(parent(child="middle.yaml"))
    report = api.run(files / "parent.yaml", state_dir=files / "state")
    assert report.status == "completed"
    assert report.context["sub"] == {"who": "ada", "total": 60}
    assert report.nodes["sub/inner/greet"].status == "succeeded"


def test_a_failing_child_fails_the_node_and_resume_reruns_only_its_unfinished_nodes(
    files: Path,
) -> None:
    stop = files / "stop"
    stop.write_text("")
    (files / "child.yaml").write_text(
        "context: {input: null}\nnodes:\n  - id: one\n    uses: tests.nodes.tally\n"
        "    inputs: input\n  - id: two\n    uses: tests.nodes.stop_if\n"
        f"    params: {{stop_file: '{stop}'}}\n"
        "edges:\n  - {source: one, target: two}\n"
    )
    (files / "parent.yaml").write_text(
        "nodes:\n  - id: start\n    uses: tests.nodes.numbers\n  - id: sub\n"
        "    subflow: {blueprint: child.yaml}\nedges:\n  - {source: start, target: sub}\n"
    )
    nodes.reset()
    first = api.run(files / "parent.yaml", state_dir=files / "state")
    assert first.status == "failed"
    assert [e["node"] for e in first.errors] == ["sub/two", "sub"]
    assert first.errors[1]["type"] == "SubflowError"
    assert "sub/two: RuntimeError: stopped" in first.errors[1]["message"]
    stop.unlink()
    again = api.run(files / "parent.yaml", state_dir=files / "state", resume="latest")
    assert again.status == "completed"
    assert again.context["sub"] == [10, 20, 30]
    assert nodes.calls == {"sub/one": 1, "sub/two": 2}  # sub/one was not run again


def test_validate_follows_subflows(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "nodes:\n  - id: a\n    subflow: {blueprint: nothere.yaml}\n"
        "  - id: b\n    subflow: {blueprint: child.yaml}\n"
        "  - id: c\n    subflow: {blueprint: bad.yaml}\n"
    )
    (tmp_path / "child.yaml").write_text("nodes:\n  - id: y\n    usse: 3\n")
    found = api.validate_file(tmp_path / "bad.yaml")
    where = [(Path(p.file).name, p.line, p.code) for p in found]
    assert where == [
        ("bad.yaml", 3, "subflow-missing"),
        ("bad.yaml", 7, "subflow-cycle"),
        ("child.yaml", 2, "schema.node-kind"),
        ("child.yaml", 3, "schema.unknown-key"),
    ]
    assert "reaches itself: bad.yaml -> bad.yaml" in found[1].message
    with pytest.raises(BlueprintError):
        api.prepare(tmp_path / "bad.yaml")


def test_a_cycle_through_two_files_names_the_chain(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("nodes:\n  - id: x\n    subflow: {blueprint: b.yaml}\n")
    (tmp_path / "b.yaml").write_text("nodes:\n  - id: y\n    subflow: {blueprint: a.yaml}\n")
    (problem,) = api.validate_file(tmp_path / "a.yaml")
    assert problem.code == "subflow-cycle"
    assert "a.yaml -> b.yaml -> a.yaml" in problem.message


def test_a_batch_maps_a_subflow_over_a_list_in_item_order(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(
        "context: {input: null, bad: null}\nnodes:\n  - id: check\n    uses: tests.nodes.fail_on\n"
        "    inputs: {item: input, bad: bad}\n  - id: twice\n    uses: tests.nodes.jitter_double\n"
        "    inputs: check\nedges:\n  - {source: check, target: twice}\n"
    )
    (tmp_path / "map.yaml").write_text(
        "context: {bad: [30]}\nnodes:\n  - id: start\n    uses: tests.nodes.numbers\n"
        "    params: {n: 6}\n  - id: each\n    batch:\n      inputKey: start\n"
        "      subflow: {blueprint: one.yaml, inputs: {bad: bad}}\n      maxFailures: 1\n"
        "edges:\n  - {source: start, target: each}\n"
    )
    report = api.run(tmp_path / "map.yaml", state_dir=tmp_path / "state", concurrency=3)
    assert report.status == "completed"
    assert report.context["each"] == [20, 40, None, 80, 100, 120]
    assert report.nodes["each"].items == {"total": 6, "succeeded": 5, "failed": 1}
    assert [e["node"] for e in report.errors] == ["each[2]/check", "each[2]"]
    assert report.nodes["each[4]/twice"].status == "succeeded"


def test_executors_give_the_same_result_for_subflows(files: Path) -> None:
    docs = [
        api.run(files / "parent.yaml", state_dir=files / kind, executor=kind).as_dict()
        for kind in ("thread", "process")
    ]
    for doc in docs:
        doc.pop("runId")
        for node in doc["nodes"].values():
            node.pop("durationMs", None)
    assert docs[0] == docs[1]


def _one_node_child(tmp_path: Path, uses: str) -> None:
    (tmp_path / "child.yaml").write_text(
        f"context: {{input: null}}\nnodes:\n  - id: step\n    uses: {uses}\n    inputs: input\n"
    )


def test_config_retries_the_subflow_as_a_whole(tmp_path: Path) -> None:
    _one_node_child(tmp_path, "tests.nodes.fail_first")
    (tmp_path / "p.yaml").write_text(
        "nodes:\n  - id: start\n    uses: tests.nodes.numbers\n  - id: sub\n"
        "    subflow: {blueprint: child.yaml}\n    config: {maxRetries: 1}\n"
        "edges:\n  - {source: start, target: sub}\n"
    )
    nodes.reset()
    seen: list[object] = []
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state", sinks=[seen.append])
    assert report.status == "completed"
    assert report.context["sub"] == [10, 20, 30]
    assert report.nodes["sub"].attempts == 2
    assert nodes.calls == {"sub/step": 2}
    assert [type(e).__name__ for e in seen].count("NodeRetry") == 1


def test_a_fallback_stands_in_for_a_failed_subflow(tmp_path: Path) -> None:
    _one_node_child(tmp_path, "tests.nodes.always_fails")
    (tmp_path / "p.yaml").write_text(
        "nodes:\n  - id: start\n    uses: tests.nodes.numbers\n  - id: sub\n"
        "    subflow: {blueprint: child.yaml}\n    config: {fallback: plan-b}\n"
        "  - id: plan-b\n    uses: tests.nodes.standin\n"
        "edges:\n  - {source: start, target: sub}\n"
    )
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state")
    assert report.status == "completed"
    assert report.nodes["sub"].status == "recovered"
    assert report.context["sub"] == {"from": "fallback", "input": [10, 20, 30]}


@pytest.mark.parametrize("fmt", ["ascii", "mermaid", "dot", "json"])
def test_graph_draws_a_subflow_as_one_node_and_expand_draws_the_child(fmt: str) -> None:
    import json as jsonlib

    from flowrun import diagram

    graph = api.load(Path(__file__).parents[1] / "blueprints" / "job-application.yaml")
    plain = diagram.render(graph, fmt)
    expanded = diagram.render(graph, fmt, expand=True)
    assert "interview.yaml" in plain  # labelled with its file
    assert "output_email" not in plain  # the child's insides stay out
    assert "output_email" in expanded
    if fmt == "mermaid":
        assert expanded.count("subgraph") == 2 and expanded.count("\n    end") >= 2
    elif fmt == "dot":
        assert "cluster_sub_send_interview_email" in expanded
        assert expanded.count("{") == expanded.count("}")
    elif fmt == "json":
        doc = jsonlib.loads(expanded)
        (sub,) = [n for n in doc["nodes"] if n["id"] == "send_interview_email"]
        assert sub["kind"] == "subflow" and sub["blueprint"] == "interview.yaml"
        assert [n["id"] for n in sub["graph"]["nodes"]] == ["output_email"]
        assert "graph" not in jsonlib.dumps(jsonlib.loads(plain)["nodes"])
    else:
        assert "      |   output_email  uses hiring.interview_email" in expanded
