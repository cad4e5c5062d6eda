"""The event stream a run emits. Stdlib only.

The executor emits these, in order, from the one thread that drives the run; the progress
display, the human summary, the `--events` file and the durable store are sinks of the same
stream (a sink is any callable taking an `Event`). Every event is frozen and carries `ts`
(seconds since the epoch). `node` is the node id where one applies: a task id, a batch id,
or a batch item `B[3]`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import field, fields
from typing import Any, ClassVar

from flowrun.frozen import Frozen, fast_frozen


@fast_frozen
class Event(Frozen):
    """The base of every event: `ts`, and `to_json` for the `--events` file."""

    event: ClassVar[str] = "event"
    #: fields left out of the `--events` file (large or not JSON-safe)
    private: ClassVar[frozenset[str]] = frozenset()
    ts: float

    def to_json(self) -> dict[str, Any]:
        """The object written to the `--events` file: `event`, `ts`, then the other fields."""
        names = _PUBLIC.get(type(self))
        if names is None:
            names = _PUBLIC[type(self)] = tuple(
                f.name for f in fields(self) if f.name not in self.private
            )
        out: dict[str, Any] = {"event": self.event}
        for name in names:
            out[name] = getattr(self, name)
        return out


_PUBLIC: dict[type[Event], tuple[str, ...]] = {}


@fast_frozen
class RunStarted(Event):
    """A run (new or resumed) starts: its id, blueprint and the nodes it counts."""

    event: ClassVar[str] = "run_started"
    private: ClassVar[frozenset[str]] = frozenset({"graph"})
    run_id: str = ""
    blueprint: str = ""
    nodes: int = 0  # task nodes + batches: what the overall bar counts
    node_ids: tuple[str, ...] = ()  # those nodes' ids (batches by batch id), in blueprint order
    resumed: bool = False
    graph: Any = None  # the `flowrun.model.Graph` being run, for sinks that need its shape


@fast_frozen  # one per task node
class NodeStarted(Event):
    """An attempt of a node or batch item starts."""

    event: ClassVar[str] = "node_started"
    node: str = ""
    attempt: int = 1
    batch: str | None = None
    index: int | None = None


@fast_frozen  # one per task node
class NodeSucceeded(Event):
    """A node or batch item finished with an output (or was reused on resume)."""

    event: ClassVar[str] = "node_succeeded"
    private: ClassVar[frozenset[str]] = frozenset(
        {"output", "output_json", "context_updates", "status", "logs"}
    )
    node: str = ""
    attempt: int = 1
    duration_ms: float = 0.0
    batch: str | None = None
    index: int | None = None
    action: str | None = None
    output: Any = None
    output_json: str = "null"  # `output` already encoded (the worker checks it is JSON)
    reused: bool = False  # taken from an earlier run's stored state (`--resume`), not called
    context_updates: Mapping[str, Any] = field(default_factory=dict)
    status: str = "succeeded"  # "recovered" for a reused node that a fallback stood in for
    logs: str = ""  # what the attempt printed (captured stdout/stderr, the tail)


@fast_frozen
class ItemsStarted(Event):
    """Items of batch `batch` handed to a worker together (one chunk): one event for what
    would be a `NodeStarted` per item. A sink that wants those gets them from `expand()`;
    the `--events` file writes a `node_started` line per item."""

    event: ClassVar[str] = "items_started"
    batch: str = ""
    indices: Sequence[int] = ()  # a `range` when consecutive

    def expand(self) -> Iterator[NodeStarted]:
        b, ts = self.batch, self.ts
        return (NodeStarted(ts, f"{b}[{i}]", 1, b, i) for i in self.indices)


@fast_frozen
class ItemsSucceeded(Event):
    """Items of batch `batch` that succeeded at their first attempt, together (one chunk, in
    item order), with nothing more to say (no action, nothing printed, no `ctx.set`): one
    event for what would be a `NodeSucceeded` per item (`expand()`). `outputs_json` is the
    outputs as one JSON array, encoded once by the worker."""

    event: ClassVar[str] = "items_succeeded"
    private: ClassVar[frozenset[str]] = frozenset({"outputs", "outputs_json"})
    batch: str = ""
    indices: Sequence[int] = ()
    durations_ms: Sequence[float] = ()
    outputs: Sequence[Any] = ()
    outputs_json: str = "[]"

    def expand(self) -> Iterator[NodeSucceeded]:
        b, ts = self.batch, self.ts
        texts = [json.dumps(v, separators=(",", ":")) for v in self.outputs]
        for i, ms, out, text in zip(self.indices, self.durations_ms, self.outputs, texts,
                                    strict=True):  # fmt: skip
            yield NodeSucceeded(ts, f"{b}[{i}]", 1, ms, b, i, None, out, text)


#: the events that stand for one event per item, and the per-item event each expands into
CHUNKED: Mapping[type[Event], type[Event]] = {
    ItemsStarted: NodeStarted,
    ItemsSucceeded: NodeSucceeded,
}


@fast_frozen
class NodeRetry(Event):
    """An attempt failed and another will follow after `delay_s` seconds."""

    event: ClassVar[str] = "node_retry"
    private: ClassVar[frozenset[str]] = frozenset({"traceback", "logs"})
    node: str = ""
    attempt: int = 1  # the attempt that failed
    delay_s: float = 0.0
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    batch: str | None = None
    index: int | None = None
    logs: str = ""
    attempts: int = 0  # attempts allowed in all (1 + maxRetries); 0 when unknown


@fast_frozen
class NodeFailed(Event):
    """A node (or batch item) failed: its last attempt failed, or it failed without running.

    `final` is False when a fallback is about to stand in for it; when that fallback fails in
    turn, the fallback's own `NodeFailed` names the node in `fallback_for`, and both failed."""

    event: ClassVar[str] = "node_failed"
    private: ClassVar[frozenset[str]] = frozenset({"traceback", "final", "fallback_for", "logs"})
    node: str = ""
    attempt: int = 1
    duration_ms: float = 0.0
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    batch: str | None = None
    index: int | None = None
    final: bool = True
    fallback_for: str | None = None
    logs: str = ""


@fast_frozen
class NodeRecovered(Event):
    """A failed node's fallback succeeded; its output stands in for the node's."""

    event: ClassVar[str] = "node_recovered"
    private: ClassVar[frozenset[str]] = frozenset({"output"})
    node: str = ""
    fallback: str = ""
    output: Any = None


@fast_frozen
class NodeSkipped(Event):
    """A node is skipped: it does not run in this run."""

    event: ClassVar[str] = "node_skipped"
    node: str = ""


@fast_frozen
class BatchStarted(Event):
    """A batch fans out: how many items it has, how many an earlier run finished."""

    event: ClassVar[str] = "batch_started"
    node: str = ""
    total: int = 0
    done: int = 0  # items already finished before this run (resume)


@fast_frozen
class BatchFinished(Event):
    """A batch is over: its items' counts and the gathered output."""

    event: ClassVar[str] = "batch_finished"
    private: ClassVar[frozenset[str]] = frozenset({"output"})
    node: str = ""
    status: str = "succeeded"
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    output_key: str = ""
    output: Any = None


@fast_frozen
class RunCancelling(Event):
    """The run is stopping (Ctrl-C): no new work; running nodes get `grace_s` to finish."""

    event: ClassVar[str] = "run_cancelling"
    grace_s: float = 0.0
    running: int = 0  # calls in flight


@fast_frozen
class PoolWaiting(Event):
    """Node (a batch, for its items) waits for its pool's rate; said once per node and run."""

    event: ClassVar[str] = "pool_waiting"
    node: str = ""
    pool: str = ""
    rate: str = ""  # as written: "10/s"


@fast_frozen
class RunFinished(Event):
    """The run is over: its status, final context and errors."""

    event: ClassVar[str] = "run_finished"
    private: ClassVar[frozenset[str]] = frozenset({"context", "groups"})
    status: str = "completed"  # completed | failed | cancelled
    duration_ms: float = 0.0
    context: Mapping[str, Any] = field(default_factory=dict)  # the run context at the end
    #: each bound group of items (a batch) -> (total, succeeded, failed) at the end, finished
    #: or not: what its counts are, without a sink counting every item's event
    groups: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)


Sink = Callable[[Event], None]


class Bus:
    """Fans each event out to every sink, in the order the sinks were given.

    A sink with a `handlers` mapping (event type -> callable) is called through it: the bus
    calls the handler for the event's type directly and skips the sink for types it does not
    handle, so a sink that counts a few kinds of event costs nothing on the others (an item's
    `NodeStarted`, say). The routing is worked out once per event type.

    A chunk's event (`ItemsStarted`, `ItemsSucceeded`) goes as it is to a sink whose
    `handlers` name its type, to nothing for a sink whose `handlers` do not, and, expanded
    into its per-item events, to a sink without `handlers` (a plain callable sees what it
    always saw), unless that sink's `chunks` mapping (event type -> callable) takes it.

    `idle()` is called by the driver just before it blocks waiting for work to finish; sinks
    with an `idle` method use it to flush what they buffer (the `--events` file)."""

    __slots__ = ("_idlers", "_routes", "_sinks")

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self._sinks: list[Sink] = []
        self._idlers: list[Callable[[], None]] = []
        self._routes: dict[type[Event], tuple[Sink, ...]] = {}
        for sink in sinks:
            self.add(sink)

    def add(self, sink: Sink) -> None:
        self._routes.clear()
        if isinstance(sink, Bus):  # flatten: one call per sink per event, however composed
            self._sinks += sink._sinks
            self._idlers += sink._idlers
            return
        self._sinks.append(sink)
        idle = getattr(sink, "idle", None)
        if callable(idle):
            self._idlers.append(idle)

    def __call__(self, event: Event) -> None:
        route = self._routes.get(type(event))
        if route is None:
            route = self._routes[type(event)] = self._route(type(event))
        for call in route:
            call(event)

    def _route(self, kind: type[Event]) -> tuple[Sink, ...]:
        calls: list[Sink] = []
        for sink in self._sinks:
            handlers = getattr(sink, "handlers", None)
            if handlers is None:
                chunks = getattr(sink, "chunks", {})
                if kind in chunks:
                    calls.append(chunks[kind])
                else:
                    calls.append(_expanding(sink) if kind in CHUNKED else sink)
            elif kind in handlers:
                calls.append(handlers[kind])
        return tuple(calls)

    def idle(self) -> None:
        for idle in self._idlers:
            idle()


def _expanding(sink: Sink) -> Sink:
    def call(event: Event) -> None:
        for one in event.expand():  # type: ignore[attr-defined]
            sink(one)

    return call
