"""Where node calls run. Each backend turns a list of `Call`s into a future of `Outcome`s,
so the driver, scheduler, events, display and store never change between them.

- `thread` (default): a `ThreadPoolExecutor` in this process.
- `process`: a `ProcessPoolExecutor` with the `spawn` context, for CPU-bound Python.
- `dask`: a Dask distributed cluster (`pip install 'flowrun[dask]'`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol

from flowrun.engine.invoke import Call, Items, ItemsOutcome, Outcome
from flowrun.errors import UsageError
from flowrun.node import SharedContext

if TYPE_CHECKING:
    from flowrun.blueprint.resolve import Target

KINDS = ("thread", "process", "dask")


class Backend(Protocol):
    """Runs chunks of calls; a chunk's calls run one after another on one worker, unless it
    was submitted `together` (calls of coroutine functions, run at once on an event loop)."""

    #: does `ctx.get` see other nodes' `ctx.set` at once (shared memory), or a snapshot?
    shared_context: bool
    #: what one chunk's round trip costs, in ms: chunks of fast items are made at least
    #: big enough to pay for it
    dispatch_ms: float

    def submit(
        self, calls: list[Call], together: bool = False, budget: bool = False
    ) -> Future[list[Outcome]]:
        """Run `calls`. With `budget` (the driver's own chunks of independent calls, never a
        kind's), the chunk starts no call past `invoke.chunk_budget_s` of its backend and
        comes back with the outcomes of the calls it ran: the driver queues the rest again."""
        ...

    def together(self, uses: str) -> bool:
        """May a chunk of calls of `uses` run at once (an `async def`: one event loop awaits
        them all)? Each call of such a chunk then holds a concurrency slot of its own."""
        ...

    def cancel(self) -> None:
        """The run was cancelled: make every attempt running here see `ctx.cancelled` now."""
        ...

    def close(self, *, cancel: bool = False) -> None: ...


def make_backend(
    kind: str,
    targets: Mapping[str, Target],
    *,
    workers: int,
    run_id: str,
    context: SharedContext,
    cancelled: threading.Event,
    dirs: Sequence[str],
    address: str | None = None,
    retry_on: Mapping[str, tuple[str, ...]] | None = None,
) -> Backend:
    """Build the backend named by `--executor` (imports process/dask code only when asked).
    `retry_on` maps node ids (a batch's id for its items) to their `config.retryOn`."""
    backend = _make(kind, targets, workers, run_id, context, cancelled, dirs, address)
    return RetryOn(backend, retry_on) if retry_on else backend


class RetryOn:
    """Marks each call with its node's `config.retryOn` on the way to `backend`, so that the
    worker that sees the failure decides whether it may be retried (`Outcome.retryable`)."""

    def __init__(self, backend: Backend, table: Mapping[str, tuple[str, ...]]) -> None:
        self._backend = backend
        self._table = table
        self.shared_context = backend.shared_context
        self.dispatch_ms = backend.dispatch_ms
        self.runs_items: bool = getattr(backend, "runs_items", False)

    def together(self, uses: str) -> bool:
        return self._backend.together(uses)

    def submit(
        self, calls: list[Call], together: bool = False, budget: bool = False
    ) -> Future[list[Outcome]]:
        table = self._table
        for call in calls:
            # An item is named `batch[i]`; a fallback standing in for one keeps its own name.
            key = call.node
            if key not in table and call.index is not None:
                key = key.rpartition("[")[0]
            call.retry_on = table.get(key)
        return self._backend.submit(calls, together, budget)

    def submit_items(self, chunk: Items) -> Future[ItemsOutcome]:
        chunk.retry_on = self._table.get(chunk.batch)
        submit = self._backend.submit_items  # type: ignore[attr-defined]
        return submit(chunk)  # type: ignore[no-any-return]

    def cancel(self) -> None:
        self._backend.cancel()

    def close(self, *, cancel: bool = False) -> None:
        self._backend.close(cancel=cancel)


def _make(
    kind: str,
    targets: Mapping[str, Target],
    workers: int,
    run_id: str,
    context: SharedContext,
    cancelled: threading.Event,
    dirs: Sequence[str],
    address: str | None,
) -> Backend:
    if kind == "thread":
        from flowrun.engine.backends.thread import ThreadBackend

        return ThreadBackend(
            targets, workers=workers, run_id=run_id, context=context, cancelled=cancelled
        )
    if kind == "process":
        from flowrun.engine.backends.process import ProcessBackend

        return ProcessBackend(
            targets, workers=workers, run_id=run_id, context=context, cancelled=cancelled, dirs=dirs
        )
    if kind == "dask":
        from flowrun.engine.backends.dask import DaskBackend

        return DaskBackend(
            targets,
            workers=workers,
            run_id=run_id,
            context=context,
            cancelled=cancelled,
            dirs=dirs,
            address=address,
        )
    raise UsageError(f"--executor {kind!r}: choose one of {', '.join(KINDS)}")
