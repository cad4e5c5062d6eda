"""`async def` nodes: one event loop per backend, in one thread of its own.

A chunk whose calls are all coroutine functions runs as one asyncio task on that loop
(`LoopThread.submit`), its calls one after another as a thread chunk's are; the driver gets a
`concurrent.futures.Future` that completes into its queue like a thread future, and counts the
chunk against `--concurrency` and the pools the same way. So `-c 1000` means a thousand
coroutines awaiting on one loop, not a thousand threads each owning a loop (and its file
descriptors).

`run_attempt_async` is `invoke.run_attempt` for a coroutine: the same JSON round trips, the
same outcome, and a `config.timeout` that cancels the node's task (`CancelledError` at its
`await`), not one that leaves it running. Captured output goes to the task's own buffer
(`capture.begin_task`): many attempts share the loop's thread.

This module imports asyncio; it is itself imported only when an async node is first called.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from flowrun.engine import capture
from flowrun.engine.invoke import (
    _PLAIN,
    _SCALARS,
    AttemptTimeout,
    Call,
    CancelScope,
    Items,
    ItemsOutcome,
    Outcome,
    _encoded,
    _failure,
    _fresh_args,
    _fresh_kwargs,
    _fresh_values,
    _same,
    _success,
    attempt_setup,
    crashed,
    failed_attempt,
    items_outcome,
    result_parts,
    stored_result,
    succeeded_attempt,
)
from flowrun.expr.template import Params
from flowrun.node import SharedContext

if TYPE_CHECKING:
    from flowrun.blueprint.resolve import Target

T = TypeVar("T")
#: how long a closing loop lets its cancelled tasks unwind before it is left to the GC
CLOSE_GRACE_S = 1.0


class LoopThread:
    """An asyncio loop running in a daemon thread, fed from other threads.

    Submissions made while the loop is busy are handed over together: one wake-up of the loop
    (a write to its self-pipe) for a burst of chunks, not one per chunk."""

    def __init__(self, name: str = "flowrun-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._pending: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def submit(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> Future[T]:
        """Run `fn(*args)` as a task on the loop; its result or exception lands in the future.
        The coroutine is made on the loop, so one that never runs (closed loop) is never made."""
        fut: Future[T] = Future()
        with self._lock:
            if self._closed:
                fut.set_exception(RuntimeError("the event loop of this run is closed"))
                return fut
            wake = not self._pending
            self._pending.append((fut, fn, args))
        if wake:
            self._loop.call_soon_threadsafe(self._drain)
        return fut

    def _drain(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for fut, fn, args in batch:
            if fut.set_running_or_notify_cancel():
                task = self._loop.create_task(_settle(fut, fn(*args)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
            left = [t for t in self._tasks if not t.done()]
            for task in left:
                task.cancel()
            if left:  # let them unwind (finally blocks, closing connections), but not forever
                self._loop.run_until_complete(asyncio.wait(left, timeout=CLOSE_GRACE_S))
            if not any(not t.done() for t in left):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.close()
        except RuntimeError:  # the loop was closed under us at interpreter exit
            pass

    def cancel_all(self) -> None:
        """Cancel every task on the loop now: each node sees `CancelledError` at its await."""
        with contextlib.suppress(RuntimeError):  # the loop already stopped
            self._loop.call_soon_threadsafe(self._cancel_all)

    def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def close(self, *, cancel: bool = False) -> None:
        """Stop the loop without waiting for it: with `cancel`, its tasks are cancelled first."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(RuntimeError):
            if cancel:
                self._loop.call_soon_threadsafe(self._cancel_all)
            self._loop.call_soon_threadsafe(self._loop.stop)


async def _settle(fut: Future[T], coro: Coroutine[Any, Any, T]) -> None:
    try:
        result = await coro
    except BaseException as exc:  # CancelledError too: the future must complete
        fut.set_exception(exc)
        if not isinstance(exc, Exception):
            raise
    else:
        fut.set_result(result)


async def run_chunk(
    calls: Sequence[Call],
    targets: Mapping[str, Target],
    run_id: str,
    context: SharedContext,
    scope: CancelScope,
) -> list[Outcome]:
    """A chunk of async calls, one after another (as a thread runs a chunk)."""
    out: list[Outcome] = []
    for call in calls:
        if out and scope.run_cancelled.is_set():
            break  # the driver treats the calls not run as never started
        t = targets[call.uses]
        try:
            outcome = await run_attempt_async(
                call, t.fn, wants_ctx=t.wants_ctx, run_id=run_id, context=context, cancel=scope
            )
        except Exception as exc:  # not the node's: a bug here must still fail only the call
            outcome = crashed(call, exc)
        out.append(outcome)
    return out


async def run_together(
    calls: Sequence[Call],
    targets: Mapping[str, Target],
    run_id: str,
    context: SharedContext,
    scope: CancelScope,
) -> list[Outcome]:
    """A chunk of async calls all at once (each holds a slot of its own in the driver)."""
    if len(calls) == 1:
        return await run_chunk(calls, targets, run_id, context, scope)
    t = targets[calls[0].uses]  # a batch's chunk: one function
    if any(c.uses != t.uses for c in calls):
        return await run_chunk(calls, targets, run_id, context, scope)
    fn, wants_ctx = t.fn, t.wants_ctx
    attempts = (
        run_attempt_async(c, fn, wants_ctx=wants_ctx, run_id=run_id, context=context, cancel=scope)
        for c in calls
    )
    return list(await asyncio.gather(*attempts))


async def run_items_async(
    chunk: Items,
    targets: Mapping[str, Target],
    run_id: str,
    context: SharedContext,
    scope: CancelScope,
) -> ItemsOutcome:
    """A batch's chunk of async items, all at once (each holds a slot of its own in the
    driver), as `invoke.run_items` runs a chunk of sync ones: the plain successes come back as
    columns with their outputs encoded once, every other item with an `Outcome` of its own.
    Each item's coroutine runs in a task of its own, so what it prints is its own."""
    started = time.time()
    t = targets[chunk.uses]
    fn, n = t.fn, len(chunk.values)
    if t.wants_ctx or chunk.timeout is not None:  # each item as a call of its own
        calls = [chunk.call(pos) for pos in range(n)]
        outcomes = await asyncio.gather(
            *(_guarded(c, fn, t.wants_ctx, run_id, context, scope) for c in calls)
        )
        return items_outcome(outcomes, started)
    values = chunk.values
    if not _SCALARS.issuperset(map(type, values)):
        values = _fresh_values(values)
    kwargs: Any = chunk.kwargs
    if isinstance(kwargs, Params):  # rendered per item, in its task (a failure is its own)
        data = context.data
        raw = chunk.values
        items = (_item(fn, v, kwargs, raw[pos], data) for pos, v in enumerate(values))
    elif _SCALARS.issuperset(map(type, kwargs.values())):
        items = (_item(fn, v, kwargs) for v in values)
    else:  # each item gets a copy it may change
        items = (_item(fn, v, _fresh_kwargs(kwargs)) for v in values)
    results = await asyncio.gather(*items)
    ok: list[int] = []
    outputs: list[Any] = []
    durations: list[float] = []
    others: list[tuple[int, Outcome]] = []
    for pos, (done, out, ms, logs) in enumerate(results):
        if done is True:
            action = None
            if type(out) not in _PLAIN:
                try:
                    out, action = result_parts(out)
                except TypeError as bad:  # an action that is not a string
                    call = chunk.call(pos)
                    others.append((pos, _failure(call, _same, bad, {}, started, ms, logs)))
                    continue
            if action is None and not logs:
                ok.append(pos)
                outputs.append(out)
                durations.append(ms)
            else:
                others.append((pos, _success(chunk, pos, out, action, logs, started, ms)))
            continue
        if done is False:
            exc, kw = out if type(out) is tuple else (out, kwargs)
            others.append((pos, _failure(chunk.call(pos), fn, exc, kw, started, ms, logs)))
        else:  # KeyboardInterrupt, SystemExit from the node: only it fails
            failed = crashed(chunk.call(pos), out)
            failed.duration_ms, failed.logs = ms, logs
            others.append((pos, failed))
    return _encoded(chunk, started, n, ok, outputs, durations, others)


async def _item(
    fn: Callable[..., Any], value: Any, kwargs: Any, raw: Any = None, data: Any = None
) -> tuple[bool | None, Any, float, str]:
    """One item of `run_items_async`, in its own task: (True, output, ms, printed); when it
    raised, (False, (the exception, the params it got), ...), or (None, a `KeyboardInterrupt`
    or `SystemExit`, ...). `data`: `kwargs` is a `Params` to render for the item's `raw`
    input. A `CancelledError` from outside propagates."""
    token = capture.begin_task()
    t0 = time.perf_counter()
    try:
        if data is not None:
            kwargs = kwargs.render((raw,), data)
        out = fn(value, **kwargs)
        if asyncio.iscoroutine(out) or isinstance(out, asyncio.Future):
            out = await out
    except Exception as exc:
        return False, (exc, kwargs), (time.perf_counter() - t0) * 1000, capture.end_task(token)
    except (KeyboardInterrupt, SystemExit) as exc:
        return None, exc, (time.perf_counter() - t0) * 1000, capture.end_task(token)
    return True, out, (time.perf_counter() - t0) * 1000, capture.end_task(token)


async def _guarded(
    call: Call,
    fn: Callable[..., Any],
    wants_ctx: bool,
    run_id: str,
    context: SharedContext,
    scope: CancelScope,
) -> Outcome:
    """`run_attempt_async`, where a bug of flowrun's fails only the call."""
    try:
        return await run_attempt_async(
            call, fn, wants_ctx=wants_ctx, run_id=run_id, context=context, cancel=scope
        )
    except Exception as exc:
        return crashed(call, exc)


async def run_attempt_async(
    call: Call,
    fn: Callable[..., Any],
    *,
    wants_ctx: bool,
    run_id: str,
    context: SharedContext,
    cancel: CancelScope,
) -> Outcome:
    """`invoke.run_attempt` for a coroutine function, awaited on the running loop.

    A `KeyboardInterrupt`/`SystemExit` raised by the node comes back as its failed outcome; a
    `CancelledError` from outside (the run's loop closing on cancel) propagates."""
    started = time.time()
    t0 = time.perf_counter()
    token = capture.begin_task()
    args = call.args
    if len(args) != 1 or type(args[0]) not in _SCALARS:
        args = _fresh_args(args)
    context, kwargs, ctx, attempt_cancel = attempt_setup(call, wants_ctx, run_id, context, cancel)
    try:
        if isinstance(kwargs, Params):
            kwargs = kwargs.render(call.args, context.data)
        if ctx is not None:
            kwargs = {**kwargs, "ctx": ctx}
        value = fn(*args, **kwargs)
        if call.timeout is not None:
            value = await _timed(value, call.timeout, attempt_cancel)
        elif asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        value, action, text = stored_result(value)
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        logs = capture.end_task(token)
        return failed_attempt(call, fn, exc, kwargs, wants_ctx, started, t0, ctx, logs)
    finally:
        if attempt_cancel is not None and attempt_cancel is not cancel.run_cancelled:
            cancel.close(attempt_cancel)
    logs = capture.end_task(token)
    return succeeded_attempt(call, started, t0, value, action, text, ctx, logs)


async def _timed(value: Any, timeout: float, cancel: threading.Event | None) -> Any:
    """Await `value` for at most `timeout`; past it, cancel the node's task (it sees
    `CancelledError` at its await, and `ctx.cancelled`) and fail the attempt at once, without
    waiting for the node to unwind."""
    if not (asyncio.iscoroutine(value) or isinstance(value, asyncio.Future)):
        return value
    task = asyncio.ensure_future(value)  # a copy of this context: same capture buffer
    task.add_done_callback(_forget)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        if cancel is not None:
            cancel.set()
        raise AttemptTimeout(f"attempt timed out after {timeout:g} s")
    return task.result()


def _forget(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


_shared: LoopThread | None = None
_shared_lock = threading.Lock()


def shared_loop() -> LoopThread:
    """This process's loop for workers of other backends (a process or Dask worker): made on
    the first async chunk, kept for the life of the process."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LoopThread("flowrun-worker-loop")
        return _shared
