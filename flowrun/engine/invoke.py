"""Run one attempt of a node function, anywhere: a pool thread, a process, a Dask worker.

Everything a worker needs travels in a `Call` (plain data: the dotted path, arguments, attempt)
and everything it produces comes back in an `Outcome` (plain data). A failure is a value: the
exception's type name, message and traceback text, never a raised exception, so the driving
loop never dies of a node's error. Outputs are encoded to JSON here, in the worker, so an output
that cannot be stored fails its own node with a clear message.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flowrun.expr.template import Params
from flowrun.node import NodeContext, Result, SharedContext


@dataclass(slots=True)
class Call:
    """One attempt to run: `fn(*args, **kwargs)` (plus `ctx` when the function takes it).

    Not frozen on purpose: one is built per batch item and a frozen init costs twice as much;
    nothing changes a Call once built (a retry builds a new one)."""

    node: str
    uses: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 1
    index: int | None = None
    timeout: float | None = None


@dataclass(slots=True)
class Outcome:
    node: str
    ok: bool
    started: float  # epoch seconds
    duration_ms: float
    output: Any = None
    output_json: str = "null"
    action: str | None = None
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    updates: dict[str, Any] = field(default_factory=dict)


class AttemptTimeout(Exception):
    """The attempt ran past `config.timeout`; it was abandoned (Python cannot kill a thread)."""


_local = threading.local()


class AttemptCancel:
    """`ctx.cancelled` for one attempt: set when its timeout expires or the run is cancelled.

    Each attempt gets its own event, so a timed-out attempt can see that it was abandoned
    without the rest of the run being cancelled.
    """

    _lock = threading.Lock()
    _live: ClassVar[set[threading.Event]] = set()

    @classmethod
    def open(cls, run_cancelled: threading.Event) -> threading.Event:
        event = threading.Event()
        if run_cancelled.is_set():
            event.set()
        with cls._lock:
            cls._live.add(event)
        return event

    @classmethod
    def close(cls, event: threading.Event) -> None:
        with cls._lock:
            cls._live.discard(event)

    @classmethod
    def cancel_all(cls) -> None:
        """Set every live attempt's event (the run was cancelled)."""
        with cls._lock:
            for event in cls._live:
                event.set()


def _loop() -> asyncio.AbstractEventLoop:
    """The event loop this worker thread owns, for `async def` nodes."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def _call(fn: Callable[..., Any], is_async: bool, args: Sequence[Any], kwargs: Any) -> Any:
    if is_async:
        return _loop().run_until_complete(fn(*args, **kwargs))
    value = fn(*args, **kwargs)
    if asyncio.iscoroutine(value):  # a sync wrapper that returned a coroutine
        return _loop().run_until_complete(value)
    return value


def _with_timeout(
    fn: Callable[..., Any],
    is_async: bool,
    args: Sequence[Any],
    kwargs: Any,
    timeout: float,
    cancel: threading.Event | None,
) -> Any:
    """Run on a daemon thread and stop waiting after `timeout`: an abandoned attempt keeps
    running in the background but never holds a pool slot or delays the process exit."""
    box: list[Any] = []
    done = threading.Event()

    def target() -> None:
        try:
            box.append((True, _call(fn, is_async, args, kwargs)))
        except BaseException as exc:
            box.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=target, daemon=True, name="flowrun-timed-attempt").start()
    if not done.wait(timeout):
        if cancel is not None:
            cancel.set()
        raise AttemptTimeout(f"attempt timed out after {timeout:g} s")
    ok, value = box[0]
    if not ok:
        raise value
    return value


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the node function's frame on: flowrun's own frames are noise."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    if tb is None:  # raised by flowrun itself (a bad call, an output that is not JSON)
        return "".join(traceback.format_exception_only(exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _encode(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"output of type {type(value).__name__} cannot be stored as JSON ({exc}); "
            "return plain data (dict, list, str, int, float, bool, None)"
        ) from exc


def run_attempt(
    call: Call,
    fn: Callable[..., Any],
    *,
    wants_ctx: bool,
    is_async: bool,
    run_id: str,
    context: SharedContext,
    cancelled: threading.Event,
) -> Outcome:
    """Run `call` once and describe what happened; never raises for the node's own errors."""
    started = time.time()
    t0 = time.perf_counter()
    kwargs: Any = call.kwargs
    ctx = None
    attempt_cancel = None
    if wants_ctx:
        attempt_cancel = AttemptCancel.open(cancelled) if call.timeout else cancelled
        ctx = NodeContext(
            node_id=call.node,
            run_id=run_id,
            attempt=call.attempt,
            index=call.index,
            context=context,
            cancelled=attempt_cancel,
        )
    try:
        if isinstance(kwargs, Params):  # `${{ }}` in params: rendered for this call
            kwargs = kwargs.render(call.args, context.data)
        if ctx is not None:
            kwargs = {**kwargs, "ctx": ctx}
        if call.timeout is None:
            value = _call(fn, is_async, call.args, kwargs)
        else:
            value = _with_timeout(fn, is_async, call.args, kwargs, call.timeout, attempt_cancel)
        action = None
        if isinstance(value, Result):
            value, action = value.output, value.action
        text = _encode(value)
    except Exception as exc:
        return Outcome(
            call.node,
            False,
            started,
            (time.perf_counter() - t0) * 1000,
            error_type=type(exc).__name__,
            message=str(exc),
            traceback=_user_traceback(exc),
            updates=ctx.updates if ctx is not None else {},
        )
    finally:
        if attempt_cancel is not None and attempt_cancel is not cancelled:
            AttemptCancel.close(attempt_cancel)
    return Outcome(
        call.node,
        True,
        started,
        (time.perf_counter() - t0) * 1000,
        output=value,
        output_json=text,
        action=action,
        updates=ctx.updates if ctx is not None else {},
    )
