"""Streamed batches and pools, measured as a user runs them (state store on, display off).

    python bench/streamed.py --items 1000000 3000000     # memory and µs/item, both shapes
    python bench/streamed.py --items 1000000 --reps 3    # alternating runs, medians
    python bench/streamed.py --rate-only                 # 200 items through a 50/s pool

Memory: each run is its own `flowrun run` process under `/usr/bin/time -v` (peak RSS);
`stream` reads N items from a .jsonl file through a no-op worker to `outputTo`, `memory` is
today's in-memory batch over the same items (a node returns the N `{"i": i}` mappings, results
gathered in the context): a mapping costs an item more than an int (JSON round trips), so
both shapes carry the same items.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NODES = """
import time

def start(n):
    return [{"i": i} for i in range(n)]  # the same items as the streamed shape's file

def noop(x):
    return x

def stamp(x, log):
    with open(log, "a") as f:
        f.write(f"{time.monotonic()}\\n")
    return x
"""

STREAM = """id: stream
nodes:
  - id: B
    batch: {uses: bn.noop, itemsFrom: items.jsonl, outputTo: out.jsonl}
"""

MEMORY = """id: memory
context: {n: N}
nodes:
  - id: start
    uses: bn.start
    inputs: n
  - id: B
    batch: {uses: bn.noop, inputKey: start}
edges:
  - {source: start, target: B}
"""

RATE = """id: rate
pools:
  api: {rate: 50/s}
nodes:
  - id: B
    batch: {uses: bn.stamp, itemsFrom: items.jsonl, pool: api, params: {log: LOG}}
"""


def flowrun_cmd() -> list[str]:
    return [str(Path(sys.executable).with_name("flowrun"))]


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds (user + sys), peak RSS in MB) of one process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t0 = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], cwd=cwd, capture_output=True, text=True, check=True, env=env
    )
    took = time.perf_counter() - t0

    def field(name: str) -> float:
        found = re.search(re.escape(name) + r": ([\d.]+)", done.stderr)
        assert found is not None, name
        return float(found[1])

    cpu = field("User time (seconds)") + field("System time (seconds)")
    return took, cpu, field("Maximum resident set size (kbytes)") / 1024


def write_items(path: Path, n: int) -> None:
    with open(path, "w") as f:
        step = 100_000
        for lo in range(0, n, step):
            f.write("".join(f'{{"i": {i}}}\n' for i in range(lo, min(n, lo + step))))


def memory_and_speed(
    sizes: list[int], shapes: tuple[str, ...] = ("memory", "stream"), reps: int = 1
) -> None:
    """Each size's shapes alternate `reps` times (memory, stream, memory, ...); medians."""
    print("| shape | items | wall s | µs/item | CPU µs/item | peak RSS MB | reps |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "bn.py").write_text(NODES)
            write_items(d / "items.jsonl", n)
            (d / "stream.yaml").write_text(STREAM)
            (d / "memory.yaml").write_text(MEMORY.replace("N", str(n)))
            samples: dict[str, list[tuple[float, float, float]]] = {s: [] for s in shapes}
            for _ in range(reps):
                for shape in shapes:
                    cmd = [*flowrun_cmd(), "run", f"{shape}.yaml", "--no-progress"]
                    samples[shape].append(timed(cmd, d))
                    if shape == "stream":
                        with open(d / "out.jsonl", "rb") as f:
                            assert sum(1 for _ in f) == n
            for shape in shapes:
                runs = samples[shape]
                took, cpu, rss = (statistics.median(col) for col in zip(*runs, strict=True))
                print(
                    f"| {shape} | {n:,} | {took:.1f} | {took / n * 1e6:.2f} | "
                    f"{cpu / n * 1e6:.2f} | {rss:.0f} | {reps} |"
                )


def rate_accuracy(items: int = 200) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "bn.py").write_text(NODES)
        (d / "items.jsonl").write_text("".join(f"{i}\n" for i in range(items)))
        log = d / "starts.log"
        (d / "rate.yaml").write_text(RATE.replace("LOG", str(log)))
        cmd = [*flowrun_cmd(), "run", "rate.yaml", "--no-progress", "--events", "ev.jsonl"]
        subprocess.run(cmd, cwd=d, check=True, capture_output=True)
        events = [json.loads(line) for line in (d / "ev.jsonl").read_text().splitlines()]
        submitted = sorted(e["ts"] for e in events if e["event"] == "node_started")
        observed = sorted(float(x) for x in log.read_text().split())
        for what, starts in (("submitted (node_started)", submitted), ("in the worker", observed)):
            rate = (len(starts) - 1) / (starts[-1] - starts[0])
            # With a one-token bucket, start k may not come before start 0 + k/50 s.
            ahead = max(starts[0] + k / 50 - t for k, t in enumerate(starts))
            print(
                f"rate, {what}: {len(starts)} starts at {rate:.3f}/s "
                f"({(rate / 50 - 1) * 100:+.2f}% of 50/s); most ahead of start 0 + k/50: "
                f"{ahead * 1000:.3f} ms (<= 0: never ahead)"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--rate-only", action="store_true")
    parser.add_argument("--stream-only", action="store_true", help="skip the in-memory batch")
    parser.add_argument("--reps", type=int, default=1, help="alternating runs per shape; medians")
    args = parser.parse_args()
    rate_accuracy()
    if not args.rate_only:
        shapes = ("stream",) if args.stream_only else ("memory", "stream")
        memory_and_speed(args.items, shapes, args.reps)


if __name__ == "__main__":
    main()
