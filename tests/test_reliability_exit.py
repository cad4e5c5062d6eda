"""How the process ends: a thread a node leaves behind never keeps it alive, and a signal that
arrives while the result is printed never cuts the document short.

These run `flowrun` in a subprocess (the exit is what is tested), from the repository root so
that `tests.exit_nodes` imports. The node's thread sleeps 600 s; the subprocess timeout (far
shorter) is what fails a test whose process does not end.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import ROOT, write

ENDS_WITHIN_S = 60  # the thread left behind sleeps 600 s
SCRIPT = Path(sys.executable).with_name("flowrun")  # the console script of this environment


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    out.update(NO_COLOR="1", PYTHONPATH=str(ROOT))
    return out


def flowrun(launcher: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "flowrun"] if launcher == "python -m" else [str(SCRIPT)]
    return subprocess.run(
        [*cmd, *map(str, args)],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=ENDS_WITHIN_S,
    )  # fmt: skip


LEAVES = """\
id: leaves
nodes:
  - {id: a, uses: tests.exit_nodes.leave_thread, params: {fail: %s}}
"""


@pytest.mark.parametrize(
    ("launcher", "executor"),
    [("python -m", "thread"), ("python -m", "process"), ("script", "process")],
)
def test_a_thread_a_node_leaves_running_does_not_keep_the_process_alive(
    launcher: str, executor: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "leaves.yaml", LEAVES % "false")
    done = flowrun(launcher, "run", path, "--json", "--no-progress", "--executor", executor,
                   "--state-dir", tmp_path / "state")  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "completed"
    assert doc["nodes"]["a"]["status"] == "succeeded"


def test_a_failing_node_that_leaves_a_thread_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, "leaves.yaml", LEAVES % "true")
    done = flowrun("python -m", "run", path, "--json", "--no-progress", "--executor", "process",
                   "--state-dir", tmp_path / "state")  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["nodes"]["a"]["status"] == "failed"
    assert "failing after starting a thread" in done.stderr


def test_an_invalid_blueprint_whose_module_left_a_thread_exits_2(tmp_path: Path) -> None:
    # The module starts its thread on import; the problem is found after the import.
    bad = "id: bad\nnodes:\n  - {id: a, uses: tests.thread_at_import.work, params: {nope: 1}}\n"
    path = write(tmp_path, "bad.yaml", bad)
    done = flowrun("python -m", "run", path, "--no-progress", "--state-dir", tmp_path / "state")
    assert done.returncode == 2, done.stderr
    assert "has no parameter 'nope'" in done.stderr
    assert "Traceback" not in done.stderr


# -- a signal while the result is printed ---------------------------------------------------

LARGE = "id: large\nnodes:\n  - {id: a, uses: tests.exit_nodes.large}\n"


def start_large_run(tmp_path: Path) -> subprocess.Popen[bytes]:
    path = write(tmp_path, "large.yaml", LARGE)
    return subprocess.Popen(
        [sys.executable, "-m", "flowrun", "run", str(path), "--json", "--no-progress",
         "--state-dir", str(tmp_path / "state")],
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_readable(stream: object) -> None:
    """Until `stream` has data: with --json nothing reaches stdout before the document, and
    the document (2 MB) cannot fit in the pipe, so the process is now printing it."""
    ready, _, _ = select.select([stream], [], [], ENDS_WITHIN_S)
    assert ready, "nothing was printed"


def test_sigterm_while_the_document_is_printed_lets_it_print_whole(tmp_path: Path) -> None:
    proc = start_large_run(tmp_path)
    try:
        wait_readable(proc.stdout)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=ENDS_WITHIN_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, err  # the run had completed: its code is kept
    doc = json.loads(out)
    assert doc["status"] == "completed"
    assert len(doc["context"]["a"]) == 40_000
    assert b"SIGTERM: the run has ended; printing its result first" in err


def test_a_second_sigterm_while_the_document_is_printed_exits_130_at_once(
    tmp_path: Path,
) -> None:
    proc = start_large_run(tmp_path)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        wait_readable(proc.stdout)
        proc.send_signal(signal.SIGTERM)
        wait_readable(proc.stderr)  # the first one was seen (the process says so)...
        assert b"printing its result first" in os.read(proc.stderr.fileno(), 4096)
        proc.send_signal(signal.SIGTERM)  # ...and nothing reads stdout: only this ends it
        proc.wait(timeout=ENDS_WITHIN_S)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 130
