"""Per-call cost of `run_attempt` on a pool thread's hot path, for a scalar and a dict item.

    python bench/round_trip.py

What it isolates: the JSON round trip that gives a node its inputs and the run its output as
the store would give them back (scalars skip it). Run it on two checkouts, alternating, with
`PYTHONPATH=<checkout>`, to compare; the whole-process view is W1/W3 in bench/run.py.
"""

from __future__ import annotations

import threading
import timeit
from typing import Any

from flowrun.engine.invoke import Call, run_attempt
from flowrun.node import SharedContext

CASES: dict[str, Any] = {
    "scalar item (int)": 7,
    "dict item {a, b: [3 ints]}": {"a": "x", "b": [1, 2, 3]},
}


def ident(x: Any) -> Any:
    return x


def per_call_us(item: Any, number: int = 20_000) -> float:
    context, cancelled = SharedContext({}), threading.Event()
    call = Call("b[0]", "ident", (item,), {}, 1, 0, None)

    def once() -> None:
        run_attempt(call, ident, wants_ctx=False, is_async=False, run_id="r",
                    context=context, cancelled=cancelled)  # fmt: skip

    return min(timeit.repeat(once, number=number, repeat=5)) / number * 1e6


if __name__ == "__main__":
    for name, item in CASES.items():
        print(f"{name}: {per_call_us(item):.2f} µs per call")
