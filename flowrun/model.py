"""Frozen specifications: what a blueprint says, and the expanded graph that runs.

Stdlib only. `schema.check` builds a `Blueprint`; `expand.expand` builds a `Graph`.
Nothing here changes after it is built; run state lives in the scheduler alone.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, Protocol

from flowrun.errors import PathT, Problem
from flowrun.frozen import Frozen, fast_frozen

MAX_DELAY = 10_000_000.0  # seconds: the longest duration a blueprint may give (its schema)


class Document(Protocol):
    """Where a blueprint came from (`flowrun.blueprint.loader.Document`): positions in its file."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def text(self) -> str: ...

    def where(self, path: Sequence[str | int]) -> tuple[int, int]: ...

    def problem(
        self,
        path: Sequence[str | int],
        code: str,
        message: str,
        *,
        key: bool = False,
        severity: str = "error",
    ) -> Problem: ...


class Expression(Protocol):
    """A compiled `condition` / `transform` (see `flowrun.expr.compiler`)."""

    source: str

    def evaluate(self, scope: Mapping[str, Any]) -> Any: ...


@fast_frozen
class Config(Frozen):
    """A node's `config` stanza, durations already in seconds."""

    max_retries: int = 0
    retry_delay: float = 0.0
    backoff: float = 2.0
    timeout: float | None = None
    fallback: str | None = None
    join: str = "all"  # "all" | "any"
    run_if: str = "success"  # "success" | "failure" | "always"
    retry_on: tuple[str, ...] | None = None  # exception class names; None: every failure
    pool: str | None = None

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2 is the first retry)."""
        if self.retry_delay <= 0:
            return 0.0
        try:
            delay = float(self.retry_delay * self.backoff ** max(0, attempt - 2))
        except OverflowError:  # backoff ** (a billion retries)
            delay = math.inf
        return min(delay, MAX_DELAY)


@fast_frozen
class SubflowSpec(Frozen):
    """A `subflow` stanza: run another blueprint as this node."""

    blueprint: str  # path relative to this blueprint's file
    inputs: Mapping[str, str] = field(default_factory=dict)  # child context key <- source
    outputs: Mapping[str, str] | str | None = None


@fast_frozen
class BatchSpec(Frozen):
    """A node's `batch` stanza: the worker and where its items come from and go."""

    uses: str
    input_key: str | None  # None when the items come from a file (`items_from`)
    output_key: str
    params: Mapping[str, Any] = field(default_factory=dict)
    concurrency: int | None = None
    max_failures: int = 0
    subflow: SubflowSpec | None = None  # instead of `uses`: a child run per item
    items_from: str | None = None  # a path (or glob) relative to the blueprint's directory
    output_to: str | None = None  # a .jsonl path the results are written to, in item order
    pool: str | None = None
    #: `itemsFrom` / `outputTo` holding `${{ }}`: their compiled `expr.template.Template`,
    #: by field name, rendered when the scatter starts
    paths: Mapping[str, Any] = field(default_factory=dict)


@fast_frozen
class LoopSpec(Frozen):
    """A `loop` stanza: call `uses` (or run `subflow`) again while `while_` (an expression's
    text) is true."""

    uses: str  # "" when the body is a subflow
    while_: str
    max_iterations: int
    params: Mapping[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    subflow: SubflowSpec | None = None  # instead of `uses`: one child run per iteration


@fast_frozen
class PoolSpec(Frozen):
    """A `pools:` entry: a shared concurrency cap and a token-bucket rate (starts per second)."""

    name: str
    concurrency: int | None = None
    rate: float | None = None  # tokens per second
    rate_text: str | None = None  # as written: "10/s"
    burst: int = 1
    path: PathT = ()

    def describe(self) -> str:
        """`api: 4 at once, 10/s (burst 2)`, as `graph` and `validate` show it."""
        parts = []
        if self.concurrency is not None:
            parts.append(f"{self.concurrency} at once")
        if self.rate_text is not None:
            parts.append(self.rate_text + (f" (burst {self.burst})" if self.burst != 1 else ""))
        return f"{self.name}: {', '.join(parts) or 'no limit'}"


@fast_frozen  # one per node
class NodeSpec(Frozen):
    """One entry of `nodes`. `path` locates it in the document, e.g. ``("nodes", 2)``."""

    id: str
    uses: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: str | Mapping[str, str] | None = None
    config: Config = field(default_factory=Config)
    batch: BatchSpec | None = None
    path: PathT = ()
    loop: LoopSpec | None = None
    subflow: SubflowSpec | None = None

    @property
    def calls(self) -> tuple[tuple[str, PathT], ...]:
        """(dotted path, where it is written) of every function this node calls itself."""
        if self.batch is not None:
            return () if self.batch.subflow else ((self.batch.uses, ("batch", "uses")),)
        if self.loop is not None:
            return () if self.loop.subflow else ((self.loop.uses, ("loop", "uses")),)
        return () if self.uses is None else ((self.uses, ("uses",)),)

    @property
    def pool(self) -> str | None:
        """The pool this node's calls (a batch's items) run in: `batch.pool`, else `config.pool`."""
        if self.batch is not None and self.batch.pool is not None:
            return self.batch.pool
        return self.config.pool


@fast_frozen
class EdgeSpec(Frozen):
    """An edge as written: `source`, `target` and the route `action` it needs."""

    source: str
    target: str
    action: str | None = None
    condition: str | None = None
    transform: str | None = None
    path: PathT = ()


@fast_frozen
class Blueprint(Frozen):
    """A parsed, checked blueprint before expansion: its nodes, edges and config."""

    id: str
    nodes: tuple[NodeSpec, ...]
    edges: tuple[EdgeSpec, ...]
    description: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    document: Document | None = None
    pools: Mapping[str, PoolSpec] = field(default_factory=dict)

    @property
    def file(self) -> str:
        return self.document.name if self.document is not None else "<blueprint>"


# The id rules of expanded nodes, in one place: a batch `B` is `B_scatter` -> `B` -> `B_gather`,
# and its items run as `B[0]`, `B[1]`, ...
SCATTER_SUFFIX = "_scatter"
GATHER_SUFFIX = "_gather"


def scatter_id(batch: str) -> str:
    return batch + SCATTER_SUFFIX


def gather_id(batch: str) -> str:
    return batch + GATHER_SUFFIX


def item_id(batch: str, index: int) -> str:
    return f"{batch}[{index}]"


def is_item_id(node: str) -> bool:
    """Is `node` one item of a group (`B[3]`), rather than a node of the blueprint?"""
    return node.endswith("]") and "[" in node


class Kind(enum.StrEnum):
    """The role of a graph node: how `graph` draws it and names it in `--format json`."""

    TASK = "task"
    SCATTER = "scatter"
    WORKER = "worker"
    GATHER = "gather"
    LOOP = "loop"
    SUBFLOW = "subflow"


@fast_frozen  # one per node
class GraphNode(Frozen):
    """A node of the expanded graph; a batch `B` gives `B_scatter`, `B` (worker), `B_gather`.

    `node_kind` names the node kind (`flowrun.engine.kinds`) that expanded it and runs it."""

    id: str
    kind: Kind
    spec: NodeSpec
    batch: str | None = None  # the batch id, for scatter/worker/gather
    node_kind: str = "task"

    @property
    def owner(self) -> str:
        """The blueprint node this graph node belongs to (a batch's id for its three nodes)."""
        return self.batch or self.id

    @property
    def uses(self) -> str | None:
        """What this graph node calls (a batch's worker calls the batch's `uses`)."""
        if self.kind in (Kind.SCATTER, Kind.GATHER) or not self.spec.calls:
            return None
        return self.spec.calls[0][0]

    @property
    def batch_spec(self) -> BatchSpec:
        """The `batch` stanza of a batch's node (a `TypeError` for any other node)."""
        if self.spec.batch is None:
            raise TypeError(f"graph node {self.id!r} is not part of a batch")
        return self.spec.batch

    @property
    def loop_spec(self) -> LoopSpec:
        """The `loop` stanza of a loop node (a `TypeError` for any other node)."""
        if self.spec.loop is None:
            raise TypeError(f"graph node {self.id!r} is not a loop")
        return self.spec.loop

    @property
    def task_uses(self) -> str:
        """The dotted path a task node calls (a `TypeError` for any other node)."""
        if self.spec.uses is None:
            raise TypeError(f"graph node {self.id!r} calls no function of its own")
        return self.spec.uses


@fast_frozen
class GraphEdge(Frozen):
    """An edge of the expanded graph."""

    source: str
    target: str
    action: str | None = None
    condition: Expression | None = None
    transform: Expression | None = None
    spec: EdgeSpec | None = None  # None for the scatter->worker->gather edges expansion adds


@fast_frozen
class Graph(Frozen):
    """The expanded DAG. `order` is a topological order; `preds`/`succs` index `edges`."""

    blueprint: Blueprint
    nodes: Mapping[str, GraphNode]
    edges: tuple[GraphEdge, ...]
    order: tuple[str, ...]
    preds: Mapping[str, tuple[GraphEdge, ...]]
    succs: Mapping[str, tuple[GraphEdge, ...]]
    fallbacks: frozenset[str] = frozenset()  # nodes that run only in place of a failed node
    #: blueprint node id -> the graph node an edge from it leaves (a batch's gather)
    exits: Mapping[str, str] = field(default_factory=dict)
    #: (blueprint node id, field) -> a compiled expression of a node stanza (a loop's `while`)
    expressions: Mapping[tuple[str, str], Expression] = field(default_factory=dict)
    #: subflow node id -> the child blueprint's expanded graph
    children: Mapping[str, Graph] = field(default_factory=dict)
    #: blueprint node id -> the context key its output is stored under (a batch's outputKey)
    output_keys: Mapping[str, str] = field(default_factory=dict)

    def is_final(self, node: str) -> bool:
        """Does no edge leave blueprint node `node` (and is it not a fallback)?"""
        return not self.succs[self.exits.get(node, node)] and node not in self.fallbacks
