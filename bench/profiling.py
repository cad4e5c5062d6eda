"""Profile one benchmark workload with pyinstrument (a dev dependency), whole process.

    python bench/profiling.py                      # W1, 100,000 items: `flowrun run`
    python bench/profiling.py --what fan --n 10000 # `flowrun validate` of the wide fan
    python bench/profiling.py --what w1 --n 100000 --events   # with an --events file

Writes the text report to bench/out/profile-<what>-<n>.txt and prints it. pyinstrument samples
the main thread (the driver loop); time spent in pool threads shows up there as waiting.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import workloads

BENCH = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", choices=("w1", "w3", "chain", "fan"), default="w1")
    parser.add_argument("--n", type=int, default=100_000, help="items (w1, w3) or nodes")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--events", action="store_true", help="run with --events FILE")
    parser.add_argument("--show-all", action="store_true", help="pyinstrument --show-all")
    args = parser.parse_args(argv)

    out = BENCH / "out" / f"profile-{args.what}-{args.n}{'-events' * args.events}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flowrun-profile-") as tmp:
        work = Path(tmp)
        spin, _ = workloads.calibrate_spin()
        workloads.write_nodes(work, spin)
        writers = {
            "w1": workloads.write_w1,
            "w3": workloads.write_w3,
            "chain": workloads.write_chain,
            "fan": workloads.write_fan,
        }
        blueprint = writers[args.what](work, args.n)
        if args.what in ("w1", "w3"):
            flowrun = ["run", str(blueprint), "--no-progress", "--state-dir", str(work / "state")]
            flowrun += ["-c", str(args.concurrency)]
            if args.events:
                flowrun += ["--events", str(work / "events.jsonl")]
        else:
            flowrun = ["validate", str(blueprint)]
        cmd = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(out)]
        cmd += ["--show-all"] if args.show_all else []
        cmd += ["-m", "flowrun", *flowrun]
        subprocess.run(cmd, cwd=work, check=True, stdout=subprocess.DEVNULL)
    print(out.read_text(encoding="utf-8"))
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
