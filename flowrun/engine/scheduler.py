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
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowrun.model import Graph, Kind


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


@dataclass(slots=True)
class BatchState:
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


class Scheduler:
    """Drive with `ready`/`finish`, `bind`/`take_items`/`item_done`; stop when not `is_active`."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.status: dict[str, Status] = {}
        self._waiting: dict[str, int] = {}
        self._taken: dict[str, dict[str, Any]] = {}
        self._failed_pred: set[str] = set()
        self._ready: deque[str] = deque()
        self._running = 0
        self.batches: dict[str, BatchState] = {}
        self.skipped: list[str] = []
        for name in graph.order:
            if name in graph.fallbacks:
                self.status[name] = Status.PENDING
                continue
            sources = {e.source for e in graph.preds[name]}
            self.status[name] = Status.PENDING
            self._waiting[name] = len(sources)
            self._taken[name] = {}
            if not sources:
                self._make_ready(name)

    # -- hand out ---------------------------------------------------------------------------
    def ready(self) -> list[str]:
        """Nodes that may start now; each is marked running."""
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
        """Are nodes waiting to be handed out by `ready()`?"""
        return bool(self._ready)

    def is_active(self) -> bool:
        """Is anything ready, running, or a batch still unsettled?"""
        return bool(self._ready) or self._running > 0

    # -- settle -----------------------------------------------------------------------------
    def finish(self, name: str, status: Status, taken: Mapping[str, Any] | None = None) -> None:
        """Settle a running node. `taken` maps each successor whose edge was taken to the value
        sent over it (only for SUCCEEDED/RECOVERED)."""
        assert self.status[name] is Status.RUNNING, (name, self.status[name])
        assert status in SETTLED
        self.status[name] = status
        self._running -= 1
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
        spec = self.graph.nodes[batch].spec.batch
        assert spec is not None
        done = {i: v for i, v in (done or {}).items() if first <= i < total}
        results: list[Any] = [None] * total if keep_results else []
        if keep_results:
            for i, value in done.items():
                results[i] = value
        pending = (i for i in range(first, total) if i not in done)
        settled = min(first, total) + len(done)
        state = BatchState(total, spec.max_failures, pending, results, total - settled)
        state.succeeded = settled
        state.keep_results = keep_results
        self.batches[batch] = state
        self.finish(f"{batch}_scatter", Status.SUCCEEDED, {batch: None})
        # finish() made the worker template ready; it "runs" until every item settles
        self._ready.remove(batch)
        self.status[batch] = Status.RUNNING
        self._running += 1
        self._maybe_close(batch)

    def take_items(self, batch: str, n: int) -> list[int]:
        """Up to `n` item indices of `batch` to start now."""
        state = self.batches[batch]
        out: list[int] = []
        if state.exhausted or state.over_budget:
            return out
        for i in state.pending:
            out.append(i)
            if len(out) >= n:
                break
        else:
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
            self.finish(batch, Status.SUCCEEDED, {f"{batch}_gather": None})

    # -- propagation ------------------------------------------------------------------------
    def _settle_out(self, name: str, status: Status, taken: Mapping[str, Any]) -> None:
        for target in dict.fromkeys(e.target for e in self.graph.succs[name]):
            self._settle_edge(name, target, status, taken)

    def _settle_edge(
        self, source: str, target: str, status: Status, taken: Mapping[str, Any]
    ) -> None:
        if self.status[target] is not Status.PENDING:
            return  # a join `any` node that already started
        self._waiting[target] -= 1
        if status in DONE_OK and target in taken:
            self._taken[target][source] = taken[target]
            if self._join_any(target):
                self._make_ready(target)
                return
        elif status in (Status.FAILED, Status.BLOCKED):
            self._failed_pred.add(target)
        if self._waiting[target] == 0:
            self._decide(target)

    def _join_any(self, name: str) -> bool:
        node = self.graph.nodes[name]
        return node.kind is Kind.TASK and node.spec.config.join == "any"

    def _decide(self, name: str) -> None:
        if name in self._failed_pred:
            self.status[name] = Status.BLOCKED
            self._settle_out(name, Status.BLOCKED, {})
        elif self._taken[name]:
            self._make_ready(name)
        else:
            self.status[name] = Status.SKIPPED
            self.skipped.append(name)
            self._settle_out(name, Status.SKIPPED, {})

    def _make_ready(self, name: str) -> None:
        self.status[name] = Status.READY
        self._ready.append(name)

    def drain_skipped(self) -> list[str]:
        out, self.skipped = self.skipped, []
        return out
