"""`uses: flowrun.std.shell` (or `shell: "cmd"`): run a command as a node (SPEC §8).

The command runs in a session of its own (`start_new_session=True`), so its whole process
group can be ended: when the attempt's `ctx.cancelled` is set (a timeout, a Ctrl-C) the group
gets SIGTERM, then SIGKILL after `KILL_GRACE_S`; a `sh -c` child never outlives its shell.
stdout and stderr are read together by `communicate` (reading one pipe after the other can
deadlock on a full pipe). The command's stderr is written to `sys.stderr` as the node's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from flowrun.node import NodeContext

KILL_GRACE_S = 2.0
POLL_S = 0.1  # how often a running command looks at ctx.cancelled
TAIL_LINES = 20
OUTPUTS = ("text", "json", "lines", "none")
#: the keyword arguments a blueprint may give (`_dir` is added by flowrun: the blueprint's dir)
PARAMS = ("command", "env", "cwd", "output", "check")

_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()


class ShellError(Exception):
    """The command failed: a non-zero exit (with `check`), or it could not start."""

    def __init__(self, message: str, *, exit_code: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.exit_code, self.stderr = exit_code, stderr


def shell(
    input: Any = None,
    *,
    command: str | Sequence[Any],
    env: Mapping[str, Any] | None = None,
    cwd: str | None = None,
    output: str = "text",
    check: bool = True,
    ctx: NodeContext | None = None,
    _dir: str | None = None,
) -> Any:
    """Run `command` (a list: no shell; a string: `/bin/sh -c`) and return its stdout."""
    argv = _argv(command)
    if output not in OUTPUTS:
        raise ValueError(f"output {output!r}: choose one of {', '.join(OUTPUTS)}")
    where = os.path.join(_dir or os.getcwd(), cwd or "")
    # None inherits the environment as it is: no copy to encode for each command.
    environ = {**os.environ, **{str(k): _text(v) for k, v in env.items()}} if env else None
    cancelled = ctx.cancelled if ctx is not None else threading.Event()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=where,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise ShellError(f"cannot start {_show(argv)} in {where}: {exc.strerror}") from exc
    with _live_lock:
        _live.add(proc)
    try:
        out, err, stopped = _wait(proc, cancelled)
    finally:
        _kill_group(proc, signal.SIGKILL)  # whatever the command left running in its group
        with _live_lock:
            _live.discard(proc)
    stderr = err.decode(errors="replace")
    if stderr:
        sys.stderr.write(stderr if stderr.endswith("\n") else stderr + "\n")
    if stopped:
        raise ShellError(f"{_show(argv)} was stopped (cancelled or timed out)", stderr=stderr)
    if check and proc.returncode != 0:
        raise ShellError(_failure(argv, proc.returncode, stderr), exit_code=proc.returncode,
                         stderr=stderr)  # fmt: skip
    return _output(out.decode(errors="replace"), output)


def _argv(command: Any) -> list[str]:
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    if isinstance(command, list | tuple) and command:
        return [_text(part) for part in command]
    raise TypeError(
        f"command must be a string (run by /bin/sh -c) or a non-empty list (run without a "
        f"shell), not {type(command).__name__}"
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _wait(proc: subprocess.Popen[bytes], cancelled: threading.Event) -> tuple[bytes, bytes, bool]:
    while True:
        try:
            return (*proc.communicate(timeout=POLL_S), False)
        except subprocess.TimeoutExpired:
            if cancelled.is_set():
                return (*_stop(proc), True)


def _stop(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """SIGTERM to the group, SIGKILL after the grace; what the command wrote so far."""
    _kill_group(proc, signal.SIGTERM)
    try:
        return proc.communicate(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGKILL)
        return proc.communicate()


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the session leader's pid is the group id


def kill_all() -> None:
    """SIGKILL every running command's group (the process is about to exit at once)."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        _kill_group(proc, signal.SIGKILL)


def _failure(argv: list[str], code: int, stderr: str) -> str:
    if code < 0:
        try:
            what = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            what = f"was killed by signal {-code}"
    else:
        what = f"exited with code {code}"
    lines = stderr.rstrip("\n").splitlines()[-TAIL_LINES:]
    tail = "\n".join(lines) if lines else "(no output on stderr)"
    return f"{_show(argv)} {what}; stderr (last {len(lines)} lines):\n{tail}"


def _show(argv: list[str]) -> str:
    text = argv[2] if argv[:2] == ["/bin/sh", "-c"] else " ".join(argv)
    return f"command `{text if len(text) <= 120 else text[:117] + '...'}`"


def _output(stdout: str, output: str) -> Any:
    if output == "json":
        try:
            return json.loads(stdout)
        except ValueError as exc:
            raise ValueError(f"output: json: stdout is not JSON ({exc}): {stdout[:200]!r}") from exc
    if output == "lines":
        return stdout.splitlines()
    if output == "none":
        if stdout:
            sys.stderr.write(stdout if stdout.endswith("\n") else stdout + "\n")
        return None
    return stdout.removesuffix("\n")
