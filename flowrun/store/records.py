"""The records the run store hands its writer thread, and the SQL that stores each kind.

A record is one tuple whose first element is its kind: an event becomes one (`ENCODERS`), a
group of batch-item successes becomes one ``item_chunks`` record (`chunk_record`), and the
markers `FLUSH` and `STOP` steer the writer. Plain functions over the events: no I/O, no
threads; the store (`flowrun.store`) queues the tuples and its writer binds them to `SQL`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import mul
from typing import Any, cast

from flowrun.errors import StateError
from flowrun.events import (
    BatchFinished,
    BatchStarted,
    Event,
    ItemsSucceeded,
    NodeFailed,
    NodeRecovered,
    NodeRetry,
    NodeSkipped,
    NodeSucceeded,
    RunFinished,
    RunStarted,
)
from flowrun.frozen import Frozen, fast_frozen


@fast_frozen
class RunMeta(Frozen):
    """What a run was started with; stored once, read back on ``--resume``."""

    run_id: str
    blueprint_id: str
    blueprint_path: str
    blueprint_sha256: str
    context: dict[str, Any]
    options: dict[str, Any]
    started: float


# The statements number their parameters from ?2, so a record's tuple is the row as it is
# (sqlite binds ?1, the kind, and never reads it).
_NODE, _RECOVERED, _BATCH_STARTED, _BATCH_FINISHED, _RUN_STARTED, _RUN_FINISHED, _CHUNK = range(7)
LOGS, SPAN, SAMPLES, _NODE_OK = range(7, 11)
FLUSH, STOP = "flush", "stop"
_SIZE = 2  # where a chunk record holds its number of items
SQL = {
    # REPLACE gives the row a new rowid, so rowid order is the order of the latest records.
    _NODE: "INSERT OR REPLACE INTO nodes (node, batch, idx, status, attempt, duration_ms, action,"
    " output, error_type, message, traceback, updates, ts)"
    " VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    # A plain success (a task node, a child run's node): the NULLs are in the statement, since
    # binding a None costs sqlite3 a failed adapter lookup per parameter.
    _NODE_OK: "INSERT OR REPLACE INTO nodes (node, batch, idx, status, attempt, duration_ms,"
    " action, output, error_type, message, traceback, updates, ts)"
    " VALUES (?2, NULL, NULL, 'succeeded', ?3, ?4, NULL, ?5, NULL, NULL, NULL, NULL, ?6)",
    # Keeps the failure's attempts and error next to the fallback's output.
    _RECOVERED: "INSERT INTO nodes (node, status, output, fallback, ts)"
    " VALUES (?2, 'recovered', ?3, ?4, ?5) ON CONFLICT (node) DO UPDATE SET"
    " status = 'recovered', output = ?3, fallback = ?4, ts = ?5",
    _BATCH_STARTED: "INSERT INTO batches (batch, total, status, ts) VALUES (?2, ?3, 'running', ?4)"
    " ON CONFLICT (batch) DO UPDATE SET total = ?3, status = 'running', ts = ?4",
    _BATCH_FINISHED: "INSERT OR REPLACE INTO batches"
    " (batch, status, total, succeeded, failed, output_key, ts)"
    " VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    _RUN_STARTED: "INSERT INTO runs (started, resumed) VALUES (?2, ?3)",
    # Finishes the latest start; a run that never recorded RunStarted gets its row here.
    _RUN_FINISHED: "INSERT INTO runs (seq, started, resumed, status, duration_ms)"
    " VALUES (COALESCE((SELECT MAX(seq) FROM runs), 1), ?2 - ?4 / 1000.0, 0, ?3, ?4)"
    " ON CONFLICT (seq) DO UPDATE SET status = ?3, duration_ms = ?4",
    _CHUNK: "INSERT INTO item_chunks (batch, size, indices, attempts, durations_us, actions,"
    " outputs, ts) VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    LOGS: "INSERT OR REPLACE INTO logs (node, attempt, text, ts) VALUES (?2, ?3, ?4, ?5)",
    # Spans are of task nodes and batches as a whole: `batch` is NULL (see `_NODE_OK`).
    SPAN: "INSERT OR REPLACE INTO spans (node, batch, started, finished, status)"
    " VALUES (?2, NULL, ?3, ?4, ?5)",
    SAMPLES: "INSERT OR REPLACE INTO samples (batch, start, step, peaks) VALUES (?2, ?3, ?4, ?5)",
}


# The table each kind of record writes. Rows of different tables are independent within one
# transaction (it commits whole or not at all), so `by_table` may put them apart; rows of one
# table keep the order they were recorded in (a later REPLACE wins).
_TABLE = {_NODE: "nodes", _RECOVERED: "nodes", _BATCH_STARTED: "batches",
          _BATCH_FINISHED: "batches", _RUN_STARTED: "runs", _RUN_FINISHED: "runs",
          _CHUNK: "item_chunks", LOGS: "logs", SPAN: "spans", SAMPLES: "samples",
          _NODE_OK: "nodes"}  # fmt: skip


def by_table(records: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`records` (of one transaction) table by table, each table's in their order, so that
    consecutive records of one kind are one `executemany`: a task node's row and its span,
    alternating, would otherwise be two statements per node."""
    lanes: dict[str, list[tuple[Any, ...]]] = {}
    for record in records:
        table = _TABLE.get(record[0], "")
        lane = lanes.get(table)
        if lane is None:
            lanes[table] = [record]
        else:
            lane.append(record)
    if len(lanes) == 1:
        return records
    return [record for lane in lanes.values() for record in lane]


def _json(value: Any, node: str, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StateError(f"node {node!r}: {what} cannot be stored as JSON: {exc}") from exc


def _succeeded(e: NodeSucceeded) -> tuple[Any, ...] | None:
    if e.reused:  # replayed from this very store on --resume: already durable
        return None
    if e.batch is None and e.index is None and e.action is None and not e.context_updates:
        return (_NODE_OK, e.node, e.attempt, e.duration_ms, e.output_json, e.ts)
    updates = _json(dict(e.context_updates), e.node, "ctx.set()") if e.context_updates else None
    return (_NODE, e.node, e.batch, e.index, "succeeded", e.attempt, e.duration_ms, e.action,
            e.output_json, None, None, None, updates, e.ts)  # fmt: skip


def _failed(e: NodeFailed) -> tuple[Any, ...]:
    return (_NODE, e.node, e.batch, e.index, "failed", e.attempt, e.duration_ms, None,
            None, e.error_type, e.message, e.traceback, None, e.ts)  # fmt: skip


def _skipped(e: NodeSkipped) -> tuple[Any, ...]:
    return (_NODE, e.node, None, None, "skipped", None, None, None,
            None, None, None, None, None, e.ts)  # fmt: skip


def _recovered(e: NodeRecovered) -> tuple[Any, ...]:
    return (_RECOVERED, e.node, _json(e.output, e.node, "the fallback output"), e.fallback, e.ts)


def _batch_finished(e: BatchFinished) -> tuple[Any, ...]:
    return (_BATCH_FINISHED, e.node, e.status, e.total, e.succeeded, e.failed, e.output_key, e.ts)


# The record of each event the store keeps (None: nothing to record); other events are not kept.
ENCODERS: dict[type[Event], Callable[[Any], tuple[Any, ...] | None]] = {
    NodeSucceeded: _succeeded,
    NodeFailed: _failed,
    NodeSkipped: _skipped,
    NodeRecovered: _recovered,
    BatchStarted: lambda e: (_BATCH_STARTED, e.node, e.total, e.ts),
    BatchFinished: _batch_finished,
    RunStarted: lambda e: (_RUN_STARTED, e.ts, e.resumed),
    RunFinished: lambda e: (_RUN_FINISHED, e.ts, e.status, e.duration_ms),
}


def logs_record(e: NodeSucceeded | NodeFailed | NodeRetry) -> tuple[Any, ...]:
    """What one attempt printed; a retry's attempt keeps its own row."""
    return (LOGS, e.node, e.attempt, e.logs, e.ts)


def chunk_record(batch: str, group: list[NodeSucceeded | ItemsSucceeded]) -> tuple[Any, ...]:
    """One record for a group of item successes: single items' events and chunks' events
    (`ItemsSucceeded`). Each output is the worker's JSON text, joined into an array as it is:
    never decoded or encoded again."""
    first = group[0]
    if len(group) == 1 and type(first) is ItemsSucceeded:  # one chunk: its columns as they are
        durations = _micros(first.durations_ms)
        n = len(first.indices)
        return (_CHUNK, batch, n, _ints(first.indices), None, durations, None,
                first.outputs_json, first.ts)  # fmt: skip
    if len(group) == 1:  # one item (a loop's iteration, handed over before the run waits)
        assert isinstance(first, NodeSucceeded)
        attempt = None if first.attempt == 1 else f"[{first.attempt}]"
        action = None if first.action is None else json.dumps([first.action])
        micros = f"[{round(first.duration_ms * 1000)}]"
        return (_CHUNK, batch, 1, f"[{first.index}]", attempt, micros, action,
                f"[{first.output_json}]", first.ts)  # fmt: skip
    indices: list[int] = []
    attempts: list[int] = []
    times: list[float] = []
    actions: list[str | None] = []
    texts: list[str] = []
    for e in group:
        if type(e) is ItemsSucceeded:
            n = len(e.indices)
            indices += e.indices
            attempts += [1] * n
            times += e.durations_ms
            actions += [None] * n
            if n:
                texts.append(e.outputs_json[1:-1])
        else:
            assert isinstance(e, NodeSucceeded)
            indices.append(cast(int, e.index))
            attempts.append(e.attempt)
            times.append(e.duration_ms)
            actions.append(e.action)
            texts.append(e.output_json)
    size = len(indices)
    return (
        _CHUNK,
        batch,
        size,
        _ints(indices),
        None if attempts.count(1) == size else _ints(attempts),
        _micros(times),
        None if actions.count(None) == size else json.dumps(actions),
        "[" + ",".join(texts) + "]",
        group[-1].ts,
    )


def _micros(ms: Sequence[float]) -> str:
    """Durations in ms as a JSON array of whole microseconds."""
    return _ints(list(map(round, map(mul, ms, repeat(1000)))))


def _ints(values: Sequence[Any]) -> str:
    """A JSON array of ints: a list's `str` is one (`[1, 2]`), and builds in C."""
    return str(values if type(values) is list else list(values))


def weight(records: list[tuple[Any, ...]]) -> int:
    """The items `records` hold, as the backlog counts them: a chunk its items, a marker none."""
    n: int = len(records) + sum([r[_SIZE] - 1 for r in records if r[0] == _CHUNK])
    return n - 1 if records[-1][0] in (FLUSH, STOP) else n
