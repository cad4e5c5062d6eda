"""The run's state machine: which nodes may run, what settles, what is skipped. No threads,
no clocks, no I/O: the executor drives it, like `graphlib.TopologicalSorter`.

Verbs: `ready()` hands out graph nodes that may start (tasks, scatters, gathers); `finish()`
settles one, naming the successors whose edge was taken and the value sent over each;
`bind()` gives a batch its N items when its scatter has read the list (or counted a file's);
`take_items()` hands out item indices in increasing order (a streamed batch reads its file in
step) and `item_done()` settles them; `break_batch()` fails a batch as a whole. When every
item has settled the batch's gather becomes ready. Skips and upstream failures propagate;
`skipped` collects the nodes skipped since it was last drained.
"""

from __future__ import annotations

import enum
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import field
from itertools import islice
from typing import Any

from flowrun.frozen import Mutable, fast_mutable
from flowrun.model import Graph, Kind, gather_id, scatter_id


class Status(enum.StrEnum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RECOVERED = "recovered"
    SKIPPED = "skipped"
    BLOCKED = "blocked"  # an upstream node failed: it will never run (reported as pending)


DONE_OK = frozenset({Status.SUCCEEDED, Status.RECOVERED})
SETTLED = frozenset({*DONE_OK, Status.FAILED, Status.SKIPPED, Status.BLOCKED})


@fast_mutable
class BatchState(Mutable):
    """A bound batch: its items, results in item order, and counts."""

    total: int
    max_failures: int
    pending: Iterator[int]
    results: list[Any]
    remaining: int  # items not yet settled
    handed: int = 0  # handed out and not yet settled
    succeeded: int = 0
    failed: int = 0
    exhausted: bool = False
    failed_items: list[int] = field(default_factory=list)
    broken: bool = False  # failed as a whole (its output could not be written): hand out no more
    keep_results: bool = True  # False when the results go elsewhere (a file): `results` stays []

    @property
    def over_budget(self) -> bool:
        return self.broken or self.failed > self.max_failures


#: id(graph) -> (the graph, its scheduler's state before anything ran: the statuses with the
#: ready nodes marked, predecessors to wait for, what is ready, what runs at the end)
_Start = tuple[dict[str, Status], dict[str, int], tuple[str, ...], tuple[str, ...]]
_STARTS: dict[int, tuple[Graph, _Start]] = {}


class Scheduler:
    """Drive with `ready`/`finish`, `bind`/`take_items`/`item_done`; stop when not `is_active`."""

    def __init__(self, graph: Graph, *, reuse_start: bool = False) -> None:
        """`reuse_start`: keep the initial state worked out for `graph` for the next scheduler
        of the same graph (a child run's: a batch over a subflow builds one per item)."""
        self.graph = graph
        self._failed_pred: set[str] = set()
        self._any_failed = False
        self._running = 0
        self.batches: dict[str, BatchState] = {}
        self.skipped: list[str] = []
        start = _STARTS.get(id(graph)) if reuse_start else None
        if start is None or start[0] is not graph:
            start = (graph, self._fresh())
            if reuse_start:
                _STARTS[id(graph)] = start
        status, waiting, ready, at_end = start[1]
        self.status = status.copy()
        self._waiting = waiting.copy()
        #: node -> {predecessor: value sent over its taken edge}, filled as edges settle
        self._taken: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        self._ready: deque[str] = deque(ready)
        #: `runIf: failure|always` nodes with no predecessors: they run when all else settled
        self._at_end: list[str] = list(at_end)

    def _fresh(self) -> _Start:
        """The state before anything ran: statuses (the ready nodes marked), predecessors to
        wait for, what is ready, what runs at the end."""
        graph = self.graph
        status: dict[str, Status] = {}
        waiting: dict[str, int] = {}
        ready: list[str] = []
        at_end: list[str] = []
        for name in graph.order:
            status[name] = Status.PENDING
            if name in graph.fallbacks:
                continue
            preds = graph.preds[name]
            sources = {e.source for e in preds} if preds else ()
            waiting[name] = len(sources)
            if not sources and self._run_if(name):
                at_end.append(name)
            elif not sources:
                ready.append(name)
        for name in ready:
            status[name] = Status.READY
        return status, waiting, tuple(ready), tuple(at_end)

    # -- hand out ---------------------------------------------------------------------------
    def ready(self) -> list[str]:
        """Nodes that may start now; each is marked running."""
        if not self._ready and not self._running and self._at_end:
            self._release_at_end()
        out = list(self._ready)
        self._ready.clear()
        for name in out:
            self.status[name] = Status.RUNNING
        self._running += len(out)
        return out

    def inputs(self, name: str) -> dict[str, Any]:
        """`{predecessor: value sent over its taken edge}` for a node about to run."""
        return self._taken.get(name, {})

    def has_ready(self) -> bool:
        """Is a node waiting to be handed out by `ready()`?"""
        return bool(self._ready) or (not self._running and bool(self._at_end))

    def is_active(self) -> bool:
        """Is anything ready, running, or a batch still unsettled?"""
        return bool(self._ready) or self._running > 0 or bool(self._at_end)

    # -- settle -----------------------------------------------------------------------------
    def finish(self, name: str, status: Status, taken: Mapping[str, Any] | None = None) -> None:
        """Settle a running node. `taken` maps each successor whose edge was taken to the value
        sent over it (only for SUCCEEDED/RECOVERED)."""
        assert self.status[name] is Status.RUNNING, (name, self.status[name])
        assert status in SETTLED
        self.status[name] = status
        self._running -= 1
        self._any_failed = self._any_failed or status is Status.FAILED
        self._settle_out(name, status, taken or {})

    def bind(
        self,
        batch: str,
        total: int,
        done: Mapping[int, Any] | None = None,
        *,
        keep_results: bool = True,
        first: int = 0,
    ) -> None:
        """The scatter of `batch` found `total` items; `done` holds items that already
        succeeded in an earlier run (index -> output) and are not run again, and so do all items
        below `first` (a streamed batch's output file already holds them). With `keep_results`
        false the scheduler keeps counts only: a streamed batch's outputs go to its file, and
        its memory must not grow with the number of items."""
        spec = self.graph.nodes[batch].batch_spec
        done = done or {}
        # Keys first: only the outputs past `first` are read (a lean mapping loads on demand).
        done = {i: done[i] for i in done if first <= i < total}
        results: list[Any] = [None] * total if keep_results else []
        if keep_results:
            for i, value in done.items():
                results[i] = value
        pending = (
            (i for i in range(first, total) if i not in done) if done else iter(range(first, total))
        )
        settled = min(first, total) + len(done)
        state = BatchState(total, spec.max_failures, pending, results, total - settled)
        state.succeeded = settled
        state.keep_results = keep_results
        self.batches[batch] = state
        self.finish(scatter_id(batch), Status.SUCCEEDED, {batch: None})
        # finish() made the worker template ready; it "runs" until every item settles
        self._ready.remove(batch)
        self.status[batch] = Status.RUNNING
        self._running += 1
        self._maybe_close(batch)

    def take_items(self, batch: str, n: int) -> list[int]:
        """Up to `n` item indices of `batch` to start now."""
        state = self.batches[batch]
        if state.exhausted or state.over_budget:
            return []
        out = list(islice(state.pending, n))
        if len(out) < n:
            state.exhausted = True
        state.handed += len(out)
        return out

    def open_batches(self) -> list[str]:
        """Batches that may still hand out items."""
        return [
            b
            for b, s in self.batches.items()
            if not s.exhausted and not s.over_budget and self.status[b] is Status.RUNNING
        ]

    def item_done(self, batch: str, index: int, ok: bool, output: Any = None) -> None:
        """Settle item `index` of `batch`; a failed item's slot stays `None`."""
        state = self.batches[batch]
        state.handed -= 1
        state.remaining -= 1
        if ok:
            state.succeeded += 1
            if state.keep_results:
                state.results[index] = output
        else:
            state.failed += 1
            state.failed_items.append(index)
        self._maybe_close(batch)

    def items_done(self, batch: str, indices: Sequence[int], outputs: Sequence[Any]) -> None:
        """Settle items `indices` of `batch` as succeeded with `outputs` (in the same order)."""
        state = self.batches[batch]
        n = len(indices)
        state.handed -= n
        state.remaining -= n
        state.succeeded += n
        if state.keep_results:
            results = state.results
            if type(indices) is range and indices.step == 1:
                results[indices.start : indices.stop] = outputs
            else:
                for i, value in zip(indices, outputs, strict=True):
                    results[i] = value
        self._maybe_close(batch)

    def give_back(self, batch: str, n: int) -> None:
        """`n` items of `batch` that were taken but will never start (the batch or the run
        stopped first): no longer handed out."""
        if n:
            self.batches[batch].handed -= n
            self._maybe_close(batch)

    def break_batch(self, batch: str) -> None:
        """`batch` fails as a whole (not through its items): hand out no more of its items; it
        settles as failed once those in flight have."""
        state = self.batches[batch]
        if state.broken or self.status[batch] is not Status.RUNNING:
            return
        state.broken = True
        self._maybe_close(batch)

    def _maybe_close(self, batch: str) -> None:
        state = self.batches[batch]
        if state.over_budget and state.handed == 0:
            self.finish(batch, Status.FAILED)
        elif state.remaining == 0:
            self.finish(batch, Status.SUCCEEDED, {gather_id(batch): None})

    # -- propagation ------------------------------------------------------------------------
    def _settle_out(self, name: str, status: Status, taken: Mapping[str, Any]) -> None:
        """Settle `name`'s outgoing edges, and those of every node that settles because of it
        (a skip or a block), depth first in edge order, as a recursion would, but on an
        explicit stack: a chain of 10,000 nodes whose head fails must not hit Python's
        recursion limit."""
        if not self.graph.succs[name]:
            return  # a final node (most of a wide DAG): nothing to settle
        stack = [(name, status, taken, iter(self._targets(name)))]
        while stack:
            source, st, tk, targets = stack[-1]
            target = next(targets, None)
            if target is None:
                stack.pop()
                continue
            settled = self._settle_edge(source, target, st, tk)
            if settled is not None:
                stack.append((target, settled, {}, iter(self._targets(target))))

    def _targets(self, name: str) -> list[str]:
        return list(dict.fromkeys(e.target for e in self.graph.succs[name]))

    def _settle_edge(
        self, source: str, target: str, status: Status, taken: Mapping[str, Any]
    ) -> Status | None:
        """Settle one edge; when that settles `target` without running it (skipped or
        blocked), return its status, for the caller to propagate."""
        if self.status[target] is not Status.PENDING:
            return None  # a join `any` node that already started
        self._waiting[target] -= 1
        if status in DONE_OK and target in taken:
            self._taken[target][source] = taken[target]
            if self._join_any(target):
                self._make_ready(target)
                return None
        elif status in (Status.FAILED, Status.BLOCKED):
            self._failed_pred.add(target)
        if self._waiting[target] == 0:
            return self._decide(target)
        return None

    def _join_any(self, name: str) -> bool:
        node = self.graph.nodes[name]
        return node.kind is Kind.TASK and node.spec.config.join == "any" and not self._run_if(name)

    def _run_if(self, name: str) -> str:
        """A task's `config.runIf` when it is not the default `success`, else ''."""
        node = self.graph.nodes[name]
        run_if = node.spec.config.run_if if node.kind is Kind.TASK else "success"
        return "" if run_if == "success" else run_if

    def _release_at_end(self) -> None:
        for name in self._at_end:
            if self._run_if(name) == "always" or self._any_failed:
                self._make_ready(name)
            else:
                self.status[name] = Status.SKIPPED
                self.skipped.append(name)
                self._settle_out(name, Status.SKIPPED, {})
        self._at_end.clear()

    def _decide(self, name: str) -> Status | None:
        """Every incoming edge of `name` has settled: make it ready, or settle it (returned)."""
        run_if = self._run_if(name)
        if run_if == "always" or (run_if == "failure" and name in self._failed_pred):
            self._make_ready(name)
            return None
        if run_if == "failure":
            self.status[name] = Status.SKIPPED
            self.skipped.append(name)
            return Status.SKIPPED
        if name in self._failed_pred:
            self.status[name] = Status.BLOCKED
            return Status.BLOCKED
        if self._taken[name]:
            self._make_ready(name)
            return None
        self.status[name] = Status.SKIPPED
        self.skipped.append(name)
        return Status.SKIPPED

    def _make_ready(self, name: str) -> None:
        self.status[name] = Status.READY
        self._ready.append(name)

    def drain_skipped(self) -> list[str]:
        out, self.skipped = self.skipped, []
        return out
