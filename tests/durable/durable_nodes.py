"""Node functions for the durability tests, run by real `flowrun run` processes.

Every call appends one line to the file named by `FLOWRUN_TEST_CALLS` (one `os.write` on an
`O_APPEND` descriptor, so lines from concurrent threads never interleave), before it does its
work: the log counts calls across processes, including a call that a `kill -9` cut short.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _log(line: str) -> None:
    fd = os.open(os.environ["FLOWRUN_TEST_CALLS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


_lock = threading.Lock()
_work_calls = 0  # calls of `work` in this process


def _count_work_call() -> None:
    global _work_calls
    with _lock:
        _work_calls += 1


def numbers(n: int = 10) -> list[int]:
    _log("numbers")
    return list(range(n))


def work(item: int, delay: float = 0.02, fail_index: int = -1, total: int = 0) -> int:
    """Sleep `delay` seconds (odd items a little longer, so items finish out of order) and
    return `item * 10`.

    Item `fail_index` raises while the file named by `FLOWRUN_TEST_FAIL_FLAG` exists, once
    this process has called all `total` items (so every other item was handed out before the
    batch fails). With `FLOWRUN_TEST_GATE_FROM` set, items from that index on wait until the
    file named by `FLOWRUN_TEST_RELEASE` exists (at most 10 s), so a test can hold a run
    mid-batch for as long as it needs, whatever the machine's speed."""
    _log(f"work {item}")
    _count_work_call()
    gate = os.environ.get("FLOWRUN_TEST_GATE_FROM")
    if gate is not None and item >= int(gate):
        _wait_for(Path(os.environ["FLOWRUN_TEST_RELEASE"]).exists)
    flag = os.environ.get("FLOWRUN_TEST_FAIL_FLAG")
    if item == fail_index and flag and Path(flag).exists():
        _wait_for(lambda: _work_calls >= total)
        raise ValueError(f"item {item} is broken")
    time.sleep(delay * (1.5 if item % 2 else 1.0))
    return item * 10


def _wait_for(done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.005)


def total(items: list[int]) -> int:
    _log("total")
    return sum(items)


def stuck(seconds: float = 30.0) -> str:
    """Ignores ctx.cancelled: only a hard exit ends it early."""
    _log("stuck")
    time.sleep(seconds)
    return "done"


class Opaque:
    """Not JSON: a node returning one must fail, never be pickled."""


def opaque() -> Any:
    _log("opaque")
    return Opaque()


def child_step(x: int, *, delay: float = 0.03, factor: int = 1, ctx: Any) -> int:
    """A node of `one-item.yaml` (a subflow run per batch item): log `child <node id>` (the
    marker the kill -9 test counts), sleep `delay`, return `x * factor`. With
    `FLOWRUN_TEST_GATE_FROM` set, items from that index on wait for the release file first."""
    _log(f"child {ctx.node_id}")
    gate = os.environ.get("FLOWRUN_TEST_GATE_FROM")
    if gate is not None and x >= int(gate):
        _wait_for(Path(os.environ["FLOWRUN_TEST_RELEASE"]).exists)
    time.sleep(delay)
    return x * factor
