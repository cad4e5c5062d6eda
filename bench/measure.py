"""Run commands as whole processes and time them: wall time with `time.perf_counter`, peak RSS
from `/usr/bin/time -v` (or `resource.getrusage(RUSAGE_CHILDREN)` where it is missing).

Variants of one workload run alternately (ABBA order: A B B A A B ...) so slow drift of a noisy
machine falls on every variant alike; results are medians, and ratios are taken between
variants measured in the same alternation.
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

GNU_TIME = "/usr/bin/time"
_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")


@dataclass(frozen=True, slots=True)
class Sample:
    """One run of one command."""

    wall_s: float
    rss_kb: int | None  # peak resident set size of the measured process
    stdout: str
    extra: Mapping[str, float] = field(default_factory=dict)  # what `inspect` found


#: an argument containing this is rewritten to use a new, empty directory for every run
SCRATCH = "{scratch}"


@dataclass(frozen=True, slots=True)
class Command:
    """A command to time. Every `SCRATCH` in `argv` becomes a fresh directory, removed after
    the run (untimed), so no run reads or grows another run's state. `inspect(scratch, stdout)`
    runs before that removal: it raises `BenchError` if the output is wrong and returns
    numbers worth keeping (a makespan read from an events file, say)."""

    argv: Sequence[str]
    cwd: Path
    inspect: Callable[[Path, str], Mapping[str, float]] | None = None
    env: Mapping[str, str] | None = None


@dataclass(slots=True)
class Series:
    """Every sample of one variant, in run order."""

    samples: list[Sample] = field(default_factory=list)

    @property
    def walls(self) -> list[float]:
        return [s.wall_s for s in self.samples]

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    def median_of(self, key: str) -> float:
        """The median of one number every `inspect` returned."""
        return statistics.median(s.extra[key] for s in self.samples)

    @property
    def rss_kb(self) -> int | None:
        known = [s.rss_kb for s in self.samples if s.rss_kb is not None]
        return max(known) if known else None


class BenchError(RuntimeError):
    """A measured command failed or printed something unexpected."""


#: unset for every measured process: they change flowrun's display mode or colours, or make
#: Python behave unlike a user's install (no bytecode cache means recompiling every module of
#: flowrun on every start, which `PYTHONDONTWRITEBYTECODE=1` in a CI image does)
UNSET = (
    "CI",
    "FORCE_COLOR",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PYTHONPROFILEIMPORTTIME",
    "PYTHONTRACEMALLOC",
    "PYTHONDEVMODE",
)


def base_env() -> dict[str, str]:
    """The caller's environment minus `UNSET`."""
    env = dict(os.environ)
    for key in UNSET:
        env.pop(key, None)
    return env


def run_once(cmd: Command) -> Sample:
    """Run `cmd` once (stdout and stderr captured: no TTY) and measure it."""
    with tempfile.TemporaryDirectory(prefix="flowrun-bench-") as scratch:
        argv = [a.replace(SCRATCH, scratch) for a in cmd.argv]
        report = os.path.join(scratch, "time-v.txt")
        if os.path.exists(GNU_TIME):
            argv = [GNU_TIME, "-v", "-o", report, *argv]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run(
            argv,
            cwd=cmd.cwd,
            env=dict(cmd.env) if cmd.env is not None else base_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            raise BenchError(
                f"{' '.join(argv)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
            )
        if os.path.exists(report):
            rss = _rss_from_report(report)
        else:  # the children's high-water mark: only known when this child raised it
            rss = after if after > before else None
        extra = cmd.inspect(Path(scratch), proc.stdout) if cmd.inspect else {}
    return Sample(wall, rss, proc.stdout, extra)


def _rss_from_report(path: str) -> int | None:
    with open(path, encoding="utf-8", errors="replace") as f:
        found = _MAX_RSS.search(f.read())
    return int(found.group(1)) if found else None


def alternate(
    commands: Mapping[str, Command], reps: int, *, warmup: bool = True
) -> dict[str, Series]:
    """Run every command `reps` times, alternating in ABBA order; an untimed warm-up run of
    each first (it writes `.pyc` files and fills the page cache)."""
    names = list(commands)
    if warmup:
        for name in names:
            run_once(commands[name])
    out = {name: Series() for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            out[name].samples.append(run_once(commands[name]))
    return out


def paired_ratios(a: Series, b: Series) -> list[float]:
    """a/b for each repetition (the two runs of one repetition are neighbours in time)."""
    return [x.wall_s / y.wall_s for x, y in zip(a.samples, b.samples, strict=True)]


def expect_line(line: str) -> Callable[[Path, str], Mapping[str, float]]:
    """An `inspect` that only checks that stdout has this exact line."""

    def inspect(scratch: Path, stdout: str) -> Mapping[str, float]:
        require_line(stdout, line)
        return {}

    return inspect


def require_line(stdout: str, line: str) -> None:
    if line not in stdout.splitlines():
        raise BenchError(f"expected the line {line!r} on stdout, got {stdout[:500]!r}")


def number_after(stdout: str, prefix: str) -> float:
    """The number on the stdout line that starts with `prefix` (`map_s: 1.23`)."""
    for text in stdout.splitlines():
        if text.startswith(prefix):
            return float(text[len(prefix) :])
    raise BenchError(f"no line starting {prefix!r} on stdout: {stdout[:500]!r}")
