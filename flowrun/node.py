"""What a node function sees: `Result` to choose an edge, `NodeContext` for run state, and
`FatalError` for a failure that must not be retried."""

from __future__ import annotations

import json
import threading
from collections.abc import MutableMapping
from typing import Any

from flowrun.frozen import Frozen, fast_frozen


class FatalError(Exception):
    """Raise it from a node for a failure that retrying cannot fix (bad credentials, invalid
    input): the node fails at once, whatever `maxRetries` says; a fallback still stands in."""


@fast_frozen
class Result(Frozen):
    """Return `Result(output, action="name")` from a node to take the edges labelled `name`."""

    output: Any = None
    action: str | None = None


class SharedContext:
    """The run context: one dict behind a lock, shared by every node of a thread-pool run."""

    __slots__ = ("_data", "_lock")

    def __init__(self, data: MutableMapping[str, Any] | None = None) -> None:
        self._data: MutableMapping[str, Any] = data if data is not None else {}
        self._lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value

    @property
    def data(self) -> MutableMapping[str, Any]:
        """The dict itself, for the one thread that drives the run (reads without the lock)."""
        return self._data

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._data)

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # A context never travels with a call (`Call.context`): it unpickles as None, and a
        # process or Dask worker gets a snapshot of it in its job instead.
        return type(None), ()


class NodeContext:
    """Passed as `ctx` to a node function that declares a parameter named `ctx`.

    `ctx.set` values must be JSON (they are stored for `--resume`); the ones a node sets are
    also kept in `updates`, so they travel back from a process or a Dask worker.
    """

    __slots__ = ("_context", "attempt", "cancelled", "index", "node_id", "run_id", "updates")

    def __init__(
        self,
        *,
        node_id: str,
        run_id: str,
        attempt: int,
        index: int | None,
        context: SharedContext,
        cancelled: threading.Event,
    ) -> None:
        self.node_id = node_id
        self.run_id = run_id
        self.attempt = attempt
        self.index = index
        self.cancelled = cancelled
        self._context = context
        self.updates: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        """Read a run-context key (the initial context, node outputs, or a value set by a node)."""
        return self._context.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Set a run-context key; the value must be JSON-serializable."""
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"ctx.set({key!r}, ...): value of type {type(value).__name__} is not JSON: {exc}"
            ) from exc
        self._context.set(key, value)
        self.updates[key] = value

    def __repr__(self) -> str:
        return f"NodeContext(node_id={self.node_id!r}, attempt={self.attempt}, index={self.index})"
