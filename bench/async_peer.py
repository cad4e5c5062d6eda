"""The asyncio peer of W2's `async def` worker: the same `benchnodes.anap` coroutines, all
created up front and run by `asyncio.gather`, at most CONCURRENCY at once (a semaphore).

    python bench/async_peer.py WORKDIR N CONCURRENCY [--seconds S]

prints `count: <len>` and `map_s: <seconds>` (the makespan of the gather), like baseline.py.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from typing import Any


async def run_all(fn: Any, items: list[Any], concurrency: int, seconds: float) -> list[Any]:
    sem = asyncio.Semaphore(concurrency)

    async def one(x: Any) -> Any:
        async with sem:
            return await fn(x, seconds=seconds)

    return await asyncio.gather(*(one(x) for x in items))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", help="directory holding the generated benchnodes.py")
    parser.add_argument("n", type=int, help="items")
    parser.add_argument("concurrency", type=int, help="the semaphore's value")
    parser.add_argument("--seconds", type=float, default=0.02)
    args = parser.parse_args(argv)

    sys.path.insert(0, args.workdir)
    nodes = importlib.import_module("benchnodes")
    items = nodes.start(args.n)
    t0 = time.perf_counter()
    out = asyncio.run(run_all(nodes.anap, items, args.concurrency, args.seconds))
    map_s = time.perf_counter() - t0
    print(f"count: {len(out)}")
    print(f"map_s: {map_s:.6f}")


if __name__ == "__main__":
    main()
