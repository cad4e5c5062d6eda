"""The live display under a real pseudo-terminal: rich's own TTY detection, not a forced one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .ptyrun import run_in_pty

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pty")

SCRIPT = """
import os, sys, time
from rich.console import Console
from flowrun.events import (
    BatchFinished, BatchStarted, NodeStarted, NodeSucceeded, RunFinished, RunStarted,
)
from flowrun.display.live import choose_mode, make_reporter

console = Console(stderr=True)
mode = choose_mode(console, quiet=False, no_progress=False, env=os.environ)
print(f"MODE={mode}", flush=True)
if mode != "live":
    sys.exit(3)
ids = ("start", "double-items")
reporter = make_reporter(mode, console, refresh_per_second=20)
with reporter:
    reporter(RunStarted(ts=time.time(), run_id="r1", blueprint="pty-demo", nodes=2, node_ids=ids))
    reporter(NodeStarted(ts=time.time(), node="start"))
    reporter(NodeSucceeded(ts=time.time(), node="start", duration_ms=0.4))
    reporter(BatchStarted(ts=time.time(), node="double-items", total=25))
    for i in range(25):  # ~0.5 s, so rich's refresh thread draws several frames
        node = f"double-items[{i}]"
        reporter(NodeStarted(ts=time.time(), node=node, batch="double-items", index=i))
        time.sleep(0.02)
        reporter(NodeSucceeded(ts=time.time(), node=node, batch="double-items", index=i))
    reporter(BatchFinished(ts=time.time(), node="double-items", total=25, succeeded=25))
    reporter(RunFinished(ts=time.time(), status="completed", duration_ms=500))
reporter.summary()
"""


def _child_env() -> dict[str, str]:
    """The environment of a user at an ordinary terminal, whatever CI this runs under."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"CI", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"}
        and k not in {"COLUMNS", "LINES"}
    }
    env["TERM"] = "xterm-256color"
    return env


def _run_in_pty(script: Path) -> tuple[int, bytes]:
    """Run `script` with stdin/stdout/stderr on a new 24x80 pty; return (exit code, output)."""
    return run_in_pty([sys.executable, str(script)], env=_child_env())


def test_live_display_in_a_real_terminal(tmp_path: Path) -> None:
    script = tmp_path / "drive_live.py"
    script.write_text(SCRIPT)
    code, out = _run_in_pty(script)
    text = out.decode("utf-8", errors="replace")
    assert code == 0, text
    assert "MODE=live" in text
    hide, show = "\x1b[?25l", "\x1b[?25h"
    assert hide in text
    assert show in text
    assert text.rindex(show) > text.rindex(hide)  # the cursor comes back after the display
    assert "━" in text  # bar characters were drawn
    assert "2/2 nodes" in text
    assert "25/25 items" in text
    assert "\x1b[2K" in text  # frames were redrawn in place (erase line)
    assert "run pty-demo completed in 0.50 s — 2 succeeded, 0 failed, 0 skipped" in text
