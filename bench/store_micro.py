"""Micro-benchmark of the durable store alone: the event stream of a no-op batch, in process.

    python bench/store_micro.py                  # 100,000 items, 5 repetitions
    python bench/store_micro.py --items 1000000 --reps 3 --idle-every 64

Feeds `RunStore` what the driver emits for a batch (`BatchStarted`, then per item
`NodeStarted` + `NodeSucceeded`, then `BatchFinished` and `RunFinished`) and prints, per item,
the time the feeding thread spent in the store, the wall time up to `close()` (the writer's
last commit), and the process CPU time (both threads: with the GIL, what the writer takes it
takes from the run). `--idle-every K` calls `idle()` every K items, as a driver that often
waits for work would. A sink that records nothing gives the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from flowrun import events as ev  # noqa: E402
from flowrun.store import GROUP_MAX, RunMeta, RunStore  # noqa: E402

T0 = 1_790_000_000.0


def stream(n: int) -> list[ev.Event]:
    out: list[ev.Event] = [ev.RunStarted(T0, "r", "bp"), ev.BatchStarted(T0, "work", n)]
    for i in range(n):
        node = f"work[{i}]"
        out.append(ev.NodeStarted(T0, node, 1, "work", i))
        out.append(ev.NodeSucceeded(T0, node, 1, 0.004, "work", i, None, i, str(i)))
    out.append(ev.BatchFinished(T0, "work", "succeeded", n, n, 0, "out"))
    out.append(ev.RunFinished(T0, "completed", 1.0))
    return out


def once(events: list[ev.Event], idle_every: int, record: bool) -> tuple[float, float, float]:
    """(feeding s, wall s to close, process CPU s) for one pass over `events`."""
    with tempfile.TemporaryDirectory(prefix="flowrun-store-micro-") as tmp:
        meta = RunMeta("r", "bp", "bp.yaml", "0" * 64, {}, {}, T0)
        store = RunStore.create(Path(tmp), meta) if record else None
        sink: Callable[[ev.Event], None] = store if store is not None else (lambda e: None)
        idle: Callable[[], None] = store.idle if store is not None else (lambda: None)
        every = 2 * idle_every if idle_every else len(events) + 1
        cpu0, t0 = time.process_time(), time.perf_counter()
        for k, event in enumerate(events, 1):
            sink(event)
            if k % every == 0:
                idle()
        fed = time.perf_counter() - t0
        if store is not None:
            store.close()
        return fed, time.perf_counter() - t0, time.process_time() - cpu0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--idle-every", type=int, default=0, metavar="K")
    args = parser.parse_args(argv)
    events = stream(args.items)
    print(f"{args.items:,} items, GROUP_MAX {GROUP_MAX}, idle every {args.idle_every or '-'}")
    for label, record in (("null sink", False), ("RunStore", True)):
        runs = [once(events, args.idle_every, record) for _ in range(args.reps)]
        fed, wall, cpu = (
            statistics.median(col) * 1e6 / args.items for col in zip(*runs, strict=True)
        )
        print(f"  {label:<9}  feed {fed:5.2f} µs/item  to close {wall:5.2f}  CPU {cpu:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
