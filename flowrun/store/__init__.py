"""Durable run state: a sink of the event stream (`writer`), the database file and lock (`db`),
the records and their SQL (`records`), and reading runs back (`read`).

Every public name is importable from here. Reading runs back is imported on first use: a new
run records and never reads, and its nine record classes cost a one-shot run's start-up.
"""

from typing import TYPE_CHECKING, Any

from flowrun.store.records import RunMeta
from flowrun.store.writer import (
    COMMIT_MAX_RECORDS,
    DB_NAME,
    GROUP_MAX,
    LOCK_NAME,
    MAX_BACKLOG,
    SCHEMA_VERSION,
    RunStore,
    new_run_id,
)

if TYPE_CHECKING:
    from flowrun.store.read import (
        RunDetails,
        RunSummary,
        Samples,
        Span,
        StoredBatch,
        StoredError,
        StoredNode,
        StoredRun,
        list_runs,
        load_details,
        read_logs,
    )

_READ = frozenset(
    {
        "RunDetails",
        "RunSummary",
        "Samples",
        "Span",
        "StoredBatch",
        "StoredError",
        "StoredNode",
        "StoredRun",
        "list_runs",
        "load_details",
        "read_logs",
    }
)


def __getattr__(name: str) -> Any:
    if name in _READ:
        from flowrun.store import read

        return getattr(read, name)
    raise AttributeError(f"module 'flowrun.store' has no attribute {name!r}")


__all__ = [
    "COMMIT_MAX_RECORDS",
    "DB_NAME",
    "GROUP_MAX",
    "LOCK_NAME",
    "MAX_BACKLOG",
    "SCHEMA_VERSION",
    "RunDetails",
    "RunMeta",
    "RunStore",
    "RunSummary",
    "Samples",
    "Span",
    "StoredBatch",
    "StoredError",
    "StoredNode",
    "StoredRun",
    "list_runs",
    "load_details",
    "new_run_id",
    "read_logs",
]
