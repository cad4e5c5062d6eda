"""`async def` node functions for tests/test_async.py."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

from flowrun.node import NodeContext

_lock = threading.Lock()
running = 0  # items inside `counted` right now
peak = 0  # the most that were inside it at once
threads: set[int] = set()  # the threads `counted` ran on
unwound: list[str] = []  # nodes whose task saw CancelledError


def reset() -> None:
    global running, peak
    running = peak = 0
    threads.clear()
    unwound.clear()


async def counted(item: int, seconds: float = 0.01) -> int:
    global running, peak
    with _lock:
        running += 1
        peak = max(peak, running)
        threads.add(threading.get_ident())
    try:
        await asyncio.sleep(seconds)
    finally:
        with _lock:
            running -= 1
    return item


async def nap(item: int, seconds: float = 0.01) -> int:
    await asyncio.sleep(seconds)
    return item


async def talk(item: int) -> int:
    """Prints before and after an await, so that items' lines interleave on the loop."""
    print(f"item {item} begins")
    await asyncio.sleep(0.01 * (item % 3))
    print(f"item {item} ends", file=sys.stderr)
    return item


async def stuck(x: Any = None, *, ctx: NodeContext) -> str:
    """Sleeps far past any timeout; records that its task was cancelled."""
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        unwound.append(ctx.node_id)
        raise
    return "woke up"


async def until_cancelled(x: Any = None, *, ctx: NodeContext) -> str:
    from tests import nodes

    nodes._started(ctx.run_id)
    for _ in range(2000):
        if ctx.cancelled.is_set():
            return "cancelled"
        await asyncio.sleep(0.01)
    return "not cancelled"


async def fails(item: int) -> int:
    if item == 2:
        raise ValueError(f"bad item {item}")
    await asyncio.sleep(0)
    return item
