"""The `--events FILE` sink: one JSON object per line, appended as the run goes. Lines are
flushed whenever the run waits for work (the driver calls `idle`) and at least every
`FLUSH_EVERY_S` while it is busy, so `tail -f` follows a run without a write per line.
Fields are each event's `to_json()` (see README, "Events")."""

from __future__ import annotations

import json
import os
import time
from itertools import chain, repeat
from typing import IO

from flowrun.errors import UsageError
from flowrun.events import Event, ItemsStarted, ItemsSucceeded

FLUSH_EVERY_S = 0.2
BUFFER_MAX = 1 << 20  # characters of lines held before they are written, at most


class EventLog:
    """Append-only JSON-lines writer; `close()` is idempotent."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._file: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"--events {path}: cannot open for writing: {exc.strerror}") from exc
        self._flushed = time.monotonic()
        # Lines not yet handed to the file. Every write to the file releases the GIL, and a
        # busy run's worker threads then keep the driver waiting for it: lines are written in
        # one go when the run is about to wait anyway, or every FLUSH_EVERY_S / BUFFER_MAX.
        self._lines: list[str] = []
        self._size = 0
        #: a chunk's event is written as the lines of its items' events (`events.Bus`)
        self.chunks = {ItemsStarted: self._items_started, ItemsSucceeded: self._items_succeeded}

    def __call__(self, event: Event) -> None:
        if self._file is None:
            return
        self._write(json.dumps(event.to_json(), separators=(",", ":"), default=str) + "\n")

    def _items_started(self, e: ItemsStarted) -> None:
        """One `node_started` line per item, as `NodeStarted.to_json()` would give it."""
        if self._file is None:
            return
        batch = json.dumps(e.batch)
        head = f'{{"event":"node_started","ts":{e.ts!r},"node":{batch[:-1]}['
        ss = list(map(str, e.indices))
        # The lines, pieces interleaved in C: a formatted line per item costs several times more.
        mid, end = f']","attempt":1,"batch":{batch},"index":', "}\n"
        self._write("".join(chain.from_iterable(zip(repeat(head), ss, repeat(mid), ss,
                                                    repeat(end)))))  # fmt: skip

    def _items_succeeded(self, e: ItemsSucceeded) -> None:
        """One `node_succeeded` line per item, as `NodeSucceeded.to_json()` would give it,
        with `duration_ms` to the microsecond (as the store keeps it)."""
        if self._file is None:
            return
        batch = json.dumps(e.batch)
        head = f'{{"event":"node_succeeded","ts":{e.ts!r},"node":{batch[:-1]}['
        ss = list(map(str, e.indices))
        ms = map("%.3f".__mod__, e.durations_ms)
        took, at = ']","attempt":1,"duration_ms":', f',"batch":{batch},"index":'
        end = ',"action":null,"reused":false}\n'
        self._write("".join(chain.from_iterable(zip(repeat(head), ss, repeat(took), ms,
                                                    repeat(at), ss, repeat(end)))))  # fmt: skip

    def _write(self, text: str) -> None:
        self._lines.append(text)
        self._size += len(text)
        if self._size >= BUFFER_MAX or time.monotonic() - self._flushed >= FLUSH_EVERY_S:
            self.idle()

    def idle(self) -> None:
        """Write and flush what is buffered (the run is about to wait)."""
        if self._file is not None:
            if self._lines:
                self._file.write("".join(self._lines))
                self._lines.clear()
                self._size = 0
            self._file.flush()
            self._flushed = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            self.idle()
            self._file.close()
            self._file = None
