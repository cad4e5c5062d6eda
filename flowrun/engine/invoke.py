"""Run one attempt of a node function, anywhere: a pool thread, a process, a Dask worker.

Everything a worker needs travels in a `Call` (plain data: the dotted path, arguments, attempt)
and everything it produces comes back in an `Outcome` (plain data). A failure is a value: the
exception's type name, message and traceback text, never a raised exception, so the driving
loop never dies of a node's error. Outputs are encoded to JSON here, in the worker, so an output
that cannot be stored fails its own node with a clear message.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowrun.engine import capture
from flowrun.expr.template import Params
from flowrun.node import FatalError, NodeContext, Result, SharedContext

if TYPE_CHECKING:  # imported on the first `async def` node: most runs never need asyncio
    import asyncio


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
    #: `config.retryOn`: the exception names a failure must match to be retried (None: any)
    retry_on: tuple[str, ...] | None = None
    #: the context `ctx` and `${{ }}` see when it is not the run's: a subflow's child run's
    #: (never shipped: a worker gets a snapshot of it in its job)
    context: SharedContext | None = None


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
    #: False when another attempt cannot help: the call itself was wrong, a `FatalError`, or
    #: a class that `config.retryOn` does not name
    retryable: bool = True
    logs: str = ""  # what the attempt wrote to sys.stdout/sys.stderr (the tail, capped)


def retryable(exc: BaseException, retry_on: tuple[str, ...] | None) -> bool:
    """Does `config.retryOn` let the failure `exc` be retried? A name matches the class or a
    base class, as `except` does, by bare name (`ConnectionError`) or dotted path; a dotted
    path may name a package that re-exports the class (`requests.Timeout`)."""
    if isinstance(exc, FatalError):
        return False
    if retry_on is None:
        return True
    for cls in type(exc).__mro__:
        for name in retry_on:
            module, _, bare = name.rpartition(".")
            if bare == cls.__name__ and (
                not module or cls.__module__ == module or cls.__module__.startswith(module + ".")
            ):
                return True
    return False


class AttemptTimeout(TimeoutError):
    """The attempt ran past `config.timeout`; it was abandoned (Python cannot kill a thread)."""


_local = threading.local()
# flowrun's own frames (this module, a backend) are cut from a node's traceback.
_FLOWRUN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class CancelScope:
    """`ctx.cancelled` for the attempts of one run in this process.

    An attempt without a timeout sees the run's own event. An attempt with a timeout gets an
    event of its own, so that it can see it was abandoned without the rest of the run being
    cancelled; the scope keeps those events while they are live, and `cancel()` sets the run's
    event and every one of them at once. Each run (each backend) has its own scope: two runs in
    one process never cancel each other.
    """

    __slots__ = ("_live", "_lock", "run_cancelled")

    def __init__(self, run_cancelled: threading.Event | None = None) -> None:
        self.run_cancelled = run_cancelled if run_cancelled is not None else threading.Event()
        self._lock = threading.Lock()
        self._live: set[threading.Event] = set()

    def open(self) -> threading.Event:
        """An event for one timed attempt (already set if the run was cancelled)."""
        event = threading.Event()
        with self._lock:
            if self.run_cancelled.is_set():
                event.set()
            self._live.add(event)
        return event

    def close(self, event: threading.Event) -> None:
        with self._lock:
            self._live.discard(event)

    def cancel(self) -> None:
        """The run is cancelled: set its event and every live attempt's."""
        with self._lock:
            self.run_cancelled.set()
            for event in self._live:
                event.set()


def _loop() -> asyncio.AbstractEventLoop:
    """The event loop this worker thread owns, for `async def` nodes."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        import asyncio

        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def _call(fn: Callable[..., Any], is_async: bool, args: Sequence[Any], kwargs: Any) -> Any:
    if is_async:
        return _loop().run_until_complete(fn(*args, **kwargs))
    value = fn(*args, **kwargs)
    if isinstance(value, Coroutine):  # a sync wrapper that returned a coroutine
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
    buf = capture.current()

    def target() -> None:
        capture.attach(buf)
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
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_FLOWRUN_DIR):
        tb = tb.tb_next
    if tb is None:  # raised by flowrun itself (a bad call, an output that is not JSON)
        return "".join(traceback.format_exception_only(exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))


_signatures: dict[Any, inspect.Signature | None] = {}


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return _signatures[fn]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable: not cached
        return _signature_of(fn)
    sig = _signatures[fn] = _signature_of(fn)
    return sig


def _signature_of(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _bad_call(fn: Callable[..., Any], args: Sequence[Any], kwargs: Any, exc: TypeError) -> bool:
    """Did the call itself fail (the arguments do not bind), rather than the function body?"""
    sig = _signature(fn)
    if sig is not None:
        try:
            sig.bind(*args, **kwargs)
        except TypeError:
            return True
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb is None  # no frame of the function: raised while calling it


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def how_called(call: Call, wants_ctx: bool) -> str:
    """`called as tasks.f(input, **params) with input=3, params={'x': 1}`."""
    shape = ["input"] if call.args else []
    shape += ["**params"] if call.kwargs else []
    shape += ["ctx=NodeContext"] if wants_ctx else []
    values = [f"input={_short(call.args[0])}"] if call.args else []
    values.append(f"params={_short(dict(call.kwargs))}" if call.kwargs else "no params")
    return f"called as {call.uses}({', '.join(shape)}) with {', '.join(values)}"


# Values a JSON round trip gives back unchanged, and that no node can mutate: most batch items.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _fresh_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """`args` as the store would give them back: a JSON round trip (str keys, lists, a copy a
    node may mutate without changing the output it was read from). Left as they are when
    they are all scalars (nothing to change) or not JSON (then nothing could store them)."""
    for a in args:
        if type(a) not in _SCALARS:
            try:
                return tuple(json.loads(json.dumps(args)))
            except (TypeError, ValueError):
                return args
    return args


def _fresh_kwargs(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    for v in kwargs.values():
        if type(v) not in _SCALARS:
            try:
                return json.loads(json.dumps(kwargs))  # type: ignore[no-any-return]
            except (TypeError, ValueError):
                return kwargs
    return kwargs


def _encode(value: Any) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise TypeError(
            f"output of type {type(value).__name__} cannot be stored as JSON ({exc}); "
            "return plain data (dict, list, str, int, float, bool, None)"
        ) from exc


def crashed(call: Call, exc: BaseException) -> Outcome:
    """The failed outcome of a call that did not come back with one of its own: it raised a
    `BaseException` that is not an `Exception` (`SystemExit`, `KeyboardInterrupt`...), or its
    worker process died. Only that call fails; the others of its chunk carry on."""
    return Outcome(
        call.node,
        False,
        time.time(),
        0.0,
        error_type=type(exc).__name__,
        message=str(exc),
        traceback=_user_traceback(exc) if exc.__traceback__ is not None else "",
        retryable=retryable(exc, call.retry_on),
    )


def run_attempt(
    call: Call,
    fn: Callable[..., Any],
    *,
    wants_ctx: bool,
    is_async: bool,
    run_id: str,
    context: SharedContext,
    cancel: CancelScope,
) -> Outcome:
    """Run `call` once and describe what happened; never raises for the node's own errors.

    The node gets its inputs, and the run gets its output, as the store would give them back
    (a JSON round trip), so a fresh run, a resumed one and every executor agree: a dict's int
    keys are strings downstream, and a node that mutates its input changes nobody's output."""
    started = time.time()
    t0 = time.perf_counter()
    if call.context is not None:
        context = call.context  # a child run's call
    capture.begin()
    args = _fresh_args(call.args)
    # `${{ }}` params (a `Params`) are rendered below, for this call; plain ones are copied
    kwargs: Any = call.kwargs if isinstance(call.kwargs, Params) else _fresh_kwargs(call.kwargs)
    ctx = None
    attempt_cancel = None
    if wants_ctx:
        attempt_cancel = cancel.open() if call.timeout else cancel.run_cancelled
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
            value = _call(fn, is_async, args, kwargs)
        else:
            value = _with_timeout(fn, is_async, args, kwargs, call.timeout, attempt_cancel)
        action = None
        if isinstance(value, Result):
            value, action = value.output, value.action
            if action is not None and type(action) is not str:
                raise TypeError(
                    f"Result action must be a string or None, not {type(action).__name__} "
                    f"({action!r:.80}); it names the edges to take"
                )
        text = _encode(value)
        if type(value) not in _SCALARS:
            value = json.loads(text)
        logs = capture.end()
    except Exception as exc:
        message, can_retry = str(exc), retryable(exc, call.retry_on)
        if isinstance(exc, TypeError) and _bad_call(fn, call.args, kwargs, exc):
            message, can_retry = f"{exc} ({how_called(call, wants_ctx)})", False
        return Outcome(
            call.node,
            False,
            started,
            (time.perf_counter() - t0) * 1000,
            error_type=type(exc).__name__,
            message=message,
            traceback=_user_traceback(exc),
            updates=ctx.updates if ctx is not None else {},
            retryable=can_retry,
            logs=capture.end(),
        )
    finally:
        if attempt_cancel is not None and attempt_cancel is not cancel.run_cancelled:
            cancel.close(attempt_cancel)
        capture.attach(None)
    return Outcome(
        call.node,
        True,
        started,
        (time.perf_counter() - t0) * 1000,
        output=value,
        output_json=text,
        action=action,
        updates=ctx.updates if ctx is not None else {},
        logs=logs,
    )
