"""Run one attempt of a node function, anywhere: a pool thread, a process, a Dask worker.

Everything a worker needs travels in a `Call` (plain data: the dotted path, arguments, attempt)
and everything it produces comes back in an `Outcome` (plain data). A failure is a value: the
exception's type name, message and traceback text, never a raised exception, so the driving
loop never dies of a node's error. Outputs are encoded to JSON here, in the worker, so an output
that cannot be stored fails its own node with a clear message.
"""

from __future__ import annotations

import bisect
import inspect
import json
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import field, replace
from typing import TYPE_CHECKING, Any

from flowrun.engine import capture
from flowrun.expr.template import Params
from flowrun.frozen import Mutable, fast_mutable
from flowrun.node import FatalError, NodeContext, Result, SharedContext

if TYPE_CHECKING:  # imported on the first `async def` node: most runs never need asyncio
    import asyncio


@fast_mutable
class Call(Mutable):
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


@fast_mutable
class Outcome(Mutable):
    """What one attempt of a node's call ended with (on the worker), for the driver."""

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


#: How long a chunk of calls (independent task nodes, chunked by the driver) may keep starting
#: calls: past it the chunk returns what it has and the driver queues the rest again, so the
#: calls behind a slow one spread over the free workers instead of waiting on one. A backend
#: with a dearer round trip stretches it (`chunk_budget_s`). On threads the driver also looks
#: into a chunk that has run this long (`ChunkFuture`): it settles the calls that ended and
#: takes back those not started, so no call waits on a slow neighbour to be reported.
CHUNK_BUDGET_MS = 50.0

_local = threading.local()
# flowrun's own frames (this module, a backend) are cut from a node's traceback.
_FLOWRUN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class ChunkFuture(Future["list[Outcome]"]):
    """The future of a chunk of calls that run one after another on a thread of this process,
    which the driver may look into while it runs: `ran` holds the outcomes of the calls run so
    far, in chunk order, and `waiting` the calls not started yet, as (position, call). The
    worker takes the next call from the left (`popleft`), the driver may take the rest back
    from the right (`pop`): each call is taken once, by one of them. Its result is `ran`."""

    def __init__(self, calls: Sequence[Call]) -> None:
        super().__init__()
        self.ran: list[Outcome] = []
        self.waiting: deque[tuple[int, Call]] = deque(enumerate(calls))


def chunk_budget_s(dispatch_ms: float) -> float:
    """The time budget, in seconds, of a chunk of calls on a backend whose round trip costs
    `dispatch_ms`: `CHUNK_BUDGET_MS`, or 20 round trips when they cost more."""
    return max(CHUNK_BUDGET_MS, 20 * dispatch_ms) / 1000


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
    if type(value) in _SCALARS:  # most results: no coroutine (the ABC check costs more)
        return value
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


def attempt_setup(
    call: Call, wants_ctx: bool, run_id: str, context: SharedContext, cancel: CancelScope
) -> tuple[SharedContext, Any, NodeContext | None, threading.Event | None]:
    """What one attempt of `call` runs with: the context (a child run's own for its calls),
    the keyword arguments (plain ones copied; `${{ }}` params, a `Params`, are rendered by the
    caller), the node's `ctx` when it takes one, and the event that cancels the attempt."""
    if call.context is not None:
        context = call.context  # a child run's call
    kwargs: Any = call.kwargs if isinstance(call.kwargs, Params) else _fresh_kwargs(call.kwargs)
    if not wants_ctx:
        return context, kwargs, None, None
    attempt_cancel = cancel.open() if call.timeout else cancel.run_cancelled
    ctx = NodeContext(
        node_id=call.node,
        run_id=run_id,
        attempt=call.attempt,
        index=call.index,
        context=context,
        cancelled=attempt_cancel,
    )
    return context, kwargs, ctx, attempt_cancel


_encode_str: Callable[[Any], str] = json.encoder.encode_basestring_ascii


def result_parts(value: Any) -> tuple[Any, str | None]:
    """(output, action) of a node's return value: a `Result`'s two, else (value, None). The
    action must be a string or None: it names the edges to take."""
    action = None
    if isinstance(value, Result):
        value, action = value.output, value.action
        if action is not None and type(action) is not str:
            raise TypeError(
                f"Result action must be a string or None, not {type(action).__name__} "
                f"({action!r:.80}); it names the edges to take"
            )
    return value, action


def stored_result(value: Any) -> tuple[Any, str | None, str]:
    """What a node's return value comes to: (output as the store gives it back, action, its
    JSON text). A `Result` gives its output and action (`result_parts`)."""
    value, action = result_parts(value)
    kind = type(value)
    if kind is int or kind is str or value is None or kind is bool:
        return value, action, _scalar_json(value)
    text = _encode(value)
    if kind not in _SCALARS:
        value = json.loads(text)
    return value, action, text


def _scalar_json(value: int | str | bool | None) -> str:
    """`json.dumps` of an int, str, bool or None without building an encoder per call."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return int.__repr__(value)
    return _encode_str(value)


def json_text(value: Any) -> str:
    """`json.dumps(value, allow_nan=False, separators=(",", ":"))`, without building an encoder
    per call (a batch over a subflow encodes each child run's output)."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str or value is None or kind is bool:
        return _scalar_json(value)
    return _ENCODER.encode(value)


def succeeded_attempt(
    call: Call,
    started: float,
    t0: float,
    value: Any,
    action: str | None,
    text: str,
    ctx: NodeContext | None,
    logs: str,
) -> Outcome:
    """The outcome of an attempt whose node returned (`stored_result` gave value, action and
    text)."""
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


def failed_attempt(
    call: Call,
    fn: Callable[..., Any],
    exc: BaseException,
    kwargs: Any,
    wants_ctx: bool,
    started: float,
    t0: float,
    ctx: NodeContext | None,
    logs: str,
) -> Outcome:
    """The outcome of an attempt whose node raised `exc`: a call that could not bind (a
    `TypeError` from the call itself) says how it was called and is not retried."""
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
        logs=logs,
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
    capture.begin()
    args = _fresh_args(call.args)
    context, kwargs, ctx, attempt_cancel = attempt_setup(call, wants_ctx, run_id, context, cancel)
    try:
        if isinstance(kwargs, Params):  # `${{ }}` in params: rendered for this call
            kwargs = kwargs.render(call.args, context.data)
        if ctx is not None:
            kwargs = {**kwargs, "ctx": ctx}
        if call.timeout is None:
            value = _call(fn, is_async, args, kwargs)
        else:
            value = _with_timeout(fn, is_async, args, kwargs, call.timeout, attempt_cancel)
        value, action, text = stored_result(value)
        logs = capture.end()
    except Exception as exc:
        return failed_attempt(call, fn, exc, kwargs, wants_ctx, started, t0, ctx, capture.end())
    finally:
        if attempt_cancel is not None and attempt_cancel is not cancel.run_cancelled:
            cancel.close(attempt_cancel)
        capture.attach(None)
    return succeeded_attempt(call, started, t0, value, action, text, ctx, logs)


# -- a chunk of batch items ------------------------------------------------------------------


@fast_mutable
class Items(Mutable):
    """A chunk of one batch's items for one worker: `uses(value, **kwargs)` per value, one
    after another. No `Call` per item: one is made only for an item whose outcome needs one
    (a failure, a retry, a function that takes `ctx` or has a timeout)."""

    batch: str
    uses: str
    values: Sequence[Any]
    indices: Sequence[int]  # a `range` when the items are consecutive
    kwargs: Mapping[str, Any]
    timeout: float | None = None
    retry_on: tuple[str, ...] | None = None
    #: each success's JSON text is wanted on its own too (a batch writing its `outputTo` file)
    texts: bool = False
    #: the `.jsonl` file `values` are raw lines of: the worker parses them (`parsed`), so the
    #: driver does not, and the values it gets are fresh (no round trip to copy them)
    lines: str | None = None
    #: where the items' results go as each one ends, for the driver to read while the chunk
    #: still runs (a lane's claim of several slow items, on this process's threads)
    progress: Progress | None = None

    def call(self, pos: int) -> Call:
        """The call of the item at position `pos` of the chunk (its first attempt)."""
        i = self.indices[pos]
        value = self.values[pos]
        if self.lines is not None:
            from flowrun.engine.itemsources import parse_jsonl

            value = parse_jsonl(value, self.lines, i)
        return Call(f"{self.batch}[{i}]", self.uses, (value,), self.kwargs, 1, i,
                    self.timeout, self.retry_on)  # fmt: skip

    def parsed(self) -> tuple[Items, dict[int, str]]:
        """This chunk with its raw lines parsed, and the message of each line that is not a
        JSON value, by position (those items fail without being called)."""
        from flowrun.engine.itemsources import Malformed, parse_jsonl

        assert self.lines is not None
        name, values, bad = self.lines, [], {}
        for pos, (line, i) in enumerate(zip(self.values, self.indices, strict=True)):
            value = parse_jsonl(line, name, i)
            if isinstance(value, Malformed):
                bad[pos], value = value.message, None
            values.append(value)
        return replace(self, values=values, lines=None), bad


@fast_mutable
class Progress(Mutable):
    """A running chunk's results so far: `run_items` appends each item's as it ends (the
    columns of `ItemsOutcome`, not yet encoded), then counts it in `done`; the driver reads the
    first `done` and counts what it settled of them in `settled` (under the lane's lock).
    Nothing is ever changed in place once appended, so a reader on another thread sees whole
    items only. The driver may also take back the items not started yet: `run_items` starts
    none from `until` on (it counts an item done and checks `until` under `lock`)."""

    ok: list[int] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    others: list[tuple[int, Outcome]] = field(default_factory=list)
    done: int = 0
    until: int = 1 << 62
    lock: threading.Lock = field(default_factory=threading.Lock)
    settled: int = 0
    announced: int = 1  # the chunk's first items announced as started (the first at its claim)
    since: float = 0.0  # `time.time()` when the chunk was claimed
    due: float = 0.0  # when it runs long: the driver then settles and takes back (`lanes`)


def finished_part(chunk: Items, prog: Progress, a: int, b: int) -> tuple[Items, ItemsOutcome]:
    """Items `a:b` of a running chunk, all ended (`b <= prog.done`), as a chunk and outcome of
    their own: outputs encoded, an output that is not JSON failing its item, as at the end."""
    ok = prog.ok
    j, k = bisect.bisect_left(ok, a), bisect.bisect_left(ok, b)
    part = replace(chunk, values=chunk.values[a:b], indices=chunk.indices[a:b], progress=None)
    others = [(p - a, o) for p, o in prog.others if a <= p < b]
    shifted = [p - a for p in ok[j:k]]
    res = _encoded(part, prog.since, b - a, shifted, prog.outputs[j:k], prog.durations[j:k], others)
    return part, res


def rest_of(chunk: Items, res: ItemsOutcome, m: int) -> tuple[Items, ItemsOutcome] | None:
    """What `res` says of the chunk's items from position `m` on (the driver settled those
    before it while the chunk ran); None if none of them ran."""
    if res.ran <= m:
        return None
    j = bisect.bisect_left(res.ok, m)
    texts = (res.texts if res.texts is not None else each_json(res.outputs))[j:]
    part = replace(chunk, values=chunk.values[m:], indices=chunk.indices[m:], progress=None)
    others = [(p - m, o) for p, o in res.others if p >= m]
    ok = [p - m for p in res.ok[j:]]
    text = "[" + ",".join(texts) + "]"
    return part, ItemsOutcome(res.started, res.ran - m, ok, res.outputs[j:], text,
                              res.durations_ms[j:], others, texts)  # fmt: skip


@fast_mutable
class ItemsOutcome(Mutable):
    """What a chunk came to. The plain successes (no action, nothing printed, no `ctx.set`)
    are columns: their positions in the chunk, outputs (as the store gives them back), JSON
    array and durations. Every other item, failed or not, has an `Outcome` of its own."""

    started: float  # epoch seconds
    ran: int  # items run: fewer than the chunk's when the run was cancelled part way
    ok: list[int] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    outputs_json: str = "[]"
    durations_ms: list[float] = field(default_factory=list)
    others: list[tuple[int, Outcome]] = field(default_factory=list)  # (position, outcome)
    #: each success's JSON text, when the chunk asked for them or some item is in `others`
    texts: list[str] | None = None


# One encoder for every chunk: `json.dumps` with options builds a new encoder per call.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_PLAIN = _SCALARS | {list, dict}


def run_items(
    chunk: Items,
    fn: Callable[..., Any],
    *,
    wants_ctx: bool,
    is_async: bool,
    run_id: str,
    context: SharedContext,
    cancel: CancelScope,
) -> ItemsOutcome:
    """Run a chunk of items; never raises for the nodes' own errors. What each item gets and
    gives is what `run_attempt` would: a JSON round trip of its input and its output, its
    prints captured, a failure described. The outputs are encoded once, as one array."""
    started = time.time()
    bad: dict[int, str] = {}
    fresh = chunk.lines is not None
    if fresh:
        chunk, bad = chunk.parsed()
    if wants_ctx or is_async or chunk.timeout is not None:
        return _each(chunk, fn, started, wants_ctx, is_async, run_id, context, cancel, bad)
    values = chunk.values
    if not fresh and not _SCALARS.issuperset(map(type, values)):
        values = _fresh_values(values)
    kwargs: Any = chunk.kwargs
    render = type(kwargs) is Params  # no subclasses: `isinstance` would ask the ABC
    plain = not render and _SCALARS.issuperset(map(type, kwargs.values()))
    data = context.data
    stopped = cancel.run_cancelled.is_set
    perf = time.perf_counter
    # `capture.begin`/`end`, inline: the per-item loop is the hot path
    local, opened = capture._local, capture._OPEN
    prog = chunk.progress
    if prog is None:
        ok: list[int] = []
        outputs: list[Any] = []
        durations: list[float] = []
        others: list[tuple[int, Outcome]] = []
    else:
        ok, outputs, durations, others = prog.ok, prog.outputs, prog.durations, prog.others
    ran = 0
    t = perf()
    for pos, value in enumerate(values):
        if pos:
            if prog is not None:
                with prog.lock:
                    prog.done = pos  # its columns have all of the items before
                    if pos >= prog.until:
                        break  # the driver took the rest back
            if stopped():
                break  # the driver treats the items not run as never started
        ran += 1
        if bad and pos in bad:
            others.append((pos, _malformed(chunk, pos, bad[pos], started)))
            continue
        kw: Any = kwargs
        local.buf = opened
        try:
            if not plain:
                kw = kwargs.render((chunk.values[pos],), data) if render else _fresh_kwargs(kwargs)
            out = fn(value, **kw)
            action = None
            if type(out) not in _PLAIN:
                out, action = _unwrap(out)
        except Exception as exc:
            t1 = perf()
            call = chunk.call(pos)
            others.append((pos, _failure(call, fn, exc, kw, started, (t1 - t) * 1000,
                                         capture.end())))  # fmt: skip
            t = t1
            continue
        except BaseException as exc:  # SystemExit, KeyboardInterrupt from the node: only it fails
            capture.end()
            others.append((pos, crashed(chunk.call(pos), exc)))
            t = perf()
            continue
        t1 = perf()
        if action is None and local.buf is opened:  # printed nothing
            ok.append(pos)
            outputs.append(out)
            durations.append((t1 - t) * 1000)
        else:
            logs = capture.end()
            others.append((pos, _success(chunk, pos, out, action, logs, started, (t1 - t) * 1000)))
        t = t1
    local.buf = None
    return _encoded(chunk, started, ran, ok, outputs, durations, others)


def _unwrap(value: Any) -> tuple[Any, str | None]:
    """A value that is not plain data: a coroutine (run it) or a `Result` (output, action)."""
    if isinstance(value, Coroutine):
        value = _call(_same, False, (value,), {})
    return result_parts(value)


def _same(value: Any) -> Any:
    return value


def _fresh_values(values: Sequence[Any]) -> list[Any]:
    """The chunk's inputs through one JSON round trip (each item's on its own when the chunk
    holds something that is not JSON: that item gets it as it is, as `_fresh_args` does)."""
    try:
        return json.loads(_ENCODER.encode(list(values)))  # type: ignore[no-any-return]
    except (TypeError, ValueError):
        return [_fresh_args((v,))[0] for v in values]


def _failure(
    call: Call, fn: Callable[..., Any], exc: Exception, kwargs: Any, started: float, ms: float,
    logs: str,
) -> Outcome:  # fmt: skip
    """The outcome of an item that raised, as `run_attempt` describes it."""
    message, can_retry = str(exc), retryable(exc, call.retry_on)
    if isinstance(exc, TypeError) and _bad_call(fn, call.args, kwargs, exc):
        message, can_retry = f"{exc} ({how_called(call, False)})", False
    return Outcome(
        call.node,
        False,
        started,
        ms,
        error_type=type(exc).__name__,
        message=message,
        traceback=_user_traceback(exc),
        retryable=can_retry,
        logs=logs,
    )


def _success(
    chunk: Items, pos: int, value: Any, action: str | None, logs: str, started: float, ms: float
) -> Outcome:
    """The outcome of an item that chose an action or printed something: one of its own."""
    call = chunk.call(pos)
    try:
        text = _encode(value)
    except TypeError as exc:
        return _failure(call, _same, exc, {}, started, ms, logs)
    if type(value) not in _SCALARS:
        value = json.loads(text)
    return Outcome(call.node, True, started, ms, value, text, action, logs=logs)


def _encoded(
    chunk: Items,
    started: float,
    ran: int,
    ok: list[int],
    outputs: list[Any],
    durations: list[float],
    others: list[tuple[int, Outcome]],
) -> ItemsOutcome:
    """Encode the successes' outputs as one JSON array; an output that cannot be stored fails
    its own item, as in `run_attempt`."""
    try:
        text = _encode_list(outputs)
    except (TypeError, ValueError):
        text = ""
    if not text:  # find the outputs that are not JSON; the others stay
        keep: list[int] = []
        others = list(others)  # a new list: the driver may be reading the chunk's `Progress`
        for n, value in enumerate(outputs):
            try:
                _encode(value)
                keep.append(n)
            except TypeError as exc:
                call = chunk.call(ok[n])
                others.append((ok[n], _failure(call, _same, exc, {}, started, durations[n], "")))
        others.sort(key=lambda o: o[0])
        ok, outputs = [ok[n] for n in keep], [outputs[n] for n in keep]
        durations = [durations[n] for n in keep]
        text = _ENCODER.encode(outputs)
    if not _SCALARS.issuperset(map(type, outputs)):
        outputs = json.loads(text)
    texts = each_json(outputs) if chunk.texts or others else None
    return ItemsOutcome(started, ran, ok, outputs, text, durations, others, texts)


# The C encoder `_ENCODER.encode` builds anew on every call, built once: each success's text
# on its own (a batch writing its `outputTo` file) costs one C call, not an encoder per item.
# No circular-reference markers: the values come from `json.loads` (they have no cycles).
_C_ENCODE = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _ENCODER.default, json.encoder.encode_basestring_ascii, None, ":", ",", False,
        False, False,
    )
    if getattr(json.encoder, "c_make_encoder", None) is not None
    else None
)  # fmt: skip


def _encode_list(values: list[Any]) -> str:
    """`_ENCODER.encode(values)`, a third of its cost: the C encoder built once, without
    circular-reference markers (a value that contains itself recurses until Python's limit,
    and then takes the encoder's own way, which says so)."""
    if _C_ENCODE is None:
        return _ENCODER.encode(values)
    try:
        return "".join(_C_ENCODE(values, 0))
    except RecursionError:
        return _ENCODER.encode(values)


def each_json(values: list[Any]) -> list[str]:
    """The JSON text of each of `values` (decoded JSON data), as `_ENCODER.encode` gives it."""
    if _C_ENCODE is None:
        return [_ENCODER.encode(v) for v in values]
    join, enc = "".join, _C_ENCODE
    return [join(enc(v, 0)) for v in values]


def _each(
    chunk: Items,
    fn: Callable[..., Any],
    started: float,
    wants_ctx: bool,
    is_async: bool,
    run_id: str,
    context: SharedContext,
    cancel: CancelScope,
    bad: Mapping[int, str],
) -> ItemsOutcome:
    """A chunk whose items need `run_attempt` each (`ctx`, a timeout, an `async def`)."""
    outcomes: list[Outcome] = []
    prog = chunk.progress
    for pos in range(len(chunk.values)):
        if pos:
            if prog is not None and not _progressed(prog, outcomes[-1], pos):
                break  # the driver took the rest back
            if cancel.run_cancelled.is_set():
                break
        if pos in bad:
            outcomes.append(_malformed(chunk, pos, bad[pos], started))
            continue
        call = chunk.call(pos)
        try:
            out = run_attempt(call, fn, wants_ctx=wants_ctx, is_async=is_async, run_id=run_id,
                              context=context, cancel=cancel)  # fmt: skip
        except BaseException as exc:
            out = crashed(call, exc)
        outcomes.append(out)
    return items_outcome(outcomes, started)


def _progressed(prog: Progress, out: Outcome, pos: int) -> bool:
    """Item `pos - 1`, run as a call of its own, ended with `out` (`items_outcome`'s split);
    may item `pos` start?"""
    if out.ok and out.action is None and not out.logs and not out.updates:
        prog.ok.append(pos - 1)
        prog.outputs.append(out.output)
        prog.durations.append(out.duration_ms)
    else:
        prog.others.append((pos - 1, out))
    with prog.lock:
        prog.done = pos
        return pos < prog.until


def _malformed(chunk: Items, pos: int, message: str, started: float) -> Outcome:
    """The item whose line could not be read: it fails at once, and no retry can help."""
    node = f"{chunk.batch}[{chunk.indices[pos]}]"
    return Outcome(node, False, started, 0.0, error_type="ItemError", message=message,
                   retryable=False)  # fmt: skip


def items_outcome(outcomes: Sequence[Outcome], started: float) -> ItemsOutcome:
    """The outcome of a chunk whose items ran as calls of their own (`outcomes`, in chunk
    order; fewer than the chunk's items when it stopped early)."""
    result = ItemsOutcome(started, len(outcomes))
    texts: list[str] = []
    for pos, out in enumerate(outcomes):
        if out.ok and out.action is None and not out.logs and not out.updates:
            result.ok.append(pos)
            result.outputs.append(out.output)
            result.durations_ms.append(out.duration_ms)
            texts.append(out.output_json)
        else:
            result.others.append((pos, out))
    result.outputs_json = "[" + ",".join(texts) + "]"
    result.texts = texts
    return result


def crashed_items(chunk: Items, exc: BaseException) -> ItemsOutcome:
    """A chunk whose worker failed as a whole: every item fails with `exc`."""
    others = [(pos, crashed(chunk.call(pos), exc)) for pos in range(len(chunk.values))]
    for _, out in others:
        out.traceback = ""
    return ItemsOutcome(time.time(), len(others), others=others, texts=[])
