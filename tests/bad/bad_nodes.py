"""Node functions for the bad blueprints in this directory (they must never be called)."""

from __future__ import annotations

from typing import Any

NOT_CALLABLE = 42


def produce() -> list[int]:
    raise AssertionError("a node of an invalid blueprint ran")


def consume(value: Any = None) -> Any:
    raise AssertionError("a node of an invalid blueprint ran")
