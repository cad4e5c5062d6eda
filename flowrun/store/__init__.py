"""Durable run state: a sink of the event stream (`writer`), the database file and lock (`db`),
the records and their SQL (`records`), and reading runs back (`read`).

Every public name is importable from here.
"""

from flowrun.store.read import RunDetails, Samples, Span, load_details, read_logs
from flowrun.store.writer import (
    COMMIT_LATENCY_S,
    COMMIT_MAX_RECORDS,
    DB_NAME,
    GROUP_MAX,
    LOCK_NAME,
    MAX_BACKLOG,
    SCHEMA_VERSION,
    RunMeta,
    RunStore,
    RunSummary,
    StoredBatch,
    StoredError,
    StoredNode,
    StoredRun,
    list_runs,
    new_run_id,
)

__all__ = [
    "COMMIT_LATENCY_S",
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
