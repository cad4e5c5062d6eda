"""`flowrun run` itself under a real pseudo-terminal: the live display appears, and the
terminal is left clean (cursor shown) whether the run completes or is interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .ptyrun import run_in_pty

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pty")

REPO = Path(__file__).resolve().parent.parent
DURABLE = Path(__file__).resolve().parent / "durable"
HIDE, SHOW = "\x1b[?25l", "\x1b[?25h"
N_ITEMS = 40  # durable/pty.yaml


def _child_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a user at an ordinary 80-column terminal, whatever CI this runs in."""
    drop = {"CI", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "LINES"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["TERM"] = "xterm-256color"
    env["COLUMNS"] = "80"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    env["FLOWRUN_TEST_CALLS"] = str(tmp_path / "calls.log")
    env.update(extra)
    return env


def _item_successes(events: Path) -> int:
    if not events.exists():
        return 0
    n = 0
    for line in events.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:  # a line still being written
            break
        n += event["event"] == "node_succeeded" and bool(event.get("batch"))
    return n


def _run_in_pty(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    poke: Callable[[subprocess.Popen[bytes], bytes], None] | None = None,
) -> tuple[int, str]:
    """`python -m flowrun run pty.yaml ARGS` on a new 24x80 pty; (exit code, output).

    The output is drained all along (a full pty would block the child); `poke(proc, output)`
    is called between reads, so a test can act once the run got far enough."""
    shutil.copy(DURABLE / "pty.yaml", tmp_path / "pty.yaml")
    shutil.copy(DURABLE / "durable_nodes.py", tmp_path / "durable_nodes.py")
    argv = [sys.executable, "-m", "flowrun", "run", "pty.yaml"]
    argv += ["--state-dir", str(tmp_path / "state"), *args]
    code, out = run_in_pty(argv, env=_child_env(tmp_path, env or {}), cwd=tmp_path, poke=poke)
    return code, out.decode("utf-8", errors="replace")


def test_live_display_of_a_real_run(tmp_path: Path) -> None:
    code, text = _run_in_pty(tmp_path, "-c", "4")
    assert code == 0, text
    assert HIDE in text, text
    assert SHOW in text[text.index(HIDE) :], text  # the cursor comes back after the display
    assert text.rindex(SHOW) > text.rindex(HIDE)
    assert "━" in text  # bars were drawn
    assert f"{N_ITEMS}/{N_ITEMS} items" in text
    assert "3/3 nodes" in text
    assert "run durable-pty completed in" in text
    summary = text[text.rindex(SHOW) :]
    assert "total: 7800" in summary  # the final node's output, after the display


def test_sigint_in_a_real_terminal_exits_130_with_the_cursor_shown(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    release = tmp_path / "release"
    gate = {"FLOWRUN_TEST_GATE_FROM": "20", "FLOWRUN_TEST_RELEASE": str(release)}
    sent: list[bool] = []

    def interrupt_at_the_gate(proc: subprocess.Popen[bytes], output: bytes) -> None:
        # items from 20 on wait for `release`: the run is still going when the signal comes
        if not sent and _item_successes(events) >= 20:
            proc.send_signal(signal.SIGINT)
            sent.append(True)
        elif sent and b"interrupted" in output:
            release.touch()

    code, text = _run_in_pty(
        tmp_path, "-c", "4", "--events", str(events), env=gate, poke=interrupt_at_the_gate
    )
    assert sent, text
    assert code == 130, text
    assert HIDE in text, text
    assert text.rindex(SHOW) > text.rindex(HIDE), text  # the terminal is left clean
    assert "interrupted" in text
    assert "run durable-pty cancelled in" in text
    assert "24/40 items" in text  # the 4 items running at the signal finished; no more started
    assert "Traceback" not in text


FD_LEVEL = """\
id: fd-level
nodes:
  - {id: chatty, uses: tests.printing_nodes.chatty}
  - {id: fd, uses: tests.printing_nodes.fd_writer}
  - {id: bad, uses: tests.printing_nodes.loud_failure, inputs: chatty}
edges:
  - {source: chatty, target: bad}
"""


def test_fd_level_output_goes_above_the_live_display_and_failures_say_how_to_resume(
    tmp_path: Path,
) -> None:
    # before: fd-level writes landed under the display; nothing said how to resume
    (tmp_path / "fd.yaml").write_text(FD_LEVEL)
    argv = [sys.executable, "-m", "flowrun", "run", "fd.yaml", "--state-dir", "state"]
    code, out = run_in_pty(argv, env=_child_env(tmp_path, {}), cwd=tmp_path)
    text = out.decode("utf-8", errors="replace")
    assert code == 1, text
    assert HIDE in text and text.rindex(SHOW) > text.rindex(HIDE), text
    assert text.count("fd-level stderr line") == 1, text
    assert text.count("fd-level stdout line") == 1, text
    assert "hello from chatty" not in text  # captured, kept in the store
    summary = text[text.rindex(SHOW) :]
    assert "--- output of bad ---" in summary
    assert "about to fail with 1" in summary
    run_id = next((tmp_path / "state" / "runs").iterdir()).name
    assert f"resume with: flowrun run fd.yaml --resume {run_id} --state-dir state" in summary
    assert "Traceback" in summary and "flowrun/" not in summary.split("Traceback")[1][:200]
