"""The default backend: a thread pool in this process, sharing the run context."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from flowrun.blueprint.resolve import Target
from flowrun.engine.invoke import (
    Call,
    CancelScope,
    Items,
    ItemsOutcome,
    Outcome,
    crashed,
    items_outcome,
    run_attempt,
    run_items,
)
from flowrun.node import SharedContext


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
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flowrun")

    def submit(self, calls: list[Call]) -> Future[list[Outcome]]:
        return self._pool.submit(self._run, calls)

    def _run(self, calls: list[Call]) -> list[Outcome]:
        out: list[Outcome] = []
        for call in calls:
            if out and self._cancelled.is_set():
                break  # the driver treats the calls not run as never started
            t = self._targets[call.uses]
            try:
                outcome = run_attempt(
                    call,
                    t.fn,
                    wants_ctx=t.wants_ctx,
                    is_async=t.is_async,
                    run_id=self._run_id,
                    context=self._context,
                    cancel=self._scope,
                )
            except BaseException as exc:  # SystemExit, KeyboardInterrupt from the node itself
                outcome = crashed(call, exc)
            out.append(outcome)
        return out

    def submit_items(self, chunk: Items) -> Future[ItemsOutcome]:
        if self._targets[chunk.uses].is_async:  # its items go the way of single calls
            return _as_items(self.submit([chunk.call(p) for p in range(len(chunk.values))]))
        return self._pool.submit(self._run_items, chunk)

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


def _as_items(fut: Future[list[Outcome]]) -> Future[ItemsOutcome]:
    """The future of a chunk's outcome, from the future of its calls' outcomes."""
    started = time.time()
    out: Future[ItemsOutcome] = Future()

    def done(f: Future[list[Outcome]]) -> None:
        try:
            out.set_result(items_outcome(f.result(), started))
        except BaseException as exc:
            out.set_exception(exc)

    fut.add_done_callback(done)
    return out
