"""The default backend: a thread pool in this process, sharing the run context.

Chunks of `async def` calls do not take a thread: they run on the backend's one event loop
(`engine.aio`), started in a thread of its own when the first of them is submitted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from flowrun.blueprint.resolve import Target
from flowrun.engine.invoke import (
    Call,
    CancelScope,
    ChunkFuture,
    Items,
    ItemsOutcome,
    Outcome,
    chunk_budget_s,
    crashed,
    run_attempt,
    run_items,
)
from flowrun.node import SharedContext

if TYPE_CHECKING:  # imported with the first async chunk: most runs never need asyncio
    from flowrun.engine.aio import LoopThread


class ThreadBackend:
    shared_context = True
    dispatch_ms = 0.02  # a hand-off between threads
    runs_items = True  # takes a batch's chunk as one `Items` (`submit_items`)

    def __init__(
        self,
        targets: Mapping[str, Target],
        *,
        workers: int,
        run_id: str,
        context: SharedContext,
        cancelled: threading.Event,
    ) -> None:
        self._targets = targets
        self._run_id = run_id
        self._context = context
        self._cancelled = cancelled
        self._scope = CancelScope(cancelled)
        self._budget_s = chunk_budget_s(self.dispatch_ms)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flowrun")
        self._aio: LoopThread | None = None
        self._aio_lock = threading.Lock()
        if any(t.is_async for t in targets.values()):
            self._start_loop()  # now, so that starting it (importing asyncio) delays no node

    def together(self, uses: str) -> bool:
        target = self._targets.get(uses)
        return target is not None and target.is_async

    def submit(
        self, calls: list[Call], together: bool = False, budget: bool = False
    ) -> Future[list[Outcome]]:
        targets = self._targets
        if targets[calls[0].uses].is_async and all(targets[c.uses].is_async for c in calls):
            return self._submit_async(calls, together)
        if len(calls) == 1:
            return self._pool.submit(self._run_one, calls[0])
        if not budget:
            return self._pool.submit(self._run_all, calls)
        fut = ChunkFuture(calls)
        self._pool.submit(self._run, fut)
        return fut

    def _submit_async(self, calls: list[Call], together: bool) -> Future[list[Outcome]]:
        from flowrun.engine.aio import run_chunk, run_together

        loop = self._aio or self._start_loop()
        run = run_together if together else run_chunk
        return loop.submit(run, calls, self._targets, self._run_id, self._context, self._scope)

    def _start_loop(self) -> LoopThread:
        from flowrun.engine.aio import LoopThread

        with self._aio_lock:
            if self._aio is None:
                self._aio = LoopThread()
            return self._aio

    def _run_one(self, call: Call) -> list[Outcome]:
        t = self._targets[call.uses]
        try:
            outcome = run_attempt(call, t.fn, wants_ctx=t.wants_ctx, is_async=t.is_async,
                                  run_id=self._run_id, context=self._context,
                                  cancel=self._scope)  # fmt: skip
        except BaseException as exc:  # SystemExit, KeyboardInterrupt from the node itself
            outcome = crashed(call, exc)
        return [outcome]

    def _run_all(self, calls: list[Call]) -> list[Outcome]:
        out: list[Outcome] = []
        for call in calls:
            if out and self._cancelled.is_set():
                break  # the driver treats the calls not run as never started
            out.append(self._run_one(call)[0])
        return out

    def _run(self, fut: ChunkFuture) -> None:
        """Run the calls of `fut` one after another, until none waits, the run is cancelled,
        or the chunk has run past its budget (the driver then takes the rest back)."""
        if not fut.set_running_or_notify_cancel():
            return
        out, waiting = fut.ran, fut.waiting
        clock = time.perf_counter
        until = clock() + self._budget_s
        try:
            while not out or not (self._cancelled.is_set() or clock() > until):
                try:
                    call = waiting.popleft()[1]
                except IndexError:
                    break  # all run, or the driver took the rest back
                out.append(self._run_one(call)[0])
        except BaseException as exc:  # not a node's: `_run_one` turns those into outcomes
            fut.set_exception(exc)
            return
        fut.set_result(out)

    def submit_items(self, chunk: Items) -> Future[ItemsOutcome]:
        if self._targets[chunk.uses].is_async:  # its items gathered on the loop
            from flowrun.engine.aio import run_items_async

            loop = self._aio or self._start_loop()
            args = (chunk, self._targets, self._run_id, self._context, self._scope)
            return loop.submit(run_items_async, *args)
        return self._pool.submit(self._run_items, chunk)

    def start_lane(self, lane: Callable[[Callable[[Items], ItemsOutcome]], None]) -> None:
        """Run `lane` on a pool thread, with what runs a chunk there (`engine.lanes`)."""
        self._pool.submit(lane, self._run_items)

    def _run_items(self, chunk: Items) -> ItemsOutcome:
        t = self._targets[chunk.uses]
        return run_items(
            chunk,
            t.fn,
            wants_ctx=t.wants_ctx,
            is_async=t.is_async,
            run_id=self._run_id,
            context=self._context,
            cancel=self._scope,
        )

    def cancel(self) -> None:
        self._scope.cancel()

    def close(self, *, cancel: bool = False) -> None:
        # Never wait here: a stuck node must not hold up the end of the run.
        if cancel:
            self._scope.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._aio is not None:
            self._aio.close(cancel=cancel)
