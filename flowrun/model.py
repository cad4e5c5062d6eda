"""Frozen specifications: what a blueprint says, and the expanded graph that runs.

Stdlib only. `schema.check` builds a `Blueprint`; `expand.expand` builds a `Graph`.
Nothing here changes after it is built; run state lives in the scheduler alone.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flowrun.errors import PathT, Problem


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


@dataclass(frozen=True, slots=True)
class Config:
    """A node's `config` stanza, durations already in seconds."""

    max_retries: int = 0
    retry_delay: float = 0.0
    backoff: float = 2.0
    timeout: float | None = None
    fallback: str | None = None
    join: str = "all"  # "all" | "any"
    retry_on: tuple[str, ...] | None = None  # exception class names; None: every failure

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2 is the first retry)."""
        return float(self.retry_delay * self.backoff ** max(0, attempt - 2))


@dataclass(frozen=True, slots=True)
class BatchSpec:
    uses: str
    input_key: str
    output_key: str
    params: Mapping[str, Any] = field(default_factory=dict)
    concurrency: int | None = None
    max_failures: int = 0


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One entry of `nodes`. `path` locates it in the document, e.g. ``("nodes", 2)``."""

    id: str
    uses: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: str | Mapping[str, str] | None = None
    config: Config = field(default_factory=Config)
    batch: BatchSpec | None = None
    path: PathT = ()


@dataclass(frozen=True, slots=True)
class EdgeSpec:
    source: str
    target: str
    action: str | None = None
    condition: str | None = None
    transform: str | None = None
    path: PathT = ()


@dataclass(frozen=True, slots=True)
class Blueprint:
    id: str
    nodes: tuple[NodeSpec, ...]
    edges: tuple[EdgeSpec, ...]
    description: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    document: Document | None = None

    @property
    def file(self) -> str:
        return self.document.name if self.document is not None else "<blueprint>"


class Kind(enum.StrEnum):
    TASK = "task"
    SCATTER = "scatter"
    WORKER = "worker"
    GATHER = "gather"


@dataclass(frozen=True, slots=True)
class GraphNode:
    """A node of the expanded graph; a batch `B` gives `B_scatter`, `B` (worker), `B_gather`."""

    id: str
    kind: Kind
    spec: NodeSpec
    batch: str | None = None  # the batch id, for scatter/worker/gather

    @property
    def uses(self) -> str | None:
        if self.kind is Kind.WORKER and self.spec.batch is not None:
            return self.spec.batch.uses
        return self.spec.uses if self.kind is Kind.TASK else None


@dataclass(frozen=True, slots=True)
class GraphEdge:
    source: str
    target: str
    action: str | None = None
    condition: Expression | None = None
    transform: Expression | None = None
    spec: EdgeSpec | None = None  # None for the scatter->worker->gather edges expansion adds


@dataclass(frozen=True, slots=True)
class Graph:
    """The expanded DAG. `order` is a topological order; `preds`/`succs` index `edges`."""

    blueprint: Blueprint
    nodes: Mapping[str, GraphNode]
    edges: tuple[GraphEdge, ...]
    order: tuple[str, ...]
    preds: Mapping[str, tuple[GraphEdge, ...]]
    succs: Mapping[str, tuple[GraphEdge, ...]]
    fallbacks: frozenset[str] = frozenset()  # nodes that run only in place of a failed node
