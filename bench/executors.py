"""Measure the process and Dask executors against what they stand on.

(a) Dask overhead: a 1,000-item batch of a no-op (`builtins.abs`) on `--executor dask`, against
    the same 1,000 calls through raw `client.map` + `client.gather`, on the same LocalCluster
    (worker processes). flowrun's time includes reading the blueprint, connecting its own
    client, events and the durable store; so the raw side is shown with a client kept open,
    with a client connected and closed per run (as flowrun does), and with the items sent in
    chunks as flowrun sends them (its driver groups fast items into chunks).
(b) CPU-bound work: 16 items of ~0.2 s of pure Python at `--concurrency 2`, `process` against
    `thread`, each as a whole `flowrun run` command: wall time, CPU time of the command and
    its children over wall time (above 1 means more than one core was used), and speed-up.

Run: `.venv/bin/python bench/executors.py [--repeat N]`. Public tools only:
`time.perf_counter` and `resource.getrusage`. Variants alternate, results are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import distributed

import flowrun.api

ITEMS = 1000
CHUNK = 50
CPU_ITEMS = 16
CPU_ITEM_S = 0.2

SPIN_MODULE = '''
def spin(item, n):
    """Pure-Python work that holds the GIL."""
    total = 0
    for i in range(n):
        total += i * i
    return item
'''


def abs_all(xs: range) -> list[int]:
    return [abs(x) for x in xs]


def noop_blueprint(work: Path) -> Path:
    path = work / "noop.yaml"
    path.write_text(
        "id: noop-batch\n"
        f"context:\n  xs: {json.dumps(list(range(ITEMS)))}\n"
        "nodes:\n  - id: items\n    batch: {uses: builtins.abs, inputKey: xs}\n"
    )
    return path


def cpu_blueprint(work: Path) -> Path:
    (work / "benchspin.py").write_text(SPIN_MODULE)
    sys.path.insert(0, str(work))
    from benchspin import spin  # type: ignore[import-not-found]

    n, best = 200_000, float("inf")
    for _ in range(3):  # the fastest of three: a busy moment must not shrink the items
        t0 = time.perf_counter()
        spin(0, n)
        best = min(best, time.perf_counter() - t0)
    n = int(n * CPU_ITEM_S / best)
    path = work / "cpu.yaml"
    path.write_text(
        "id: cpu-batch\n"
        f"context:\n  xs: {json.dumps(list(range(CPU_ITEMS)))}\n"
        "nodes:\n  - id: items\n    batch:\n      uses: benchspin.spin\n"
        f"      inputKey: xs\n      params: {{n: {n}}}\n"
    )
    return path


def median_times(variants: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median wall seconds of each variant; variants alternate so drift hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def dask_overhead(work: Path, repeat: int) -> None:
    blueprint = noop_blueprint(work)
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=4, processes=True, dashboard_address=":0"
    )
    address = cluster.scheduler_address
    kept = distributed.Client(address, set_as_default=False)

    def raw_kept() -> None:
        assert kept.gather(kept.map(abs, range(ITEMS), pure=False)) == list(range(ITEMS))

    def raw_connect() -> None:
        with distributed.Client(address, set_as_default=False) as client:
            assert client.gather(client.map(abs, range(ITEMS), pure=False)) == list(range(ITEMS))

    def raw_chunked() -> None:
        # flowrun sends items in chunks (about 20 tasks here, not 1,000); so does this variant
        chunks = [range(i, min(i + CHUNK, ITEMS)) for i in range(0, ITEMS, CHUNK)]
        parts = kept.gather(kept.map(abs_all, chunks, pure=False))
        assert [x for part in parts for x in part] == list(range(ITEMS))

    def via_flowrun() -> None:
        with tempfile.TemporaryDirectory() as state:
            report = flowrun.api.run(
                blueprint, executor="dask", address=address, concurrency=8, state_dir=state
            )
        assert report.status == "completed" and report.context["items"] == list(range(ITEMS))

    try:
        via_flowrun()  # warm up: imports on the workers, first connections
        t = median_times(
            {"raw, client kept": raw_kept, "raw, client per run": raw_connect,
             f"raw, chunks of {CHUNK}": raw_chunked, "flowrun --executor dask": via_flowrun},
            repeat,
        )  # fmt: skip
    finally:
        kept.close()
        cluster.close()
    print(f"\n(a) {ITEMS}-item no-op batch, LocalCluster of 2 processes x 4 threads, "
          f"--concurrency 8, median of {repeat}")  # fmt: skip
    print(f"{'variant':<26}{'wall s':>9}{'flowrun / this':>16}")
    for name, secs in t.items():
        print(f"{name:<26}{secs:>9.3f}{t['flowrun --executor dask'] / secs:>15.2f}x")


def cpu_time() -> float:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def flowrun_command(blueprint: Path, executor: str, work: Path) -> tuple[float, float, float]:
    """Wall, CPU and in-run seconds of one `flowrun run` command. CPU includes the worker
    processes: they are waited for before the command exits, so the kernel adds them to its
    children's usage. In-run time is the `run_finished` event's duration (starting the
    interpreter and importing flowrun excluded; starting the worker processes included)."""
    events = work / "events.jsonl"
    events.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "flowrun", "run", str(blueprint), "--executor", executor,
           "-c", "2", "--no-progress", "--quiet", "--state-dir", str(work / "state"),
           "--events", str(events)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(blueprint.parent)}
    c0, t0 = cpu_time(), time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - t0, cpu_time() - c0
    last = json.loads(events.read_text().splitlines()[-1])
    return wall, cpu, last["duration_ms"] / 1000


def cpu_bound(work: Path, repeat: int) -> None:
    blueprint = cpu_blueprint(work)
    samples: dict[str, list[tuple[float, float, float]]] = {"thread": [], "process": []}
    for _ in range(repeat):
        for executor, runs in samples.items():
            runs.append(flowrun_command(blueprint, executor, work))
    med = {
        executor: [statistics.median(s[i] for s in runs) for i in range(3)]
        for executor, runs in samples.items()
    }
    print(f"\n(b) {CPU_ITEMS} items x ~{CPU_ITEM_S} s of pure Python, --concurrency 2, "
          f"one `flowrun run` command each, median of {repeat}")  # fmt: skip
    print(f"{'executor':<10}{'wall s':>8}{'cpu s':>8}{'cpu/wall':>10}{'speed-up':>10}"
          f"{'in-run s':>10}{'speed-up':>10}")  # fmt: skip
    t_wall, _, t_run = med["thread"]
    for executor, (wall, cpu, in_run) in med.items():
        print(f"{executor:<10}{wall:>8.2f}{cpu:>8.2f}{cpu / wall:>10.2f}{t_wall / wall:>9.2f}x"
              f"{in_run:>10.2f}{t_run / in_run:>9.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, distributed {distributed.__version__}, "
          f"{os.cpu_count()} cpus")  # fmt: skip
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory() as tmp:
        dask_overhead(Path(tmp), args.repeat)
        cpu_bound(Path(tmp), args.repeat)
    # Other work on the machine skews every number here; this shows whether there was any.
    print("\nload average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
