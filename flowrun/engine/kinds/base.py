"""The seam every node kind implements, and what the driver offers the kinds.

A node kind answers, for the blueprint nodes it claims:

- at load time (`engine.expand`): which graph nodes and internal edges a node becomes, which of
  them an edge enters and leaves, what the node reads and which context key it writes;
- at run time (`engine.driver`): what to do when one of its graph nodes is ready (`start`),
  how to hand out more work while there is room (`fill`), and how an outcome settles it
  (`succeeded`, `failed`, `recovered`, `returned`);
- for durability: what an earlier run left for it (`Stored`) and that it does not call again;
- for people: the events it emits (`BatchStarted` and the like), which the store, the report,
  the display and the `--events` file record without knowing any kind by name.

The driver builds one instance of each kind per run, passing itself as the `Runtime`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from flowrun import events as ev
from flowrun.engine.invoke import Call, Outcome
from flowrun.errors import PathT
from flowrun.model import Graph, GraphEdge, GraphNode, NodeSpec
from flowrun.node import SharedContext

if TYPE_CHECKING:
    from flowrun.engine.routing import Router
    from flowrun.engine.scheduler import Scheduler


@dataclass(slots=True)
class Work:
    """A call in flight, and whom its outcome is for."""

    call: Call
    node: str  # the blueprint node it belongs to (a batch's id for its items)
    owner: NodeKind  # the kind that settles it
    index: int | None = None  # the item index, for a call that is one of a group
    fallback_for: Work | None = None  # the failed work this fallback stands in for
    first_error: Outcome | None = None  # that work's last failure
    input_kwargs: Mapping[str, Any] | None = None  # from an `inputs` mapping (not params)


@dataclass(slots=True)
class Stored:
    """What an earlier run left (for `--resume`): outputs of settled-ok nodes and items."""

    nodes: dict[str, tuple[str, Any, str | None, int]]  # id -> (status, output, action, attempts)
    items: dict[str, dict[int, Any]]  # group (batch) -> index -> output


class Runtime(Protocol):
    """What a running kind may use: the driver's state and verbs."""

    graph: Graph
    sched: Scheduler
    router: Router
    context: SharedContext
    emit: ev.Sink
    stored: Stored
    concurrency: int
    dispatch_ms: float

    def free(self) -> int:
        """How many more chunks may be in flight now."""
        ...

    def queue(self, work: Work) -> None:
        """Run `work` (one call) as soon as the concurrency limit allows."""
        ...

    def submit(self, works: list[Work]) -> None:
        """Hand a chunk of calls to the backend now (the caller checked `free()`)."""
        ...

    def taken_or_fail(
        self, node: str, output: Any, action: str | None, attempt: int
    ) -> dict[str, Any] | None:
        """Store a blueprint node's output and evaluate its edges; on an expression error fail
        the node (event and status) and return None."""
        ...

    def fail_inline(self, node: str, etype: str, message: str, graph_node: str) -> None:
        """Fail blueprint node `node` without having called anything (bad input, expression)."""
        ...

    def run_failed(self) -> None:
        """The run has failed (with `--fail-fast`, stop starting work)."""
        ...


class NodeKind:
    """One kind of blueprint node. Subclasses override what differs from a plain task."""

    name: ClassVar[str] = "task"
    #: may a node of this kind be another node's `config.fallback`?
    can_stand_in: ClassVar[bool] = True

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    # -- load time ---------------------------------------------------------------------------
    @classmethod
    def claims(cls, spec: NodeSpec) -> bool:
        raise NotImplementedError

    @classmethod
    def graph_nodes(cls, spec: NodeSpec) -> list[GraphNode]:
        raise NotImplementedError

    @classmethod
    def internal_edges(cls, spec: NodeSpec) -> list[GraphEdge]:
        return []

    @classmethod
    def entry(cls, spec: NodeSpec) -> str:
        """The graph node an edge to this blueprint node enters."""
        return spec.id

    @classmethod
    def exit(cls, spec: NodeSpec) -> str:
        """The graph node an edge from this blueprint node leaves."""
        return spec.id

    @classmethod
    def output_key(cls, spec: NodeSpec) -> str:
        """The context key the node's output is stored under."""
        return spec.id

    @classmethod
    def reads(cls, spec: NodeSpec) -> Sequence[tuple[PathT, str]]:
        """(document path, source text) of every context source the node reads."""
        return []

    @classmethod
    def reader(cls, spec: NodeSpec) -> str:
        """The graph node that reads those sources when it starts."""
        return cls.entry(spec)

    # -- run time ----------------------------------------------------------------------------
    def start(self, node: GraphNode) -> None:
        """Graph node `node` (of this kind) is ready: queue its work or settle it."""
        raise NotImplementedError

    def fill(self) -> None:
        """Hand out more work while there is room (kinds that hand out items)."""

    def succeeded(self, work: Work, out: Outcome) -> None:
        raise NotImplementedError

    def failed(self, work: Work, out: Outcome) -> None:
        """`work` failed for good (its retries used, no fallback, or the fallback failed)."""
        raise NotImplementedError

    def recovered(self, work: Work, out: Outcome, fallback: str) -> None:
        """`work` failed and its fallback `fallback` succeeded with `out`."""
        raise NotImplementedError

    def queued(self, work: Work) -> None:
        """`work` (one call: a first attempt or a retry) is about to be submitted on its own."""

    def returned(self, works: list[Work], outcomes: list[Outcome]) -> None:
        """A chunk of this kind's work came back (before its outcomes are settled)."""
