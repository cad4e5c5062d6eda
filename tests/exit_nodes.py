"""Node functions for tests/test_reliability_exit.py and tests/test_expr_cost.py."""

from __future__ import annotations

import threading
import time
from typing import Any


def leave_thread(x: Any = None, *, fail: bool = False) -> int:
    """Start a non-daemon thread that outlives the run by far, then return (or raise)."""
    threading.Thread(target=time.sleep, args=(600,), name="left-behind").start()
    if fail:
        raise RuntimeError("failing after starting a thread")
    return 1


def large(x: Any = None, *, n: int = 40_000) -> list[str]:
    """An output whose `--json` document (about 2 MB) is far larger than a pipe's buffer."""
    return [f"{i:08d}" + "x" * 40 for i in range(n)]


def ignores(x: Any = None, **params: Any) -> int:
    """Return the same whatever it is given (so a bad input is not caught by its output)."""
    return 0
