"""Remember which blueprints passed the JSON Schema check, so a run of an unchanged file skips
importing and running jsonschema (about a third of a one-shot run's start-up).

The key is a SHA-256 of the schema text and of the parsed data (`repr` of the plain values the
validator would see, so `1`, `1.0`, `true` and `'1'` differ, and so do key orders and types):
a hit means this very data passed this very schema with no error. Only clean passes are
stored; a blueprint with any schema problem always goes through jsonschema, so its messages
come out as they always do. One small file holds the newest `MAX_ENTRIES` keys:
`$FLOWRUN_CACHE_DIR/schema-ok` (default `$XDG_CACHE_HOME/flowrun`, else `~/.cache/flowrun`).
A missing, unreadable or corrupt file is a miss; a cache that cannot be written is ignored.
`FLOWRUN_CACHE_DIR=` (empty) turns the cache off.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

MAX_ENTRIES = 512
_HEADER = "flowrun schema-ok 1"
_DIGEST = re.compile(r"[0-9a-f]{64}")


def cache_file() -> Path | None:
    """Where the cache lives, or None when it is turned off."""
    explicit = os.environ.get("FLOWRUN_CACHE_DIR")
    if explicit is not None:
        return Path(explicit) / "schema-ok" if explicit else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flowrun" / "schema-ok"


def key(schema_text: str, data: Any) -> str:
    """The cache key of `data` checked against the schema `schema_text`."""
    h = hashlib.sha256(_HEADER.encode())
    h.update(hashlib.sha256(schema_text.encode()).digest())
    h.update(repr(data).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _entries(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    if not lines or lines[0] != _HEADER or not all(_DIGEST.fullmatch(x) for x in lines[1:]):
        return []  # corrupt or from another format: everything is a miss
    return lines[1:]


def passed(digest: str) -> bool:
    """Did data with this key pass the schema cleanly before?"""
    path = cache_file()
    return path is not None and digest in _entries(path)


def remember(digest: str) -> None:
    """Record a clean pass (atomically: a reader sees the old file or the new one)."""
    path = cache_file()
    if path is None:
        return
    import tempfile  # only a miss writes: a hit must not pay for this import

    entries = [e for e in _entries(path) if e != digest][-(MAX_ENTRIES - 1) :]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".schema-ok-")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write("\n".join([_HEADER, *entries, digest]) + "\n")
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # a read-only home or a full disk only costs the next run the check
