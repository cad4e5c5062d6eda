"""The `--events FILE` sink: one JSON object per line, appended and flushed as the run goes,
so `tail -f` follows a run. Fields are each event's `to_json()` (see README, "Events")."""

from __future__ import annotations

import json
import os
from typing import IO

from flowrun.errors import UsageError
from flowrun.events import Event


class EventLog:
    """Append-only JSON-lines writer; `close()` is idempotent."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._file: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"--events {path}: cannot open for writing: {exc.strerror}") from exc

    def __call__(self, event: Event) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(event.to_json(), separators=(",", ":"), default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
