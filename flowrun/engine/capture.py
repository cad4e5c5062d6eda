"""Capture what a node writes to `sys.stdout`/`sys.stderr`, per attempt, wherever it runs.

`install()` puts one proxy in front of each stream (once per run, or once per worker
process); `run_attempt` opens a buffer for the calling thread around each call (`begin` /
`end`). A write from a thread inside an attempt goes to that attempt's buffer; any other write
(flowrun itself, rich, a thread a node started) goes to the stream the proxy replaced. The
buffer is made at the first write, so a node that prints nothing costs two thread-local
attribute writes per attempt.

`async def` nodes share one thread (the backend's event loop), so a thread's buffer cannot
tell them apart: each of their attempts opens a buffer in a context variable instead
(`begin_task` / `end_task`), which every asyncio task carries in its own context. A write is
attributed to the thread's attempt first, then to the task's; tasks a node creates (and
`asyncio.to_thread` calls) inherit its context, so their writes are the node's too.

A buffer keeps at most `MAX_LOG_BYTES` (the tail), so a node printing in a loop holds a bounded
amount of memory and the store a bounded row.
"""

from __future__ import annotations

import sys
import threading
from contextvars import ContextVar, Token
from typing import Any, TextIO

MAX_LOG_BYTES = 1 << 20  # per node or batch item (SPEC §7)

_local = threading.local()
_lock = threading.Lock()
#: this thread is running an attempt that has not written anything yet
_OPEN: Any = object()
#: the attempt of the asyncio task that is running (None outside an async attempt)
_task_buf: ContextVar[Buffer | None] = ContextVar("flowrun_capture", default=None)


class Buffer:
    """One attempt's captured text: chunks and their total length, trimmed to the tail."""

    __slots__ = ("chunks", "cut", "size")

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.size = 0
        self.cut = 0  # characters dropped from the head

    def write(self, text: str) -> None:
        self.chunks.append(text)
        self.size += len(text)
        if self.size > 2 * MAX_LOG_BYTES:  # amortised: trim once the buffer doubled
            joined = "".join(self.chunks)
            keep = joined[-MAX_LOG_BYTES:]
            self.cut += len(joined) - len(keep)
            self.chunks, self.size = [keep], len(keep)

    def text(self) -> str:
        """The captured text, at most MAX_LOG_BYTES of UTF-8, with a note when the head was cut."""
        if not self.chunks:
            return ""
        joined = "".join(self.chunks)
        cut = self.cut
        data = joined.encode("utf-8", "replace")
        if len(data) > MAX_LOG_BYTES:
            tail = data[-MAX_LOG_BYTES:].decode("utf-8", "ignore")
            cut += len(joined) - len(tail)
            joined = tail
        if cut:
            return f"[... {cut} characters cut: the last 1 MiB is kept ...]\n{joined}"
        return joined


class _Proxy:
    """Stands in for `sys.stdout` or `sys.stderr`; everything but writes goes to `target`."""

    def __init__(self, target: TextIO) -> None:
        self._target = target

    def write(self, text: str) -> int:
        buf: Buffer | None = getattr(_local, "buf", None)
        if buf is None:
            buf = _task_buf.get()
            if buf is None:
                return self._target.write(text)
        elif buf is _OPEN:
            buf = _local.buf = Buffer()
        buf.write(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not _capturing():
            self._target.flush()

    def isatty(self) -> bool:
        # Inside an attempt the output goes to a buffer, not to a terminal.
        return not _capturing() and self._target.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def _capturing() -> bool:
    return getattr(_local, "buf", None) is not None or _task_buf.get() is not None


def install() -> Any:
    """Put the proxies in place (idempotent); returns a token for `uninstall`."""
    with _lock:
        out, err = sys.stdout, sys.stderr
        token = (out, err)
        if not isinstance(out, _Proxy):
            sys.stdout = _Proxy(out)
        if not isinstance(err, _Proxy):
            sys.stderr = _Proxy(err)
        return token


def uninstall(token: Any) -> None:
    """Put back the streams `install` found, unless someone replaced the proxies since."""
    with _lock:
        out, err = token
        if isinstance(sys.stdout, _Proxy) and not isinstance(out, _Proxy):
            sys.stdout = out
        if isinstance(sys.stderr, _Proxy) and not isinstance(err, _Proxy):
            sys.stderr = err


def begin() -> None:
    """Start capturing this thread's writes (its attempt begins)."""
    _local.buf = _OPEN


def current() -> Buffer | None:
    """This thread's buffer, made now if its attempt has written nothing yet (to share it with
    another thread: a timed attempt runs the function on its own thread)."""
    buf: Buffer | None = getattr(_local, "buf", None)
    if buf is _OPEN:
        buf = _local.buf = Buffer()
    return buf


def attach(buf: Buffer | None) -> None:
    """Make this thread write into `buf` (a timed attempt's own thread), or stop (None)."""
    _local.buf = buf


def end() -> str:
    """Stop capturing this thread's writes; what its attempt wrote."""
    buf = _local.buf
    _local.buf = None
    return "" if buf is _OPEN or buf is None else buf.text()


def begin_task() -> Token[Buffer | None]:
    """Start capturing the writes of the running asyncio task (an async attempt begins)."""
    return _task_buf.set(Buffer())


def end_task(token: Token[Buffer | None]) -> str:
    """Stop capturing the task's writes; what its attempt wrote."""
    buf = _task_buf.get()
    _task_buf.reset(token)
    return "" if buf is None else buf.text()
