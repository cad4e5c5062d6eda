"""Keep flowrun's own output apart from what nodes write straight to file descriptors.

- `reserve_stdout(True)` (`--json`): for the whole run, anything written to stdout (a node
  module's import-time print, a child process inheriting fd 1, C code) goes to stderr instead,
  so that stdout holds the document alone, printed once the block has put stdout back.
- `FdRouter` (live display): fd 1 (when it is the terminal) and fd 2 are pointed at a pipe; a
  reader thread prints what arrives above the live display, through the display's console,
  which keeps writing to the terminal through a duplicate of the original fd 2. `stop()` puts
  the fds back, also on Ctrl-C.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported only where a live display runs (`FdRouter`)
    from rich.console import Console


def _fileno(stream: Any) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):
        return None
    return fd if isinstance(fd, int) else None


@contextlib.contextmanager
def reserve_stdout(enabled: bool) -> Iterator[None]:
    """Send stdout to stderr inside the block (Python-level and, where they are real files,
    fd-level); on exit stdout is what it was."""
    if not enabled:
        yield
        return
    out, err = sys.stdout, sys.stderr
    out_fd, err_fd = _fileno(out), _fileno(err)
    saved = None
    if out_fd is not None and err_fd is not None and out_fd != err_fd:
        out.flush()
        saved = os.dup(out_fd)
        os.dup2(err_fd, out_fd)
    sys.stdout = err
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            err.flush()
        sys.stdout = out
        if saved is not None and out_fd is not None:
            os.dup2(saved, out_fd)
            os.close(saved)


class FdRouter:
    """While running, fd-level writes to the terminal are printed above the live display."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._saved: dict[int, int] = {}
        self._reader: threading.Thread | None = None
        self._read_fd = -1
        self._old_file: Any = None
        self._term: Any = None

    @staticmethod
    def usable(console: Console) -> bool:
        """Only when the console writes to fd 2 and that is a terminal."""
        fd = _fileno(console.file)
        return fd == 2 and os.isatty(2)

    def start(self) -> None:
        fds = [fd for fd in (1, 2) if os.isatty(fd)]
        if 2 not in fds:
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        self._saved = {fd: os.dup(fd) for fd in fds}
        self._old_file = getattr(self.console, "_file", None)
        # the display keeps the terminal: its own duplicate of the original fd 2
        self._term = open(os.dup(self._saved[2]), "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.console.file = self._term
        read_fd, write_fd = os.pipe()
        for fd in fds:
            os.dup2(write_fd, fd)
        os.close(write_fd)
        self._read_fd = read_fd
        self._reader = threading.Thread(target=self._read, daemon=True, name="flowrun-fd-route")
        self._reader.start()

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while True:
            try:
                data = os.read(self._read_fd, 65536)
            except OSError:
                data = b""
            if not data:
                break
            pending += decoder.decode(data)
            lines, _, pending = pending.rpartition("\n")
            if lines:
                self._print(lines)
        pending += decoder.decode(b"", final=True)
        if pending:
            self._print(pending)
        os.close(self._read_fd)

    def _print(self, text: str) -> None:
        with contextlib.suppress(Exception):
            from rich.text import Text  # a live display runs: rich is loaded already

            self.console.print(Text(text), soft_wrap=True, highlight=False)

    def stop(self) -> None:
        """Put fds 1 and 2 back and print what is still in the pipe; safe to call twice."""
        saved, self._saved = self._saved, {}
        if not saved:
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
        # A child still holding the pipe keeps the reader waiting: never wait long for it.
        if self._reader is not None:
            self._reader.join(0.5)
        self.console.file = self._old_file
        with contextlib.suppress(Exception):
            self._term.close()
