"""`flowrun runs clean`: delete old runs' state, never a run another process holds."""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from flowrun.errors import StateError, UsageError
from flowrun.store import RunSummary, list_runs
from flowrun.store.db import lock_run, run_ids, runs_dir

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d|w)")


def parse_age(text: str) -> float:
    """`30d`, `12h`, `90m`, `1w` (or combined, `1d12h`) in seconds."""
    spec = text.strip().lower()
    parts = _DURATION.findall(spec)
    if not parts or "".join(n + u for n, u in parts) != spec:
        raise UsageError(f"--older-than {text!r}: expected a duration such as 30d, 12h, 90m or 1w")
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass(frozen=True, slots=True)
class Decision:
    run: RunSummary
    delete: bool
    reason: str  # why it is kept or deleted


def plan(
    state_dir: Path, keep: int | None, older_than_s: float | None, now: float | None = None
) -> list[Decision]:
    """What `clean` does to each run, newest first: a run is deleted when it is outside the
    newest `keep` and older than `older_than_s` (each condition only when given), and never
    while it runs."""
    if keep is None and older_than_s is None:
        raise UsageError("runs clean: say what to delete with --keep N and/or --older-than AGE")
    now = time.time() if now is None else now
    runs = list_runs(state_dir, limit=max(1, len(run_ids(state_dir))))
    out = []
    for rank, run in enumerate(runs):
        started = run.started if run.started is not None else _mtime(state_dir, run.run_id)
        if run.status == "running":
            out.append(Decision(run, False, "in use by another flowrun process"))
        elif keep is not None and rank < keep:
            out.append(Decision(run, False, f"one of the newest {keep}"))
        elif older_than_s is not None and now - started < older_than_s:
            out.append(Decision(run, False, "newer than --older-than"))
        else:
            out.append(Decision(run, True, run.status))
    return out


def _mtime(state_dir: Path, run_id: str) -> float:
    try:
        return os.stat(runs_dir(state_dir) / run_id).st_mtime
    except OSError:
        return 0.0


def delete(state_dir: Path, run_id: str) -> bool:
    """Delete one run's directory while holding its lock; False when another process holds it."""
    run_dir = runs_dir(state_dir) / run_id
    try:
        fd = lock_run(run_dir, run_id)
    except StateError:
        return False
    try:
        shutil.rmtree(run_dir)
    except OSError as exc:
        raise StateError(f"cannot delete {run_dir}: {exc}") from exc
    finally:
        os.close(fd)
    return True
