"""`uses: flowrun.std.shell` (or `shell: "cmd"`): run a command as a node (SPEC §8).

The command runs in a session of its own (`start_new_session=True`), so its whole process
group can be ended: when the attempt's `ctx.cancelled` is set (a timeout, a Ctrl-C) the group
gets SIGTERM, then SIGKILL after `KILL_GRACE_S`; a `sh -c` child never outlives its shell.
The command's stderr is written to `sys.stderr` as the node's log.

On Linux stdout and stderr go to two anonymous in-memory files (`memfd_create`), read once the
command has exited, and the exit is waited for on a pidfd (`poll` with a timeout, so the
cancel event is seen): no pipes and no read loop per command, which is most of what a short
command costs here besides its own start. Elsewhere they are pipes read together by
`communicate` (reading one pipe after the other can deadlock on a full pipe).

On CPython 3.11 to 3.13 the command is started by `_posixsubprocess.fork_exec`, the call
`subprocess.Popen` itself makes (vfork, and the same steps in the child: stdin from /dev/null,
stdout/stderr onto the memfds, setsid, close_fds, default SIGPIPE, an exec error sent back on
a pipe), without the rest of `Popen`: its argument checks, handle and lock set-up, the
/dev/null it opens per command, and the bookkeeping of its `wait`. On 1,000 `true` commands
from eight threads that took the parent's CPU per command from about 215 to 155 us.
`os.posix_spawn` (glibc's clone(CLONE_VFORK)) measured four times slower in wall time there,
and it has no working-directory action. Any other interpreter, or a `fork_exec` that refuses
the arguments, uses `Popen`.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from flowrun.node import NodeContext

KILL_GRACE_S = 2.0
POLL_S = 0.1  # how often a running command looks at ctx.cancelled
TAIL_LINES = 20
OUTPUTS = ("text", "json", "lines", "none")
#: the keyword arguments a blueprint may give (`_dir` is added by flowrun: the blueprint's dir)
PARAMS = ("command", "env", "cwd", "output", "check")


class _Proc(Protocol):
    """What the waiting and killing below need of a started command."""

    pid: int
    returncode: int | None

    def wait(self, timeout: float | None = None) -> int: ...


_live: set[_Proc] = set()
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
    files = _memfds() if _MEMFD else None
    try:
        proc: _Proc
        try:
            executable = _executable(argv[0], environ)
            if files is not None and _fork_exec is not None:
                proc = _spawn(argv, executable, where, environ, *files)
            else:
                proc = subprocess.Popen(
                    argv,
                    executable=executable,
                    cwd=where,
                    env=environ,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if files is None else files[0],
                    stderr=subprocess.PIPE if files is None else files[1],
                    start_new_session=True,
                )
        except OSError as exc:
            raise ShellError(f"cannot start {_show(argv)} in {where}: {exc.strerror}") from exc
        with _live_lock:
            _live.add(proc)
        try:
            if files is None:
                assert isinstance(proc, subprocess.Popen)
                out, err, stopped = _wait(proc, cancelled)
            else:
                stopped = _wait_exit(proc, cancelled)
        finally:
            _kill_group(proc, signal.SIGKILL)  # whatever the command left running in its group
            with _live_lock:
                _live.discard(proc)
            if proc.returncode is None:  # the wait was interrupted: reap it, leave no zombie
                proc.wait()
        if files is not None:
            out, err = _read(files[0]), _read(files[1])
    finally:
        if files is not None:
            os.close(files[0])
            os.close(files[1])
    stderr = err.decode(errors="replace")
    if stderr:
        sys.stderr.write(stderr if stderr.endswith("\n") else stderr + "\n")
    if stopped:
        raise ShellError(f"{_show(argv)} was stopped (cancelled or timed out)", stderr=stderr)
    code = proc.wait()  # reaped already: only its exit code
    if check and code != 0:
        raise ShellError(_failure(argv, code, stderr), exit_code=code, stderr=stderr)
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


_found: dict[tuple[str, str | None], str] = {}


def _executable(name: str, environ: Mapping[str, str] | None) -> str:
    """The program to start for `name`: searched on PATH once per name (and PATH), not by
    each start (Popen would build every PATH candidate, and the child would try each); the
    program still sees `name` as its argv[0]. A name with a slash is used as it is."""
    if "/" in name:
        return name
    path = (environ or os.environ).get("PATH")
    key = (name, path)
    found = _found.get(key)
    if found is None or not os.access(found, os.X_OK):
        found = shutil.which(name, path=path)
        if found is None or not os.path.isabs(found):
            return name  # not found (or a relative PATH entry): let Popen search and report
        _found[key] = found
    return found


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _wait(proc: subprocess.Popen[bytes], cancelled: threading.Event) -> tuple[bytes, bytes, bool]:
    while True:
        try:
            return (*proc.communicate(timeout=POLL_S), False)
        except subprocess.TimeoutExpired:
            if cancelled.is_set():
                return (*_stop(proc), True)


_MEMFD = hasattr(os, "memfd_create") and hasattr(os, "pidfd_open")


def _memfds() -> tuple[int, int]:
    out = os.memfd_create("flowrun-stdout", os.MFD_CLOEXEC)
    try:
        return out, os.memfd_create("flowrun-stderr", os.MFD_CLOEXEC)
    except OSError:
        os.close(out)
        raise


def _read(fd: int) -> bytes:
    """All a command wrote to its in-memory file."""
    size = os.lseek(fd, 0, os.SEEK_END)  # its size, without building a stat result
    if not size:
        return b""
    chunks, at = [], 0
    while at < size:
        chunk = os.pread(fd, size - at, at)
        if not chunk:
            break
        chunks.append(chunk)
        at += len(chunk)
    return b"".join(chunks)


def _load_fork_exec() -> Any:
    """`_posixsubprocess.fork_exec` where its arguments are the ones `_spawn` passes."""
    if sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13):
        return None
    try:
        from _posixsubprocess import fork_exec
    except ImportError:
        return None
    return fork_exec


_fork_exec = _load_fork_exec()
_devnull_fd = -1
_devnull_lock = threading.Lock()


def _devnull() -> int:
    """One /dev/null opened for the process, the stdin of every command (not one per start)."""
    global _devnull_fd
    if _devnull_fd < 0:
        with _devnull_lock:
            if _devnull_fd < 0:
                _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return _devnull_fd


class _Spawned:
    """A command started by `_spawn`: its pid and, once reaped, its exit code (as `Popen`
    gives them: a signal is its negative number)."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        try:
            if timeout is None:
                _, status = os.waitpid(self.pid, 0)
            else:  # only without pidfds: poll as `Popen.wait(timeout)` does
                deadline, delay = time.monotonic() + timeout, 0.0005
                while True:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                    if pid:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise subprocess.TimeoutExpired(str(self.pid), timeout)
                    time.sleep(min(delay, left))
                    delay = min(delay * 2, 0.05)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): as Popen, code 0
            code = 0
        self.returncode = code
        return code


def _spawn(
    argv: list[str], executable: str, where: str, environ: Mapping[str, str] | None,
    out: int, err: int,
) -> _Proc:  # fmt: skip
    """Start `argv` as `Popen(argv, executable=..., cwd=where, env=environ, stdin=DEVNULL,
    stdout=out, stderr=err, start_new_session=True)` would, through the same `fork_exec`."""
    global _fork_exec
    env_list = None
    if environ is not None:
        env_list = []
        for key, value in environ.items():
            name = os.fsencode(key)
            if b"=" in name:
                raise ValueError("illegal environment variable name")
            env_list.append(name + b"=" + os.fsencode(value))
    program = os.fsencode(executable)
    if os.path.dirname(program):
        candidates: tuple[bytes, ...] = (program,)
    else:  # not found on PATH by `_executable`: let the child try each entry, as Popen does
        candidates = tuple(os.path.join(os.fsencode(d), program) for d in os.get_exec_path(environ))
    sys.audit("subprocess.Popen", executable, argv, where, environ)
    errpipe_read, errpipe_write = os.pipe()  # the child's exec error, if it has one
    try:
        low = []
        while errpipe_write < 3:  # never one of the fds the child sets up
            low.append(errpipe_write)
            errpipe_write = os.dup(errpipe_write)
        for fd in low:
            os.close(fd)
        try:
            pid = _fork_exec(
                argv, candidates, True, (errpipe_write,), where, env_list,
                _devnull(), -1, -1, out, -1, err, errpipe_read, errpipe_write,
                True, True, -1, None, None, None, -1, None, getattr(subprocess, "_USE_VFORK", True),
            )  # fmt: skip
        except TypeError:  # not the signature this was written for: Popen from now on
            _fork_exec = None
            return subprocess.Popen(
                argv, executable=executable, cwd=where, env=environ, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(errpipe_write)
        # vfork returns once the child has exec'd or failed, so this read does not wait
        failure = os.read(errpipe_read, 50000)
    finally:
        os.close(errpipe_read)
    proc = _Spawned(pid)
    if failure:
        proc.wait()
        raise _start_error(failure, executable, where)
    return proc


def _start_error(data: bytes, executable: str, where: str) -> Exception:
    """The exception `Popen` raises for what its child reported (`name:hex errno:text`)."""
    try:
        name, hex_errno, text = data.split(b":", 2)
        kind = getattr(builtins, name.decode("ascii"), subprocess.SubprocessError)
        message = text.decode()
    except ValueError:
        return subprocess.SubprocessError(f"Bad exception data from child: {data!r}")
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        kind = subprocess.SubprocessError
    if issubclass(kind, OSError) and hex_errno:
        code = int(hex_errno, 16)
        filename = where if message == "noexec" else executable  # "noexec": chdir failed
        return kind(code, os.strerror(code) if code else "", filename)
    return kind(message)


def _exited(proc: _Proc, pidfd: int, seconds: float) -> bool:
    """Wait up to `seconds` for the command to exit (and reap it); did it?"""
    poller = select.poll()  # not select(): a pidfd may be numbered past FD_SETSIZE
    poller.register(pidfd, select.POLLIN)
    if not poller.poll(seconds * 1000):
        return False
    proc.wait()
    return True


def _wait_exit(proc: _Proc, cancelled: threading.Event) -> bool:
    """Wait for the command's exit, looking at `cancelled` every `POLL_S`; was it stopped?"""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # a kernel without pidfds: poll the process instead
        return _wait_polling(proc, cancelled)
    try:
        while not _exited(proc, pidfd, POLL_S):
            if cancelled.is_set():
                _kill_group(proc, signal.SIGTERM)
                if not _exited(proc, pidfd, KILL_GRACE_S):
                    _kill_group(proc, signal.SIGKILL)
                    proc.wait()
                return True
        return False
    finally:
        os.close(pidfd)


def _wait_polling(proc: _Proc, cancelled: threading.Event) -> bool:
    while True:
        try:
            proc.wait(POLL_S)
            return False
        except subprocess.TimeoutExpired:
            if cancelled.is_set():
                _kill_group(proc, signal.SIGTERM)
                try:
                    proc.wait(KILL_GRACE_S)
                except subprocess.TimeoutExpired:
                    _kill_group(proc, signal.SIGKILL)
                    proc.wait()
                return True


def _stop(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """SIGTERM to the group, SIGKILL after the grace; what the command wrote so far."""
    _kill_group(proc, signal.SIGTERM)
    try:
        return proc.communicate(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGKILL)
        return proc.communicate()


def _kill_group(proc: _Proc, sig: int) -> None:
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
