"""The `--events FILE` sink: one JSON object per line, appended as the run goes. Lines are
flushed whenever the run waits for work (the driver calls `idle`) and at least every
`FLUSH_EVERY_S` while it is busy, so `tail -f` follows a run without a write per line.
Fields are each event's `to_json()` (see README, "Events")."""

from __future__ import annotations

import json
import os
import time
from typing import IO

from flowrun.errors import UsageError
from flowrun.events import Event, ItemsStarted, ItemsSucceeded

FLUSH_EVERY_S = 0.2


class EventLog:
    """Append-only JSON-lines writer; `close()` is idempotent."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._file: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"--events {path}: cannot open for writing: {exc.strerror}") from exc
        self._flushed = time.monotonic()
        #: a chunk's event is written as the lines of its items' events (`events.Bus`)
        self.chunks = {ItemsStarted: self._items_started, ItemsSucceeded: self._items_succeeded}

    def __call__(self, event: Event) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(event.to_json(), separators=(",", ":"), default=str) + "\n")
        now = time.monotonic()
        if now - self._flushed >= FLUSH_EVERY_S:
            self.idle()

    def _items_started(self, e: ItemsStarted) -> None:
        """One `node_started` line per item, as `NodeStarted.to_json()` would give it."""
        if self._file is None:
            return
        batch = json.dumps(e.batch)
        head = f'{{"event":"node_started","ts":{e.ts!r},"node":{batch[:-1]}['
        tail = f',"attempt":1,"batch":{batch},"index":'
        self._write("".join([f'{head}{i}]"{tail}{i}}}\n' for i in e.indices]))

    def _items_succeeded(self, e: ItemsSucceeded) -> None:
        """One `node_succeeded` line per item, as `NodeSucceeded.to_json()` would give it."""
        if self._file is None:
            return
        batch = json.dumps(e.batch)
        head = f'{{"event":"node_succeeded","ts":{e.ts!r},"node":{batch[:-1]}['
        mid = ',"attempt":1,"duration_ms":'
        tail = f',"batch":{batch},"index":'
        lines = [
            f'{head}{i}]"{mid}{ms!r}{tail}{i},"action":null,"reused":false}}\n'
            for i, ms in zip(e.indices, e.durations_ms, strict=True)
        ]
        self._write("".join(lines))

    def _write(self, text: str) -> None:
        assert self._file is not None
        self._file.write(text)
        if time.monotonic() - self._flushed >= FLUSH_EVERY_S:
            self.idle()

    def idle(self) -> None:
        """Flush what is buffered (the run is about to wait)."""
        if self._file is not None:
            self._file.flush()
            self._flushed = time.monotonic()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
