"""flowrun.blueprint.schema: the shipped JSON Schema, durations, Document -> Blueprint, problems."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from flowrun.blueprint.loader import Document, load, load_text
from flowrun.blueprint.schema import check, parse_duration, schema, schema_text
from flowrun.errors import BlueprintError, Problem
from flowrun.model import BatchSpec, Blueprint, Config, EdgeSpec, NodeSpec

VALID = """\
id: batch-workflow
description: Double numbers in parallel and sum them.
context:
  factor: 2
nodes:
  - id: start
    uses: tasks.numbers
    params: {count: 3}
    config:
      maxRetries: 2
      retryDelay: 250
      backoff: 1.5
      timeout: 1.5m
      fallback: backup
      joinStrategy: any
  - id: double-items
    batch:
      uses: tasks.double
      inputKey: start
      params: {by: 2}
      concurrency: 4
      maxFailures: 1
    config: {timeout: 2s}
  - id: sum-results
    uses: pkg.mod:Summer.total
    inputs: {values: double-items}
  - id: backup
    uses: builtins.list
edges:
  - { source: start, target: double-items_scatter }
  - source: double-items_gather
    target: sum-results
    action: done
    condition: "len(output) > 0"
    transform: output
"""


def doc_of(text: str, fmt: str = "yaml") -> Document:
    return load_text(text, f"bp.{fmt}", fmt)  # type: ignore[arg-type]


def problems_of(text: str, fmt: str = "yaml") -> list[Problem]:
    with pytest.raises(BlueprintError) as info:
        check(doc_of(text, fmt))
    return list(info.value.problems)


def only(text: str) -> Problem:
    found = problems_of(text)
    assert len(found) == 1, found
    return found[0]


def node(body: str) -> str:
    """A one-node blueprint whose node has `body` (YAML, indented by 4) after `- id: n`."""
    return "id: t\nnodes:\n  - id: n\n" + body


# -- the schema file ---------------------------------------------------------------------------


def test_schema_is_valid_draft_2020_12_and_shipped_as_text() -> None:
    Draft202012Validator.check_schema(schema())
    assert json.loads(schema_text()) == schema()
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema_text().endswith("}\n")
    assert (
        Path(__file__).parents[1] / "flowrun" / "blueprint" / "schema.json"
    ).read_text() == schema_text()


def test_schema_documents_every_property_for_editors() -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                if isinstance(prop, dict):  # `false` marks what a batch node may not have
                    assert "description" in prop or "$ref" in prop, f"{where}.{name}"
            for key, value in node.items():
                walk(value, f"{where}.{key}")

    walk(schema(), "$")


# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (250, 0.25),
        (0, 0.0),
        (1.5, 0.0015),
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration(value: int | float | str, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["", "5", "5 s", "5sec", "-1s", "1.s", "1e3ms", "2d", -1, True, math.nan, math.inf, 10**400],
)
def test_parse_duration_rejects_junk(value: Any) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


# -- a valid blueprint -------------------------------------------------------------------------


def test_a_valid_blueprint_builds_the_model() -> None:
    doc = doc_of(VALID)
    assert check(doc) == Blueprint(
        id="batch-workflow",
        description="Double numbers in parallel and sum them.",
        context={"factor": 2},
        nodes=(
            NodeSpec(
                id="start",
                uses="tasks.numbers",
                params={"count": 3},
                config=Config(
                    max_retries=2,
                    retry_delay=0.25,
                    backoff=1.5,
                    timeout=90.0,
                    fallback="backup",
                    join="any",
                ),
                path=("nodes", 0),
            ),
            NodeSpec(
                id="double-items",
                uses=None,
                config=Config(timeout=2.0),
                batch=BatchSpec(
                    uses="tasks.double",
                    input_key="start",
                    output_key="double-items",
                    params={"by": 2},
                    concurrency=4,
                    max_failures=1,
                ),
                path=("nodes", 1),
            ),
            NodeSpec(
                id="sum-results",
                uses="pkg.mod:Summer.total",
                inputs={"values": "double-items"},
                path=("nodes", 2),
            ),
            NodeSpec(id="backup", uses="builtins.list", path=("nodes", 3)),
        ),
        edges=(
            EdgeSpec(source="start", target="double-items_scatter", path=("edges", 0)),
            EdgeSpec(
                source="double-items_gather",
                target="sum-results",
                action="done",
                condition="len(output) > 0",
                transform="output",
                path=("edges", 1),
            ),
        ),
        document=doc,
    )


def test_defaults() -> None:
    blueprint = check(doc_of(node("    uses: a.b\n")))
    assert blueprint.edges == ()
    assert blueprint.context == {}
    assert blueprint.description is None
    assert blueprint.nodes[0].config == Config(
        max_retries=0, retry_delay=0.0, backoff=2.0, timeout=None, fallback=None, join="all"
    )
    assert blueprint.file == "bp.yaml"


def test_a_flowcraft_json_blueprint_is_accepted() -> None:
    flowcraft = {
        "$schema": "https://example.invalid/flowrun.schema.json",
        "id": "fc",
        "metadata": {"version": "1", "cycleEntryPoints": []},
        "nodes": [
            {
                "id": "a",
                "uses": "tasks.a",
                "params": {},
                "inputs": "x",
                "config": {
                    "maxRetries": 1,
                    "retryDelay": 100,
                    "timeout": 5000,
                    "fallback": "b",
                    "joinStrategy": "all",
                },
                "_sourceLocation": {"file": "flow.ts", "line": 3, "column": 1},
            },
            {"id": "b", "uses": "tasks.b"},
        ],
        "edges": [
            {
                "source": "a",
                "target": "b",
                "_sourceLocation": {"file": "flow.ts", "line": 9, "column": 1},
            }
        ],
    }
    blueprint = check(doc_of(json.dumps(flowcraft, indent=2), "json"))
    assert blueprint.nodes[0].config == Config(
        max_retries=1, retry_delay=0.1, timeout=5.0, fallback="b"
    )


def test_references_are_left_to_the_next_stage() -> None:
    text = "id: t\nnodes:\n  - {id: a, uses: m.f, inputs: nowhere, config: {fallback: ghost}}\n"
    text += (
        "  - {id: a, uses: m.g}\nedges:\n  - {source: a, target: nobody, condition: 'not (valid'}\n"
    )
    assert len(check(doc_of(text)).nodes) == 2


# -- problems: exact codes, positions and messages ---------------------------------------------


def test_unknown_keys_are_located_at_the_key_with_a_suggestion() -> None:
    problem = only(node("    batch:\n      uses: a.b\n      inputKey: x\n      outputkey: y\n"))
    assert (problem.line, problem.column, problem.code, problem.path) == (
        7,
        7,
        "schema.unknown-key",
        "$.nodes[0].batch.outputkey",
    )
    assert problem.message == "node 'n': batch: unknown key 'outputkey' (did you mean 'outputKey'?)"


def test_unknown_key_at_the_top_level() -> None:
    problem = only("id: t\nnodes: [{id: a, uses: m.f}]\nedge: []\n")
    assert (problem.line, problem.column, problem.path) == (3, 1, "$.edge")
    assert problem.message == "blueprint: unknown key 'edge' (did you mean 'edges'?)"


def test_unknown_key_that_belongs_elsewhere_says_where() -> None:
    found = problems_of(node("    uses: a.b\n    timeout: 5s\n    inputKey: x\n"))
    assert [p.message for p in found] == [
        "node 'n': unknown key 'timeout' (it belongs under 'config')",
        "node 'n': unknown key 'inputKey' (it belongs under 'batch')",
    ]


def test_unknown_key_without_a_close_match_lists_the_keys() -> None:
    problem = only(node("    uses: a.b\n    zzz: 1\n"))
    assert (
        problem.message
        == "node 'n': unknown key 'zzz'; expected one of: id, uses, params, inputs, config, shell, "
        "batch, loop, subflow"
    )


def test_required_keys() -> None:
    found = problems_of("description: nothing\n")
    assert [(p.line, p.column, p.code, p.path, p.message) for p in found] == [
        (1, 1, "schema.required", "$.nodes", "blueprint: missing required key 'nodes'"),
    ]
    problem = only(node("    batch: {uses: a.b}\n"))
    assert (problem.line, problem.column, problem.path) == (4, 12, "$.nodes[0].batch.inputKey")
    assert problem.message == (
        "node 'n': batch: needs 'inputKey' (a list in the run context) or 'itemsFrom' "
        "(a file of items)"
    )
    problem = only(node("    batch: {uses: a.b, inputKey: x, itemsFrom: x.txt}\n"))
    assert (problem.code, problem.path) == ("schema.batch-items", "$.nodes[0].batch.itemsFrom")
    assert "has both 'inputKey' and 'itemsFrom'" in problem.message


def test_wrong_types_say_expected_and_found() -> None:
    found = problems_of(
        node(
            "    uses: a.b\n    config:\n      maxRetries: '3'\n      backoff: true\n    params:\n"
        )
    )
    assert [(p.line, p.column, p.code, p.message) for p in found] == [
        (
            6,
            19,
            "schema.type",
            "node 'n': config.maxRetries: expected integer, found string '3' (remove the quotes)",
        ),
        (7, 16, "schema.type", "node 'n': config.backoff: expected number, found boolean true"),
        (
            8,
            12,
            "schema.type",
            "node 'n': params: expected object, found null "
            "(the value is empty: give one, or remove the key)",
        ),
    ]


def test_wrong_type_of_a_whole_section() -> None:
    assert only("id: t\nnodes: {a: 1}\n").message == "nodes: expected array, found object"
    problem = only(node("    uses: a.b\n    inputs: [x, y]\n"))
    assert (
        problem.message == "node 'n': inputs: expected string or object, found array "
        "(write key: value pairs, not a list)"
    )
    assert (
        only("id: t\nnodes:\n  - just-a-name\n").message
        == "nodes[0]: expected object, found string 'just-a-name'"
    )


def test_patterns() -> None:
    problem = only("id: my flow\nnodes: [{id: a, uses: m.f}]\n")
    assert (problem.line, problem.column, problem.code, problem.path) == (
        1,
        5,
        "schema.pattern",
        "$.id",
    )
    assert (
        problem.message
        == "id: expected an id made of letters, digits, '_', '.' or '-', found string 'my flow'"
    )
    problem = only(node("    uses: sum\n"))
    assert (problem.line, problem.column, problem.code) == (4, 11, "schema.pattern")
    assert problem.message == (
        "node 'n': uses: expected a dotted import path such as 'package.module.function' or "
        "'package.module:function', found string 'sum' (did you mean 'builtins.sum'?)"
    )
    assert only(node("    uses: double\n")).message.endswith(
        "found string 'double' (name the module too, e.g. 'tasks.double' for double() in tasks.py)"
    )
    problem = only("id: t\nnodes: [{id: a, uses: m.f}]\nedges:\n  - {source: a, target: 'b c'}\n")
    assert (
        problem.message
        == "edge 'a' -> 'b c': target: expected a node id (letters, digits, '_', '.' or '-'), "
        "found string 'b c'"
    )


def test_enum_with_suggestion() -> None:
    problem = only(node("    uses: a.b\n    config: {joinStrategy: Any}\n"))
    assert (problem.line, problem.column, problem.code) == (5, 28, "schema.enum")
    assert (
        problem.message
        == "node 'n': config.joinStrategy: expected one of 'all', 'any', found string 'Any' "
        "(did you mean 'any'?)"
    )


def test_enum_without_a_close_match_adds_nothing() -> None:
    problem = only(node("    uses: a.b\n    config: {joinStrategy: first}\n"))
    assert problem.message == (
        "node 'n': config.joinStrategy: expected one of 'all', 'any', found string 'first'"
    )


def test_minimums() -> None:
    found = problems_of(
        node(
            "    batch: {uses: a.b, inputKey: x, concurrency: 0, maxFailures: -1}\n"
            "    config: {backoff: 0.5}\n"
        )
    )
    assert [(p.code, p.message) for p in found] == [
        (
            "schema.minimum",
            "node 'n': batch.concurrency: expected an integer >= 1, found integer 0",
        ),
        (
            "schema.minimum",
            "node 'n': batch.maxFailures: expected an integer >= 0, found integer -1",
        ),
        ("schema.minimum", "node 'n': config.backoff: expected a number >= 1, found number 0.5"),
    ]


def test_durations() -> None:
    found = problems_of(
        node("    uses: a.b\n    config:\n      retryDelay: 5 sec\n      timeout: 0s\n")
    )
    help_ = "a number of milliseconds (250) or a string with a unit (250ms, 2s, 1.5m, 1h)"
    assert [(p.line, p.column, p.code, p.message) for p in found] == [
        (
            6,
            19,
            "schema.duration",
            f"node 'n': config.retryDelay: expected a duration: {help_}, found string '5 sec'",
        ),
        (
            7,
            16,
            "schema.duration",
            f"node 'n': config.timeout: expected a duration above zero: {help_}, found string '0s'",
        ),
    ]
    assert only(node("    uses: a.b\n    config: {timeout: 0}\n")).code == "schema.duration"
    assert only(node("    uses: a.b\n    config: {retryDelay: -5}\n")).code == "schema.duration"


def test_node_kinds() -> None:
    problem = only(node("    params: {x: 1}\n"))
    assert (problem.line, problem.column, problem.code, problem.path) == (
        3,
        5,
        "schema.node-kind",
        "$.nodes[0].uses",
    )
    assert (
        problem.message == "node 'n': a node needs 'uses' (the Python callable to run), "
        "'shell' (a command), 'batch' (a worker run for each item of a list), 'loop' (a body run "
        "again while a condition holds) or 'subflow' (another blueprint)"
    )
    found = problems_of(
        node("    uses: a.b\n    params: {}\n    batch: {uses: a.c, inputKey: x}\n")
    )
    assert [(p.line, p.column, p.code, p.message) for p in found] == [
        (
            4,
            5,
            "schema.node-kind",
            "node 'n': has both 'uses' and 'batch'; "
            "a batch node names its worker in 'batch.uses', so remove 'uses'",
        ),
        (
            5,
            5,
            "schema.node-kind",
            "node 'n': a batch node has no 'params' of its own; move them to 'batch.params'",
        ),
    ]


@pytest.mark.parametrize("suffix", ["scatter", "gather"])
def test_reserved_ids(suffix: str) -> None:
    problem = only(f"id: t\nnodes:\n  - id: load_{suffix}\n    uses: a.b\n")
    assert (problem.line, problem.column, problem.code, problem.path) == (
        3,
        9,
        "schema.reserved-id",
        "$.nodes[0].id",
    )
    assert problem.message == (
        f"node 'load_{suffix}': id: ids ending in '_{suffix}' are reserved "
        "for the nodes a batch expands into; rename the node"
    )


def test_empty_lists_and_strings() -> None:
    problem = only("id: t\nnodes: []\n")
    assert (problem.line, problem.column, problem.code) == (2, 8, "schema.min-items")
    assert problem.message == "nodes: expected at least 1 item(s), found an empty array"
    problem = only(
        "id: t\nnodes: [{id: a, uses: m.f}]\nedges: [{source: a, target: a, action: ''}]\n"
    )
    assert (problem.code, problem.message) == (
        "schema.empty",
        "edge 'a' -> 'a': action: expected a non-empty string, found an empty one",
    )


def test_non_finite_numbers_from_hand_built_data() -> None:
    def problems(config: dict[str, Any]) -> list[Problem]:
        data = {"id": "t", "nodes": [{"id": "n", "uses": "a.b", "config": config}]}
        doc = Document("hand.json", Path("hand.json"), "", "json", data)
        with pytest.raises(BlueprintError) as info:
            check(doc)
        return list(info.value.problems)

    [inf] = problems({"backoff": math.inf})  # above the schema's maximum
    assert (inf.code, inf.path) == ("schema.maximum", "$.nodes[0].config.backoff")
    assert inf.message == "node 'n': config.backoff: expected a number <= 1,000, found number inf"
    nan, delay = problems({"backoff": math.nan, "retryDelay": math.nan})  # no comparison fails
    assert (nan.code, nan.path) == ("schema.number", "$.nodes[0].config.backoff")
    assert nan.message == "node 'n': config.backoff: expected a finite number, found number nan"
    assert (delay.code, delay.path) == ("schema.duration", "$.nodes[0].config.retryDelay")


def test_one_problem_per_value_whatever_the_number_of_rules_it_breaks() -> None:
    problem = only(node("    uses: a.b\n    config: {joinStrategy: 3}\n"))
    assert (problem.code, problem.message) == (
        "schema.type",
        "node 'n': config.joinStrategy: expected string, found integer 3",
    )
    problem = only("id: t\nnodes:\n  - {id: 'bad id_scatter', uses: a.b}\n")
    assert problem.code == "schema.pattern"
    found = problems_of("id: t\nnodes:\n  - {id: 7, uses: a.b}\n")
    assert [p.code for p in found] == ["schema.type"]


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = "id: t\nnodez: 1\nnodes:\n  - {id: a, uses: x}\n  - {id: b, batch: {uses: a.b}}\n"
    text += "edges:\n  - {source: a}\n"
    found = problems_of(text)
    assert [(p.line, p.code) for p in found] == [
        (2, "schema.unknown-key"),
        (4, "schema.pattern"),
        (5, "schema.required"),
        (7, "schema.required"),
    ]
    assert all(p.file == "bp.yaml" for p in found)


def test_json_problems_are_located_too() -> None:
    found = problems_of(
        '{"id": "t",\n "nodes": [{"id": "a", "uses": "a.b",\n            "confg": {}}]}', "json"
    )
    assert [(p.line, p.column, p.message) for p in found] == [
        (3, 13, "node 'a': unknown key 'confg' (did you mean 'config'?)")
    ]


# -- properties --------------------------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
WORDS = st.sampled_from(
    [
        "id",
        "uses",
        "batch",
        "config",
        "inputKey",
        "params",
        "timeout",
        "a.b",
        "n_gather",
        "2s",
        "",
        "x",
    ]
)
NODE = st.dictionaries(
    st.sampled_from(["id", "uses", "params", "inputs", "config", "batch", "extra"]),
    st.one_of(
        WORDS,
        JSONISH,
        st.dictionaries(WORDS, st.one_of(WORDS, st.integers(-2, 3), st.floats()), max_size=4),
    ),
    max_size=5,
)
BLUEPRINTISH = st.fixed_dictionaries(
    {"id": st.one_of(WORDS, JSONISH), "nodes": st.lists(NODE, max_size=3)},
    optional={
        "edges": st.lists(st.dictionaries(WORDS, WORDS, max_size=4), max_size=2),
        "context": JSONISH,
    },
)


def assert_checks_cleanly(data: Any) -> None:
    doc = Document("gen.json", Path("gen.json"), "", "json", data)
    try:
        blueprint = check(doc)
    except BlueprintError as exc:
        assert exc.problems
        assert all(
            p.line >= 1 and p.column >= 1 and p.code.startswith("schema.") for p in exc.problems
        )
    else:
        assert isinstance(blueprint, Blueprint)
        assert all(
            math.isfinite(n.config.retry_delay) and math.isfinite(n.config.backoff)
            for n in blueprint.nodes
        )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSONISH, BLUEPRINTISH))
def test_any_data_gives_a_blueprint_or_blueprint_error(data: Any) -> None:
    assert_checks_cleanly(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BLUEPRINTISH)
def test_problems_point_into_the_text_they_came_from(data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=1, allow_nan=True)
    lines = text.count("\n") + 1
    try:
        check(Document("gen.json", Path("gen.json"), text, "json", data))
    except BlueprintError as exc:
        assert all(1 <= p.line <= lines for p in exc.problems)


def test_a_blueprint_without_id_takes_its_file_name(tmp_path: Path) -> None:
    path = tmp_path / "job application.yaml"
    path.write_text("nodes:\n  - id: n\n    uses: a.b\n")
    assert check(load(path)).id == "job-application"
    named = tmp_path / "other.json"
    named.write_text('{"id": "given", "nodes": [{"id": "n", "uses": "a.b"}]}')
    assert check(load(named)).id == "given"
