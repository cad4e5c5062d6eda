"""The plain-Python baseline a flowrun workload is compared with: the same node functions, run by
a bare `concurrent.futures.ThreadPoolExecutor`, one `list(ex.map(fn, items))` per stage, then
the same downstream work (`len`).

    python bench/baseline.py WORKDIR N CONCURRENCY FN [FN ...] [--seconds S]

prints `count: <len>` (the line flowrun prints for the `count` node) and `map_s: <seconds>`,
the time spent in the maps (the makespan of the batches).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import importlib
import sys
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", help="directory holding the generated benchnodes.py")
    parser.add_argument("n", type=int, help="items")
    parser.add_argument("concurrency", type=int, help="max_workers of the pool")
    parser.add_argument("stages", nargs="+", help="benchnodes functions, one map each")
    parser.add_argument("--seconds", type=float, help="passed as seconds= to every call")
    parser.add_argument("--module", default="benchnodes")
    args = parser.parse_args(argv)

    sys.path.insert(0, args.workdir)
    nodes = importlib.import_module(args.module)
    items = nodes.start(args.n)
    fns = [getattr(nodes, name) for name in args.stages]
    if args.seconds is not None:
        fns = [functools.partial(fn, seconds=args.seconds) for fn in fns]
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.concurrency) as ex:
        for fn in fns:
            items = list(ex.map(fn, items))
    map_s = time.perf_counter() - t0
    print(f"count: {len(items)}")
    print(f"map_s: {map_s:.6f}")


if __name__ == "__main__":
    main()
