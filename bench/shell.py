"""Shell nodes and `${{ }}` interpolation, measured against baselines in the same run.

    python bench/shell.py                 # both measurements, a minute or so on 2 cores
    python bench/shell.py --items 1000 --reps 5 --w1-items 100000
    python bench/shell.py --shell-only    # 1. only (the W1 figures are null in the JSON)
    python bench/shell.py --w1-only       # 2. only (the shell figures are null)

1. A batch of N shell items (`true ITEM`, a list command: no /bin/sh) at concurrency 8, as a
   whole `flowrun run` process, against `xargs -P 8 -n 1 true` over the same list. The
   process spawns dominate both; the ratio of medians is the cost of flowrun around them.
   Then the same through a shell on both sides: the string command `true ITEM` (run by
   `/bin/sh -c`) against `xargs -P 8 -n 1 sh -c 'true "$1"' sh`. And `bench/shell_peer.py`
   (a ThreadPoolExecutor of 8 running `subprocess.run` per item) against xargs and flowrun:
   what any Python runner that captures each command's output pays per spawn.
2. W1 (a no-op batch of N items at concurrency 8) with `params: {tag: "${{ input }}"}` against
   the same batch with a plain `params: {tag: x}`: the difference per item is what rendering
   a template costs per call.

Variants alternate (A B B A ...); medians, ratios and per-item costs are printed as Markdown.
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
from typing import Any

from measure import base_env

NODES = """
def items(n):
    return [f"item-{i}" for i in range(n)]


def noop(x, tag=None):
    return x
"""


def blueprint(work: Path, name: str, n: int, batch: str) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(
        f"id: {name}\n"
        "nodes:\n"
        "  - id: start\n"
        "    uses: shellbench.items\n"
        f"    params: {{n: {n}}}\n"
        "  - id: each\n"
        f"    batch: {batch}\n"
        "edges:\n"
        "  - {source: start, target: each}\n"
    )
    return path


def flowrun(path: Path, work: Path) -> Callable[[], float]:
    def once() -> float:
        state = tempfile.mkdtemp(dir=work)
        cmd = [sys.executable, "-m", "flowrun", "run", str(path), "--no-progress",
               "--state-dir", state, "-c", "8"]  # fmt: skip
        t0, c0 = time.perf_counter(), _cpu()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=work, env=base_env())
        CPU.setdefault(path.stem, []).append(_cpu() - c0)
        return time.perf_counter() - t0

    return once


#: CPU seconds (user + system, the process and everything it waited for) per variant: on a
#: loaded machine wall times of both sides stretch together, CPU shows what each side costs
CPU: dict[str, list[float]] = {}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def xargs(listing: Path, *command: str) -> Callable[[], float]:
    def once() -> float:
        t0, c0 = time.perf_counter(), _cpu()
        with listing.open() as fh:
            subprocess.run(["xargs", "-P", "8", "-n", "1", *command], stdin=fh, check=True)
        CPU.setdefault(f"xargs-{command[0]}", []).append(_cpu() - c0)
        return time.perf_counter() - t0

    return once


def python_peer(listing: Path, *command: str) -> Callable[[], float]:
    """bench/shell_peer.py: a ThreadPoolExecutor running subprocess.run per item."""

    def once() -> float:
        cmd = [sys.executable, str(Path(__file__).with_name("shell_peer.py")), str(listing)]
        t0, c0 = time.perf_counter(), _cpu()
        subprocess.run([*cmd, *command], check=True, stdout=subprocess.DEVNULL, env=base_env())
        CPU.setdefault(f"peer-{command[0]}", []).append(_cpu() - c0)
        return time.perf_counter() - t0

    return once


def alternate(a: Callable[[], float], b: Callable[[], float], reps: int) -> tuple[list[float], ...]:
    ta: list[float] = []
    tb: list[float] = []
    for i in range(reps):
        first, second = ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta))
        first[1].append(first[0]())
        second[1].append(second[0]())
    return ta, tb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--w1-items", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--shell-only", action="store_true", help="skip the W1 measurement")
    parser.add_argument("--w1-only", action="store_true", help="only the W1 measurement")
    args = parser.parse_args()
    if args.shell_only and args.w1_only:
        parser.error("--shell-only and --w1-only exclude each other")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "shellbench.py").write_text(NODES)
        env_path = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = f"{work}{os.pathsep}{env_path}" if env_path else str(work)
        listing = work / "items.txt"
        listing.write_text("".join(f"item-{i}\n" for i in range(args.items)))

        fl = xa = py = xa2 = fl_sh = xa_sh = plain = tmpl = None
        if not args.w1_only:
            shell_bp = blueprint(work, "shell", args.items,
                                 '{shell: ["true", "${{ input }}"], inputKey: start}')  # fmt: skip
            fl, xa = alternate(flowrun(shell_bp, work), xargs(listing, "true"), args.reps)
            # The same items through the least a Python runner does (a thread pool of
            # subprocess.run), against xargs again: how much of the gap any Python runner pays.
            py, xa2 = alternate(python_peer(listing, "true"), xargs(listing, "true"), args.reps)
            sh_bp = blueprint(work, "sh", args.items,
                              "{shell: 'true ${{ input }}', inputKey: start}")  # fmt: skip
            sh_xargs = xargs(listing, "sh", "-c", 'true "$1"', "sh")
            fl_sh, xa_sh = alternate(flowrun(sh_bp, work), sh_xargs, args.reps)
        if not args.shell_only:
            worker = "{uses: shellbench.noop, inputKey: start, params: {tag: %s}}"
            plain_bp = blueprint(work, "plain", args.w1_items, worker % "x")
            tmpl_bp = blueprint(work, "tmpl", args.w1_items, worker % '"${{ input }}"')
            plain, tmpl = alternate(flowrun(plain_bp, work), flowrun(tmpl_bp, work), args.reps)

    rows: dict[str, Any] = {"shell_items": args.items, "w1_items": args.w1_items}
    if fl and xa and py and xa2 and fl_sh and xa_sh:
        rows.update(shell_rows(fl, xa, py, xa2, fl_sh, xa_sh))
        cpu = {k: round(med(v), 3) for k, v in CPU.items()}
        rows["cpu_s"] = cpu
    else:  # not measured: null, not a number that reads like a measurement
        rows.update(dict.fromkeys(SHELL_KEYS))
    if plain and tmpl:
        per_item_us = (med(tmpl) - med(plain)) / args.w1_items * 1e6
        rows.update({
            "w1_plain_s": round(med(plain), 3),
            "w1_template_s": round(med(tmpl), 3),
            "w1_ratio": round(med(tmpl) / med(plain), 3),
            "interpolation_us_per_item": round(per_item_us, 2),
            "w1_plain_cpu_s": round(med(CPU["plain"]), 3),
            "w1_template_cpu_s": round(med(CPU["tmpl"]), 3),
            "interpolation_cpu_us_per_item": round(
                (med(CPU["tmpl"]) - med(CPU["plain"])) / args.w1_items * 1e6, 2),
        })  # fmt: skip
    else:
        rows.update(dict.fromkeys(W1_KEYS))
    print("| measurement | flowrun | baseline | ratio |")
    print("|---|---:|---:|---:|")
    if rows["ratio"] is not None:
        cpu = rows["cpu_s"]
        print(f"| {args.items} shell items (`true ITEM`), c=8, vs `xargs -P 8 -n 1 true` | "
              f"{rows['flowrun_s']} s | {rows['xargs_s']} s | {rows['ratio']}x |")  # fmt: skip
        print(f"| {args.items} items through bench/shell_peer.py (ThreadPoolExecutor(8) + "
              f"subprocess.run), vs `xargs -P 8 -n 1 true` | {rows['python_peer_s']} s | "
              f"{rows['python_peer_xargs_s']} s | {rows['python_peer_ratio']}x |")  # fmt: skip
        print(f"| flowrun's shell batch vs bench/shell_peer.py | {rows['flowrun_s']} s | "
              f"{rows['python_peer_s']} s | {rows['flowrun_vs_python_peer']}x |")  # fmt: skip
        print(f"| {args.items} shell items (`sh -c 'true ITEM'`), c=8, vs `xargs -P 8 -n 1 sh "
              f"-c` | {rows['sh_flowrun_s']} s | {rows['sh_xargs_s']} s | "
              f"{rows['sh_ratio']}x |")  # fmt: skip
        print(f"| CPU s (medians), list: flowrun {cpu['shell']} vs xargs {cpu['xargs-true']} "
              f"({cpu['shell'] / cpu['xargs-true']:.2f}x); sh -c: flowrun {cpu['sh']} vs xargs "
              f"{cpu['xargs-sh']} ({cpu['sh'] / cpu['xargs-sh']:.2f}x) | | | |")  # fmt: skip
    if rows["w1_ratio"] is not None:
        what = f"W1 {args.w1_items} items with `${{{{ input }}}}` in params vs plain params"
        print(f"| {what} | {rows['w1_template_s']} s | {rows['w1_plain_s']} s | "
              f"{rows['w1_ratio']}x |")  # fmt: skip
        print(
            f"\ninterpolation: {rows['interpolation_us_per_item']:.2f} us per item wall, "
            f"{rows['interpolation_cpu_us_per_item']:.2f} us CPU ({args.reps} reps, medians)"
        )
    print(json.dumps(rows))


SHELL_KEYS = ("flowrun_s", "xargs_s", "ratio", "python_peer_s", "python_peer_xargs_s",
              "python_peer_ratio", "flowrun_vs_python_peer", "sh_flowrun_s", "sh_xargs_s",
              "sh_ratio", "cpu_s")  # fmt: skip
W1_KEYS = ("w1_plain_s", "w1_template_s", "w1_ratio", "interpolation_us_per_item",
           "w1_plain_cpu_s", "w1_template_cpu_s", "interpolation_cpu_us_per_item")  # fmt: skip


def med(values: list[float]) -> float:
    return statistics.median(values)


def shell_rows(fl: list[float], xa: list[float], py: list[float], xa2: list[float],
               fl_sh: list[float], xa_sh: list[float]) -> dict[str, Any]:  # fmt: skip
    return {
        "flowrun_s": round(med(fl), 3),
        "xargs_s": round(med(xa), 3),
        "ratio": round(med(fl) / med(xa), 2),
        "python_peer_s": round(med(py), 3),
        "python_peer_xargs_s": round(med(xa2), 3),
        "python_peer_ratio": round(med(py) / med(xa2), 2),
        "flowrun_vs_python_peer": round(med(fl) / med(py), 2),
        "sh_flowrun_s": round(med(fl_sh), 3),
        "sh_xargs_s": round(med(xa_sh), 3),
        "sh_ratio": round(med(fl_sh) / med(xa_sh), 2),
    }


if __name__ == "__main__":
    main()
