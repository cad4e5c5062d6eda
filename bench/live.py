"""The live display's cost: the same batch on a real pseudo-terminal, with the display and
with `--no-progress`, alternating pairs (workload "live" of `make bench`)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ptyrun import run_in_pty  # noqa: E402  (one pty runner for tests and bench)

LIVE_ENV_DROP = ("CI", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def pty_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LIVE_ENV_DROP}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(TERM="xterm-256color", COLUMNS="80", LINES="24")
    return env


def timed_run(blueprint: Path, state: Path, *extra: str) -> float:
    """Wall seconds of one `flowrun run` on a pty; raises if it did not complete."""
    argv = [sys.executable, "-m", "flowrun", "run", str(blueprint), "--state-dir", str(state)]
    t0 = time.perf_counter()
    code, out = run_in_pty([*argv, "-c", "8", *extra], env=pty_env(), cwd=blueprint.parent)
    wall = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"flowrun exited {code}: {out[-500:]!r}")
    if not extra and b"\x1b[?25l" not in out:
        raise RuntimeError("the live display did not appear on the pty")
    return wall


def live_vs_plain(blueprint: Path, scratch: Path, reps: int) -> tuple[list[float], list[float]]:
    """(live walls, --no-progress walls), run as alternating pairs after one warm-up each."""
    live: list[float] = []
    off: list[float] = []
    timed_run(blueprint, scratch / "warm")
    timed_run(blueprint, scratch / "warm", "--no-progress")
    for i in range(reps):
        live.append(timed_run(blueprint, scratch / f"l{i}"))
        off.append(timed_run(blueprint, scratch / f"o{i}", "--no-progress"))
    return live, off


IMPORT_PROBE = """
import time
import flowrun.cli, flowrun.display.plain, flowrun.display.streams, flowrun.engine.driver
t = time.perf_counter()
import flowrun.display.live
print((time.perf_counter() - t) * 1000)
"""


def import_ms(reps: int) -> float:
    """Median ms a live run spends importing the live display (rich) on top of what a
    `--no-progress` run imports: the part of the display's cost that does not depend on the
    run's length."""
    env = {**pty_env(), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", IMPORT_PROBE]
    walls = []
    for _ in range(max(reps, 3)):
        probe = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
        walls.append(float(probe.stdout))
    return statistics.median(walls)


def ratio(live: list[float], off: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(live, off, strict=True))
