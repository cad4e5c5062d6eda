"""Node functions the engine tests run (imported as `tests.nodes.*`)."""

from __future__ import annotations

import asyncio
import builtins
import os
import random
import threading
import time
from typing import Any

from flowrun import NodeContext, Result

_lock = threading.Lock()
running = 0
peak = 0
calls: dict[str, int] = {}
released = threading.Event()  # what `held` waits for


def reset() -> None:
    global running, peak
    running = peak = 0
    calls.clear()
    released.clear()


def slow_at(item: int, every: int, delay: float) -> int:
    """Return `item`, after `delay` seconds for every `every`-th one."""
    if item % every == every - 1:
        time.sleep(delay)
    return item


def held(i: int, *, at: int) -> Any:
    """Return `i`; call `at` instead waits (20 s at most) for `released`, and returns whether it
    came."""
    if i != at:
        return i
    return released.wait(20)


def _count(key: str) -> None:
    with _lock:
        calls[key] = calls.get(key, 0) + 1


def numbers(n: int = 3) -> list[int]:
    return [10 * (i + 1) for i in range(n)]


def double(item: int, factor: int = 2) -> int:
    return item * factor


def jitter_double(item: int) -> int:
    """Finish out of order: later items tend to finish first."""
    time.sleep(random.uniform(0, 0.01) + (0.02 if item % 2 else 0))
    return item * 2


def track(item: Any, delay: float = 0.02) -> Any:
    """Record how many calls run at once."""
    global running, peak
    with _lock:
        running += 1
        peak = max(peak, running)
    time.sleep(delay)
    with _lock:
        running -= 1
    return item


def flaky(x: Any = None, *, fails: int = 2, ctx: NodeContext) -> dict[str, Any]:
    _count(ctx.node_id)
    if ctx.attempt <= fails:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return {"attempt": ctx.attempt}


def always_fails(x: Any = None) -> None:
    raise ValueError("boom")


def fail_on(item: int, bad: list[int]) -> int:
    if item in bad:
        raise ValueError(f"bad item {item}")
    return item


def sleepy(x: Any = None, *, seconds: float = 5.0, ctx: NodeContext) -> str:
    if ctx.attempt == 1:
        ctx.cancelled.wait(seconds)
        return "late"
    return "on time"


def standin(x: Any = None) -> dict[str, Any]:
    return {"from": "fallback", "input": x}


def route(x: Any = None, *, to: str = "left") -> Result:
    return Result({"score": 0.7, "to": to}, action=to)


def ident(x: Any = None) -> Any:
    return x


def kwargs(**kw: Any) -> dict[str, Any]:
    return dict(kw)


async def async_double(item: int) -> int:
    await asyncio.sleep(0.001)
    return item * 2


def setter(x: Any = None, *, ctx: NodeContext) -> str:
    ctx.set("note", f"set by {ctx.node_id}")
    return ctx.get("note")


def unstorable(x: Any = None) -> object:
    return object()


def counted(item: Any) -> Any:
    _count(f"item-{item}")
    return item


started: dict[str, threading.Event] = {}  # run id -> set when its node started
gate = threading.Event()


def _started(run_id: str) -> None:
    with _lock:
        event = started.setdefault(run_id, threading.Event())
    event.set()


def until_cancelled(x: Any = None, *, ctx: NodeContext) -> str:
    """Wait for `ctx.cancelled` (a long while at most) and say whether it came."""
    _started(ctx.run_id)
    return "cancelled" if ctx.cancelled.wait(20) else "not cancelled"


def gated(x: Any = None, *, ctx: NodeContext) -> bool:
    """Wait for the test to open `gate`; then tell whether this attempt was cancelled."""
    _started(ctx.run_id)
    gate.wait(20)
    return ctx.cancelled.is_set()


def poll(state: Any = None, *, ready_at: int = 3, ctx: NodeContext) -> dict[str, Any]:
    """One look at a job: done from iteration `ready_at` on."""
    _count(ctx.node_id)
    checks = (state or {}).get("checks", 0) + 1
    return {"checks": checks, "state": "done" if ctx.index >= ready_at else "running"}


def poll_or_stop(state: Any = None, *, stop_file: str, ctx: NodeContext) -> dict[str, Any]:
    """`poll`, but iteration 3 fails while `stop_file` exists (to interrupt a loop)."""
    import os

    if ctx.index == 3 and os.path.exists(stop_file):
        raise RuntimeError("stopped at iteration 3")
    return poll(state, ready_at=4, ctx=ctx)


def tally(x: Any = None, *, ctx: NodeContext) -> Any:
    """Count calls by node id, and pass the input on."""
    _count(ctx.node_id)
    return x


def stop_if(x: Any = None, *, stop_file: str, ctx: NodeContext) -> Any:
    """Fail while `stop_file` exists (to interrupt a run), else pass the input on."""
    import os

    _count(ctx.node_id)
    if os.path.exists(stop_file):
        raise RuntimeError("stopped")
    return x


def fail_first(x: Any = None, *, ctx: NodeContext) -> Any:
    """Fail the first call made under this node id in this process, then pass the input on."""
    _count(ctx.node_id)
    if calls[ctx.node_id] == 1:
        raise ConnectionError("first call fails")
    return x


def paced(item: Any, delay: float = 0.002) -> Any:
    """Count the call and take a little time, so a run can be stopped part way."""
    _count(f"item-{item}")
    time.sleep(delay)
    return item


def padded(item: Any, size: int = 20_000) -> str:
    """An output big enough to fill a small disk quickly."""
    _count(f"item-{item}")
    time.sleep(0.002)
    return f"{item}:" + "x" * size


def bad_action(x: Any = None) -> Result:
    return Result(1, action=["a"])  # type: ignore[arg-type]


class Escape(BaseException):
    """A BaseException that is neither SystemExit nor KeyboardInterrupt."""


def escape_on(item: int, bad: int, how: str) -> int:
    """Leave the call the hard way on one item: raise a BaseException, or end the process."""
    if item == bad:
        if how == "exit":
            raise SystemExit(7)
        if how == "interrupt":
            raise KeyboardInterrupt
        if how == "escape":
            raise Escape("out")
        os._exit(3)
    return item


class QuotaError(Exception):
    """A failure class of this module, for `config.retryOn`."""


def fails_with(x: Any = None, *, error: str, ctx: NodeContext) -> None:
    """Raise `error` (a builtin name, QuotaError or FatalError), counting the attempts."""
    from flowrun import FatalError

    _count(ctx.node_id)
    kinds: dict[str, type[Exception]] = {"QuotaError": QuotaError, "FatalError": FatalError}
    raise kinds.get(error) or getattr(builtins, error)("no")


def int_keys(x: Any = None) -> dict[int, str]:
    return {1: "one", 2: "two"}


def key_types(d: dict[Any, Any]) -> list[str]:
    return sorted({type(k).__name__ for k in d})


def mutate(xs: list[Any]) -> int:
    """Change the input in place (a node should not; the run must not care)."""
    xs.append("changed")
    return len(xs)
