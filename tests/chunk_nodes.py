"""Batch item functions for the chunk tests: a few items of a batch fail, print, or choose an
action, the others are plain."""

from __future__ import annotations

import asyncio
from typing import Any

from flowrun.node import NodeContext, Result


def mixed(x: int) -> Any:
    if x % 97 == 5:
        raise ValueError(f"item {x} fails")
    if x % 101 == 7:
        print(f"item {x} speaks")
    if x % 89 == 3:
        return Result(x * 2, "chosen")
    return x * 2


def keyed(x: int) -> dict[int, int]:
    return {x: x}


def mutating(x: dict[str, Any]) -> dict[str, Any]:
    x["seen"] = True
    return x


def indexed(x: int, ctx: NodeContext) -> int:
    return x * 1000 + (ctx.index or 0)


async def later(x: int) -> int:
    return x + 1


async def amixed(x: int) -> Any:
    """`mixed` as a coroutine: it awaits first, so the chunk's items interleave on the loop."""
    await asyncio.sleep(0)
    if x % 97 == 5:
        raise ValueError(f"item {x} fails")
    if x % 101 == 7:
        print(f"item {x} speaks")
        await asyncio.sleep(0)
        print(f"item {x} again")
    if x % 89 == 3:
        return Result(x * 2, "chosen")
    return x * 2


async def akeyed(x: int) -> dict[int, int]:
    return {x: x}
