"""Build graphs in tests without files: `graph(nodes=[...], edges=[...])`."""

from __future__ import annotations

from typing import Any

from flowrun.engine.expand import expand
from flowrun.model import BatchSpec, Blueprint, Config, EdgeSpec, Graph, LoopSpec, NodeSpec


def task(id: str, uses: str = "builtins.len", **kw: Any) -> NodeSpec:
    config = Config(**kw.pop("config", {}))
    return NodeSpec(id, uses, config=config, path=("nodes", 0), **kw)


def batch(id: str, input_key: str, uses: str = "builtins.abs", **kw: Any) -> NodeSpec:
    config = Config(**kw.pop("config", {}))
    spec = BatchSpec(uses, input_key, kw.pop("output_key", id), **kw)
    return NodeSpec(id, None, batch=spec, config=config, path=("nodes", 0))


def loop(id: str, uses: str, while_: str, max_iterations: int, **kw: Any) -> NodeSpec:
    config = Config(**kw.pop("config", {}))
    spec = LoopSpec(uses, while_, max_iterations, kw.pop("params", {}), kw.pop("delay", 0.0))
    return NodeSpec(id, None, config=config, path=("nodes", 0), loop=spec, **kw)


def edge(source: str, target: str, **kw: Any) -> EdgeSpec:
    return EdgeSpec(source, target, path=("edges", 0), **kw)


def graph(nodes: list[NodeSpec], edges: list[EdgeSpec] = (), context: Any = None) -> Graph:  # type: ignore[assignment]
    return expand(Blueprint("t", tuple(nodes), tuple(edges), context=context or {}))
