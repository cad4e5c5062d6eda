"""Batch item functions slow enough (a millisecond or more) that their workers take the next
items themselves (`engine.lanes`); `running` counts how many run at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from flowrun.node import NodeContext, Result

_lock = threading.Lock()
_now = 0
peak = 0
calls: dict[int, int] = {}  # item -> attempts so far


def reset() -> None:
    global _now, peak
    with _lock:
        _now = peak = 0
        calls.clear()


def _enter(x: int) -> int:
    global _now, peak
    with _lock:
        _now += 1
        peak = max(peak, _now)
        calls[x] = calls.get(x, 0) + 1
        return calls[x]


def _leave() -> None:
    global _now
    with _lock:
        _now -= 1


def slow(x: int, seconds: float = 0.002) -> Any:
    """Like `chunk_nodes.mixed`, but each item takes `seconds`."""
    _enter(x)
    try:
        time.sleep(seconds)
    finally:
        _leave()
    if x % 37 == 5:
        raise ValueError(f"item {x} fails")
    if x % 41 == 7:
        print(f"item {x} speaks")
    if x % 43 == 3:
        return Result(x * 2, "chosen")
    return x * 2


def flaky(x: int, seconds: float = 0.002) -> int:
    """Fails its first attempt when x % 10 == 3."""
    attempt = _enter(x)
    try:
        time.sleep(seconds)
    finally:
        _leave()
    if x % 10 == 3 and attempt == 1:
        raise ConnectionError(f"item {x}, attempt {attempt}")
    return x


def failing(x: int, seconds: float = 0.002) -> int:
    """Every item from 40 on fails."""
    _enter(x)
    try:
        time.sleep(seconds)
    finally:
        _leave()
    if x >= 40:
        raise ValueError(f"item {x} fails")
    return x


def counted(x: int, ctx: NodeContext, seconds: float = 0.002) -> int:
    _enter(x)
    try:
        time.sleep(seconds)
    finally:
        _leave()
    ctx.set(f"seen-{x % 3}", True)
    return x * 1000 + (ctx.index or 0)


def unlucky(x: int, seconds: float = 0.002) -> int:
    """Never returns before the run is cancelled (when x == 60); the others are quick."""
    _enter(x)
    try:
        time.sleep(seconds)
    finally:
        _leave()
    return x


released = threading.Event()


def held_at(x: int, at: int, seconds: float = 0.002) -> Any:
    """Sleep `seconds` and return `x`; item `at` instead waits (10 s at most) for `released`
    and returns whether it came."""
    _enter(x)
    try:
        if x == at:
            return released.wait(10)
        time.sleep(seconds)
        return x
    finally:
        _leave()


reached = threading.Event()


def hangs_at(x: int, at: int, seconds: float = 0.002) -> Any:
    """Sleep `seconds` and return `x`; item `at` sets `reached`, then waits (10 s at most) for
    `released`."""
    _enter(x)
    try:
        if x == at:
            reached.set()
            return released.wait(10)
        time.sleep(seconds)
        return x
    finally:
        _leave()
