"""A streamed batch's `outputTo` file: results written in item order as items finish.

Items finish in any order; `OrderedWriter` keeps those that finished ahead of the first
unfinished one (a reorder buffer: the batch stops handing out items while it holds
`MAX_AHEAD`), and appends the run of lines that became contiguous. Lines go out in groups
(`GROUP_BYTES`, or after `GROUP_SECONDS`), each group with one `os.write` of whole lines and an
`fsync`, so the file only ever grows by complete lines except when the process dies inside a
write. That torn tail is what `open_for_resume` cuts off: it keeps the complete lines, and
stops at the first line it cannot vouch for (a `null` that the store does not record as a
success: a failed item, re-run on resume), so nothing is written twice and no finished item
runs again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

GROUP_BYTES = 1 << 20
GROUP_SECONDS = 1.0
MAX_AHEAD = 10_000  # results held out of order before the batch waits for the first one


class OrderedWriter:
    """Writes line `i` of the file once lines `0..i-1` are written (`put` in any order)."""

    def __init__(self, path: Path, fd: int, first: int, stored: Mapping[int, Any]) -> None:
        self.path = path
        self.next = first  # the index of the next line to write
        self._fd = fd
        self._stored = stored  # outputs of items finished in an earlier run (not run again)
        self._ahead: dict[int, str] = {}
        self._buf: list[str] = []
        self._size = 0
        self._since = time.monotonic()
        self._advance()

    @classmethod
    def create(cls, path: Path) -> OrderedWriter:
        """A new, empty file (an old one is replaced)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        return cls(path, fd, 0, {})

    @classmethod
    def resume(cls, path: Path, done: Mapping[int, Any]) -> OrderedWriter:
        """Continue the file an earlier run wrote; `done` maps the indices the store holds as
        succeeded to their outputs. `next` is the first item the file does not hold."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        first, keep = _trusted_prefix(fd, done)
        os.ftruncate(fd, keep)
        os.lseek(fd, keep, os.SEEK_SET)
        os.fsync(fd)
        return cls(path, fd, first, done)

    @property
    def ahead(self) -> int:
        """Results held because an earlier item has not finished."""
        return len(self._ahead)

    def put(self, index: int, text: str) -> None:
        """Item `index` finished with JSON `text` (`null` for a failed item)."""
        if index == self.next:  # the usual case, inlined: the next line in order
            self._buf.append(text)
            self._size += len(text) + 1
            self.next = index + 1
            if self._ahead or self._stored:
                self._advance()
        else:
            self._ahead[index] = text
        if self._size >= GROUP_BYTES or time.monotonic() - self._since >= GROUP_SECONDS:
            self.flush()

    def put_many(self, first: int, texts: Sequence[str]) -> None:
        """Items `first`, `first + 1`, ... finished with JSON `texts` (a chunk's successes)."""
        if first != self.next:
            for i, text in enumerate(texts, first):
                self.put(i, text)
            return
        self._buf += texts
        self._size += sum(map(len, texts)) + len(texts)
        self.next = first + len(texts)
        if self._ahead or self._stored:
            self._advance()
        if self._size >= GROUP_BYTES or time.monotonic() - self._since >= GROUP_SECONDS:
            self.flush()

    def _line(self, text: str) -> None:
        self._buf.append(text)
        self._size += len(text) + 1
        self.next += 1

    def _advance(self) -> None:
        ahead, stored = self._ahead, self._stored
        while True:
            if self.next in ahead:
                self._line(ahead.pop(self.next))
            elif self.next in stored:
                self._line(json.dumps(stored[self.next], allow_nan=False))
            else:
                return

    def flush(self) -> None:
        """Write the buffered lines (one `os.write` loop) and fsync; raises `OSError`."""
        self._since = time.monotonic()
        if not self._buf:
            return
        self._buf.append("")  # the last line's line break
        data = memoryview("\n".join(self._buf).encode())
        self._buf, self._size = [], 0
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            os.close(self._fd)

    def abandon(self) -> None:
        """Close without writing what is buffered (the batch failed; resume rewrites it)."""
        self._buf = []
        os.close(self._fd)


def _trusted_prefix(fd: int, done: Mapping[int, Any]) -> tuple[int, int]:
    """(lines, bytes) of the file's leading lines that are finished items: complete lines,
    up to the first `null` the store does not hold as a success."""
    with os.fdopen(os.dup(fd), "rb") as f:
        index = offset = 0
        for line in f:
            if not line.endswith(b"\n"):
                break  # a torn last line
            if line.strip() == b"null" and index not in done:
                break  # a failed item (or one whose success was not recorded): run it again
            index += 1
            offset += len(line)
    return index, offset
