"""The split schema verdict (`blueprint.verdict`) answers exactly what jsonschema answers on the
whole document, for every node kind, however many nodes share a shape or a value."""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest

from flowrun.blueprint import schema, verdict
from flowrun.blueprint.verdict import Verdict

st = hypothesis.strategies


def full(data: Any) -> bool:
    return bool(schema._validator().is_valid(data))


def split(data: Any) -> bool:
    validator = schema._validator()
    return Verdict(validator).valid(validator.schema, data)


def test_every_node_kind_is_checked_by_its_shape() -> None:
    # Otherwise each node would go to jsonschema whole (correct, but ~200 µs a node).
    defs = schema.schema()["$defs"]
    parts = schema._validator().schema["properties"]["nodes"]["items"]["properties"]
    for name in ("node", "batch", "loop", "subflow", "config", "edge", "pool"):
        assert verdict._kind(schema._inline_refs(defs[name], defs)) == verdict._OBJECT, name
    assert verdict._kind(parts["id"]) == verdict._NOT  # an identifier, and not `_scatter`


GOOD_NODE = {"id": "a", "uses": "m.f"}
NODE_VALUES = [None, 0, 1, True, "", "m.f", "x_scatter", "a b", "1s", [], {}, ["ls"], {"k": "v"}]
ID = st.sampled_from(["a", "b", "a_scatter", "b_gather", "c.d", "", "a b", 1, None])
DOTTED = st.sampled_from(["m.f", "m:f", "mf", "m.", "", 2, None, "m.f\n"])
TEXT = st.sampled_from(["k", "", 0, None, "items", ["k"]])
SUBFLOW = st.dictionaries(
    st.sampled_from(["blueprint", "inputs", "outputs", "extra"]),
    st.sampled_from(["child.yaml", "", 1, {}, {"a": "b"}, {"a": ""}, "out"]),
    max_size=3,
)
BATCH_KEYS = ["uses", "shell", "inputKey", "itemsFrom", "outputKey", "outputTo", "params"]
BATCH_KEYS += ["concurrency", "maxFailures", "subflow", "pool", "x"]
BATCH = st.dictionaries(
    st.sampled_from(BATCH_KEYS),
    st.one_of(DOTTED, TEXT, SUBFLOW, st.sampled_from([1, 0, -1, 2.5, True, {}, "echo"])),
    max_size=5,
)
LOOP = st.dictionaries(
    st.sampled_from(["uses", "while", "maxIterations", "delay", "params", "subflow", "x"]),
    st.one_of(DOTTED, TEXT, SUBFLOW, st.sampled_from([1, 0, 3, "1s", "-1s", 250, {}, "i < 3"])),
    max_size=5,
)
NODE = st.fixed_dictionaries(
    {"id": ID},
    optional={
        "uses": DOTTED,
        "shell": st.sampled_from(["echo hi", "", ["ls", 1], [], 3]),
        "batch": st.one_of(BATCH, st.sampled_from(NODE_VALUES)),
        "loop": st.one_of(LOOP, st.sampled_from(NODE_VALUES)),
        "subflow": st.one_of(SUBFLOW, st.sampled_from(NODE_VALUES)),
        "params": st.sampled_from([{}, {"a": 1}, [], "p"]),
        "inputs": st.sampled_from(["k", "", {"a": "k"}, {"a": ""}, 1]),
        "config": st.sampled_from([{}, {"maxRetries": 1}, {"retryDelay": "-1s"}, {"x": 1}, []]),
        "bogus": st.just(1),
    },
)


def test_split_verdict_on_random_nodes_of_every_kind() -> None:
    seen: set[bool] = set()

    @hypothesis.settings(max_examples=600, deadline=None, derandomize=True)
    @hypothesis.given(st.lists(st.one_of(NODE, st.sampled_from(NODE_VALUES)), max_size=4))
    def agree(nodes: list[Any]) -> None:
        data = {"id": "bp", "nodes": [GOOD_NODE, *nodes]}
        answer = split(data)
        assert answer is full(data)
        seen.add(answer)

    agree()
    assert seen == {True, False}


def many(node: dict[str, Any], n: int = 300) -> dict[str, Any]:
    nodes = [{**node, "id": f"n{i}"} for i in range(n)]
    edges = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(n - 1)]
    return {"id": "bp", "nodes": nodes, "edges": edges}


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["nodes"][150].update(id="n150_scatter"),  # refused by `not`, one value
        lambda d: d["nodes"][299].update(uses="m.f\n"),  # one distinct value among the same
        lambda d: d["nodes"][7].update(uses=7),  # the same text, another type
        lambda d: d["nodes"][3].update(batch={"uses": "m.f", "inputKey": "k"}),  # one shape
        lambda d: d["nodes"][3].update(config={"maxRetries": True}),  # True is not an integer
        lambda d: d["edges"][200].update(target="no such id!"),
        lambda d: d["edges"].append([]),
        lambda d: d["nodes"].append("n"),
    ],
)
def test_one_bad_value_among_many_is_found(change: Any) -> None:
    data = many({"uses": "m.f", "config": {"maxRetries": 1}})
    assert split(data) is full(data) is True
    change(data)
    assert split(data) is full(data) is False


@pytest.mark.parametrize("second", [1, 1.0, True, "1", 0, False, None, 2.5])
def test_values_that_look_alike_are_told_apart(second: Any) -> None:
    # One document, so a verdict kept for the first value is there when the second comes.
    for first, then in ((1, second), (second, 1)):
        nodes = [
            {"id": "a", "uses": "m.f", "config": {"maxRetries": first}},
            {"id": "b", "uses": "m.f", "config": {"maxRetries": then}},
        ]
        pools = {"p": {"burst": first}, "q": {"burst": then}}
        for data in ({"nodes": nodes}, {"nodes": nodes[:1], "pools": pools}):
            assert split(data) is full(data)
