"""The `--events FILE` sink: one JSON object per line, appended as the run goes. Lines are
flushed whenever the run waits for work (the driver calls `idle`) and at least every
`FLUSH_EVERY_S` while it is busy, so `tail -f` follows a run without a write per line.
A write that fails (a full disk) does not stop the run (its record is in the state store):
later lines are dropped and `close` raises the first failure.
Fields are each event's `to_json()` (see README, "Events")."""

from __future__ import annotations

import json
import os
import time
from itertools import chain
from typing import BinaryIO

from flowrun.errors import FlowrunError, UsageError
from flowrun.events import Event, ItemsStarted, ItemsSucceeded

FLUSH_EVERY_S = 0.2
BUFFER_MAX = 1 << 20  # bytes of lines held before they are written, at most


def _escaped(name: str) -> bytes:
    """`name` as a JSON string (ASCII: `json.dumps` escapes the rest), safe inside a `%`
    format."""
    return json.dumps(name).replace("%", "%%").encode()


class EventLog:
    """Append-only JSON-lines writer; `close()` is idempotent."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._file: BinaryIO | None = open(path, "ab")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"--events {path}: cannot open for writing: {exc.strerror}") from exc
        self._path = path
        self._flushed = time.monotonic()
        # Lines not yet handed to the file. Every write to the file releases the GIL, and a
        # busy run's worker threads then keep the driver waiting for it: lines are written in
        # one go when the run is about to wait anyway, or every FLUSH_EVERY_S / BUFFER_MAX.
        # Bytes, formatted as such: `bytes % values` costs about half what `str % values`
        # does for these lines, and nothing is left to encode on the way out.
        self._lines: list[bytes] = []
        self._size = 0
        self._error: OSError | None = None
        #: a chunk's event is written as the lines of its items' events (`events.Bus`)
        self.chunks = {ItemsStarted: self._items_started, ItemsSucceeded: self._items_succeeded}

    def __call__(self, event: Event) -> None:
        if self._file is None:
            return
        line = json.dumps(event.to_json(), separators=(",", ":"), default=str) + "\n"
        self._write(line.encode())

    def _items_started(self, e: ItemsStarted) -> None:
        """One `node_started` line per item, as `NodeStarted.to_json()` would give it."""
        if self._file is None or not e.indices:
            return
        batch = _escaped(e.batch)
        line = (b'{"event":"node_started","ts":%b,"node":%b[%%d]","attempt":1,"batch":%b,'
                b'"index":%%d}\n' % (repr(e.ts).encode(), batch[:-1], batch))  # fmt: skip
        # One format for the chunk's lines, pieces in C: a formatted line per item costs
        # several times more.
        idx = e.indices
        self._write(line * len(idx) % tuple(chain.from_iterable(zip(idx, idx, strict=True))))

    def _items_succeeded(self, e: ItemsSucceeded) -> None:
        """One `node_succeeded` line per item, as `NodeSucceeded.to_json()` would give it,
        with `duration_ms` to the microsecond (as the store keeps it)."""
        if self._file is None or not e.indices:
            return
        batch = _escaped(e.batch)
        line = (b'{"event":"node_succeeded","ts":%b,"node":%b[%%d]","attempt":1,'
                b'"duration_ms":%%.3f,"batch":%b,"index":%%d,"action":null,"reused":false}\n'
                % (repr(e.ts).encode(), batch[:-1], batch))  # fmt: skip
        idx = e.indices
        values = tuple(chain.from_iterable(zip(idx, e.durations_ms, idx, strict=True)))
        self._write(line * len(idx) % values)

    def _write(self, text: bytes) -> None:
        self._lines.append(text)
        self._size += len(text)
        if self._size >= BUFFER_MAX or time.monotonic() - self._flushed >= FLUSH_EVERY_S:
            self.idle()

    def idle(self) -> None:
        """Write and flush what is buffered (the run is about to wait). A write that fails is
        kept for `close` to raise; later lines are dropped."""
        if self._file is not None:
            if self._lines and self._error is None:
                try:
                    self._file.write(b"".join(self._lines))
                    self._file.flush()
                except OSError as exc:
                    self._error = exc
            self._lines.clear()
            self._size = 0
            self._flushed = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            self.idle()
            try:
                self._file.close()
            except OSError as exc:  # what the failed write left in the file's buffer
                self._error = self._error or exc
            self._file = None
            if self._error is not None:
                msg = f"--events {self._path}: cannot write: {self._error.strerror or self._error}"
                raise FlowrunError(msg) from self._error  # exit 1, as a store that cannot write
