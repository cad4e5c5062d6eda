"""Node functions that print, for the capture and `runs show` tests."""

from __future__ import annotations

import os
import sys
from typing import Any

if os.environ.get("FLOWRUN_TEST_IMPORT_PRINT"):
    print("printed while importing printing_nodes")


def chatty(x: Any = None) -> int:
    print("hello from chatty")
    print("to stderr from chatty", file=sys.stderr)
    return 1


def fd_writer(x: Any = None) -> int:
    os.write(1, b"fd-level stdout line\n")
    os.write(2, b"fd-level stderr line\n")
    return 2


def loud_failure(x: Any = None) -> None:
    print(f"about to fail with {x!r}")
    raise ValueError("loud failure")


def echo_item(item: int) -> int:
    print(f"item {item} says hi")
    if item == 3:
        raise RuntimeError("item 3 is bad")
    return item


def needs_two(a: Any, b: Any) -> Any:
    return a + b


def no_args() -> list[int]:
    return [1, 2]


def flood(x: Any = None) -> None:
    line = "x" * 1023 + "\n"
    for _ in range(3 * 1024):  # 3 MiB
        sys.stdout.write(line)
    print("the last line")
    raise ValueError("after a flood")


def markup(x: Any = None) -> None:
    print("<script>alert('printed')</script>")
    raise ValueError("<b>not bold</b> & more")
