"""Node functions for the loop-over-subflow, subflow-timeout and child-context tests (imported
as `tests.composition_nodes.*`)."""

from __future__ import annotations

import os
import threading
from typing import Any

from flowrun import NodeContext

_lock = threading.Lock()
calls: dict[str, int] = {}


def reset() -> None:
    calls.clear()


def _count(key: str) -> None:
    with _lock:
        calls[key] = calls.get(key, 0) + 1


def step(state: Any = None, *, ctx: NodeContext) -> dict[str, Any]:
    """One look at a job: count the looks, done from the third on."""
    _count(ctx.node_id)
    looks = (state or {}).get("looks", 0) + 1
    return {"looks": looks, "state": "done" if looks >= 3 else "running"}


def check_unless(state: Any = None, *, stop_file: str | None, ctx: NodeContext) -> Any:
    """Pass the state on; fail on the third look while `stop_file` exists."""
    _count(ctx.node_id)
    if state.get("looks") == 3 and stop_file and os.path.exists(stop_file):
        raise RuntimeError("stopped at the third look")
    return state


def context_view(x: Any = None, *, ctx: NodeContext) -> dict[str, Any]:
    """What `ctx.get` sees (the child's `input`, a key `inputs` set, a parent key); then set
    a key of its own."""
    seen = {"input": ctx.get("input"), "who": ctx.get("who"), "secret": ctx.get("secret")}
    ctx.set("scratch", f"set by {ctx.node_id}")
    return seen


async def context_view_async(x: Any = None, *, ctx: NodeContext) -> dict[str, Any]:
    """`context_view` as an `async def` node (run on the backend's event loop)."""
    return context_view(x, ctx=ctx)


def read_scratch(x: Any = None, *, ctx: NodeContext) -> Any:
    """What the previous child node set with `ctx.set`."""
    return ctx.get("scratch")


def plus(x: int, by: int = 1) -> int:
    return x + by


def takes_two(a: Any, b: Any) -> Any:
    return [a, b]


def fresh() -> dict[str, Any]:
    """Takes no input: fine as a loop's first iteration without one, not as a later one."""
    return {"state": "done"}
