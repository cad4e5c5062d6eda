"""Reading runs back: a whole run for ``--resume`` (`load_run`), summaries for ``flowrun runs``.

Reads open the database read-only and never hold the run's lock, so a run can be listed while
another process records it. Outputs are JSON text, decoded with ``json.loads`` only: nothing is
ever unpickled. A batch item's success may sit in an ``item_chunks`` row as well as in a
``nodes`` row; a success is final (a succeeded item is never run again), so the chunk wins.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from flowrun.errors import StateError
from flowrun.store.db import (
    DB_NAME,
    check_schema,
    checked_id,
    connect,
    in_use,
    run_ids,
    runs_dir,
    translated,
)
from flowrun.store.records import RunMeta

_SECOND = len("20261128-055533")  # run ids sharing this prefix started in the same second
NODE_STATUSES = ("succeeded", "failed", "skipped", "recovered")
BATCH_STATUSES = ("running", "succeeded", "failed")
RUN_STATUSES = ("completed", "failed", "cancelled")
_NUMBER = {int, float}


class _Damaged(Exception):
    """A value the writer could not have stored: the run's file is damaged or was edited."""


def _kind(value: object) -> str:
    if value is None:
        return "null"
    names = {str: "text", int: "an integer", float: "a number", bytes: "binary data",
             list: "a JSON array", dict: "a JSON object"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _text(value: object, what: str, *, null: bool = False) -> Any:
    if type(value) is not str and not (null and value is None):
        raise _Damaged(f"{what} is {_kind(value)}, not text")
    return value


def _int(value: object, what: str, *, null: bool = False, least: int = 0) -> Any:
    if null and value is None:
        return None
    if type(value) is not int or value < least:
        raise _Damaged(f"{what} is {_kind(value)} {value!r:.40}, not an integer >= {least}")
    return value


def _number(value: object, what: str, *, null: bool = False) -> Any:
    if null and value is None:
        return None
    try:
        finite = type(value) in _NUMBER and math.isfinite(value)  # type: ignore[arg-type]
    except OverflowError:  # an integer beyond a double, from JSON text
        finite = False
    if not finite:
        raise _Damaged(f"{what} is {_kind(value)} {value!r:.40}, not a number")
    return value


def _one_of(value: object, allowed: tuple[str, ...], what: str, *, null: bool = False) -> Any:
    if not (null and value is None) and value not in allowed:
        found = "null" if value is None else f"{value!r:.40}"
        raise _Damaged(f"{what} is {found}, not one of {', '.join(allowed)}")
    return value


def _decoded(value: object, what: str, *, null: bool = False, kind: type | None = None) -> Any:
    """JSON text decoded; `kind`: the type the decoded value must have."""
    if null and value is None:
        return None
    if type(value) is not str:
        raise _Damaged(f"{what} is {_kind(value)}, not JSON text")
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise _Damaged(f"{what} is not valid JSON ({exc})") from exc
    if kind is not None and type(decoded) is not kind:
        raise _Damaged(f"{what} holds {_kind(decoded)}, not {_kind(kind())}")
    return decoded


def _array(
    value: object, what: str, size: int | None, types: set[type], *, least: int = 0
) -> list[Any]:
    """A JSON array of `size` elements (None: any number), each of `types` (numbers at least
    `least`)."""
    decoded: list[Any] = _decoded(value, what, kind=list)
    if size is not None and len(decoded) != size:
        raise _Damaged(f"{what} has {len(decoded)} elements, not {size}")
    found = set(map(type, decoded))
    if not found <= types:
        names = ("null" if t is type(None) else t.__name__ for t in found - types)
        wrong = ", ".join(sorted(names))
        raise _Damaged(f"{what} holds {wrong}")
    numbers = [v for v in decoded if type(v) in _NUMBER] if found & _NUMBER else []
    if numbers and min(numbers) < least:
        raise _Damaged(f"{what} holds {min(numbers)!r}, below {least}")
    return decoded


@contextmanager
def _checked(db: Path) -> Iterator[None]:
    """Damaged values (and SQLite or JSON errors) become a StateError naming the run and what
    is wrong, never a TypeError deep in whatever reads the value later."""
    with translated(db):
        try:
            yield
        except _Damaged as exc:
            raise StateError(_damaged(db, str(exc))) from exc


def _damaged(db: Path, what: str) -> str:
    return f"run {db.parent.name} is damaged: {what} ({db})"


@dataclass(frozen=True, slots=True)
class StoredError:
    type: str
    message: str
    traceback: str


@dataclass(frozen=True, slots=True)
class StoredNode:
    """The last record of a task node or batch item."""

    status: str  # succeeded | failed | skipped | recovered
    attempts: int | None
    duration_ms: float | None
    output: Any
    action: str | None
    error: StoredError | None
    fallback: str | None = None


@dataclass(frozen=True, slots=True)
class StoredBatch:
    total: int
    status: str  # running | succeeded | failed
    succeeded: int | None = None
    failed: int | None = None
    output_key: str | None = None


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A run as recorded: what ``--resume`` needs to skip finished work."""

    meta: RunMeta
    status: str | None  # the latest start's RunFinished status; None if it never finished
    starts: int  # RunStarted records: 1 + the number of resumes
    nodes: dict[str, StoredNode]
    items: dict[str, dict[int, StoredNode]]
    batches: dict[str, StoredBatch]
    context_updates: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    blueprint_id: str
    blueprint_path: str
    status: str  # completed | failed | cancelled | running | interrupted | corrupt
    started: float | None
    duration_s: float | None
    error: str | None = None  # why a run is `corrupt`


def list_runs(state_dir: Path, limit: int = 20) -> list[RunSummary]:
    """The newest `limit` runs, newest first; an unreadable run is listed as ``corrupt``."""
    ids = sorted(run_ids(state_dir), reverse=True)
    cut = limit
    while 0 < cut < len(ids) and ids[cut][:_SECOND] == ids[cut - 1][:_SECOND]:
        cut += 1  # ids order runs by the second they started; `started` orders within it
    runs = [_summary(runs_dir(state_dir) / run_id) for run_id in ids[:cut]]
    runs.sort(key=lambda r: (r.run_id[:_SECOND], r.started or 0.0, r.run_id), reverse=True)
    return runs[:limit]


def resolve_run_dir(state_dir: Path, run_id: str, blueprint_id: str | None = None) -> Path:
    """The directory of run `run_id`; ``latest`` is the most recently started run (of
    `blueprint_id`, when given)."""
    root = runs_dir(state_dir)
    if run_id == "latest":
        return root / _latest(state_dir, blueprint_id)
    if not (root / checked_id(run_id)).is_dir():
        known = sorted(run_ids(state_dir), reverse=True)
        hint = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "") if known else "none"
        raise StateError(f"no run {run_id!r} under {root} (runs: {hint})")
    return root / run_id


def _latest(state_dir: Path, blueprint_id: str | None) -> str:
    """The id of the newest usable run (of `blueprint_id`). Unusable runs (a run directory
    left by a crash, a damaged database) are skipped, and named: on stderr when an older run
    is chosen, in the error when none is left."""
    skipped: list[RunSummary] = []
    for r in list_runs(state_dir, limit=max(1, len(run_ids(state_dir)))):
        if r.status == "corrupt":
            skipped.append(r)
        elif blueprint_id in (None, r.blueprint_id):
            for s in skipped:
                note = f"flowrun: --resume latest: skipped run {s.run_id}: {s.error}"
                print(note, file=sys.stderr)
            return r.run_id
    of = "" if blueprint_id is None else f" of blueprint '{blueprint_id}'"
    root = runs_dir(state_dir)
    if not skipped:
        raise StateError(_nothing_to_resume(state_dir, blueprint_id))
    unusable = "; ".join(f"{s.run_id}: {s.error}" for s in skipped)
    raise StateError(f"no run to resume: {root} holds no usable runs{of} (skipped {unusable})")


def _nothing_to_resume(state_dir: Path, blueprint_id: str | None) -> str:
    """Where `--resume latest` looked and what it found there (often: the wrong directory)."""
    root = runs_dir(state_dir).absolute()
    of = "" if blueprint_id is None else f" of blueprint '{blueprint_id}'"
    found = list_runs(state_dir, limit=max(1, len(run_ids(state_dir))))
    if found:
        others = sorted({r.blueprint_id or r.blueprint_path for r in found})
        what = f"it holds {len(found)} run(s) of {', '.join(repr(o) for o in others[:5])}"
    else:
        what = "it holds no runs" if root.is_dir() else "it does not exist"
    return (
        f"no run to resume{of} in {root}: {what}. Runs are kept under the current directory "
        "(.flowrun); pass the directory the run started in with -C DIR, or --state-dir DIR "
        "(or set FLOWRUN_STATE_DIR)"
    )


def read_meta(conn: sqlite3.Connection, db: Path) -> RunMeta:
    """The run description stored when the run was created."""
    with translated(db):
        row = conn.execute("SELECT value FROM meta WHERE key = 'run'").fetchone()
        try:
            if row is None:
                raise _Damaged("meta has no 'run' row")
            return _meta(row[0])
        except _Damaged as exc:
            raise StateError(_damaged(db, f"the run description: {exc}")) from exc


_META_TYPES = {"context": dict, "options": dict, "started": float}


def _meta(value: object) -> RunMeta:
    raw = _decoded(value, "the value", kind=dict)
    names = [f.name for f in fields(RunMeta)]
    missing = [n for n in names if n not in raw]
    if missing or len(raw) != len(names):
        unknown = sorted(set(raw) - set(names))
        raise _Damaged(f"missing {', '.join(missing) or '-'}; unknown {', '.join(unknown) or '-'}")
    for name in names:
        want = _META_TYPES.get(name, str)
        if want is float:
            _number(raw[name], name)
        elif type(raw[name]) is not want:
            raise _Damaged(f"{name} is {_kind(raw[name])}, not {_kind(want())}")
    return RunMeta(**raw)


def load_run(db: Path, meta: RunMeta) -> StoredRun:
    """Everything committed to `db` so far, decoded with ``json.loads``."""
    with _checked(db):
        conn = connect(db, mode="ro")
        try:
            return _read_run(conn, meta)
        finally:
            conn.close()


def _summary(run_dir: Path) -> RunSummary:
    db = run_dir / DB_NAME
    try:
        with translated(db):
            conn = connect(db, mode="ro")
            try:
                check_schema(conn, db)
                meta = read_meta(conn, db)
                last = conn.execute("SELECT status, duration_ms FROM runs ORDER BY seq DESC")
                status, duration_ms = last.fetchone() or (None, None)
            finally:
                conn.close()
            with _checked(db):
                _one_of(status, RUN_STATUSES, "the last start's status", null=True)
                _number(duration_ms, "the last start's duration_ms", null=True)
    except StateError as exc:
        return RunSummary(run_dir.name, "", "", "corrupt", None, None, error=str(exc))
    if status is None:
        status = "running" if in_use(run_dir) else "interrupted"
    duration_s = None if duration_ms is None else duration_ms / 1000
    return RunSummary(
        meta.run_id, meta.blueprint_id, meta.blueprint_path, status, meta.started, duration_s
    )


def _read_run(conn: sqlite3.Connection, meta: RunMeta) -> StoredRun:
    nodes: dict[str, StoredNode] = {}
    items: dict[str, dict[int, StoredNode]] = {}
    updates: dict[str, Any] = {}
    rows = conn.execute(
        "SELECT node, batch, idx, status, attempt, duration_ms, output, action, error_type,"
        " message, traceback, updates, fallback FROM nodes ORDER BY rowid"
    )
    for row in rows:
        node, batch, idx, status, attempt, ms, output, action, etype, msg, tb, upd, fb = row
        where = f"nodes row {node!r:.60}"
        _text(node, f"{where}: node")
        _text(batch, f"{where}: batch", null=True)
        _one_of(status, NODE_STATUSES, f"{where}: status")
        _int(attempt, f"{where}: attempt", null=True)
        _number(ms, f"{where}: duration_ms", null=True)
        for value, column in ((action, "action"), (etype, "error_type"), (msg, "message"),
                              (tb, "traceback"), (fb, "fallback")):  # fmt: skip
            _text(value, f"{where}: {column}", null=True)
        error = None if etype is None else StoredError(etype, msg or "", tb or "")
        out = _decoded(output, f"{where}: output", null=True)
        stored = StoredNode(status, attempt, ms, out, action, error, fb)
        if batch is None:
            nodes[node] = stored
        else:
            items.setdefault(batch, {})[_int(idx, f"{where}: idx")] = stored
        if upd is not None:
            updates.update(_decoded(upd, f"{where}: updates", kind=dict))
    _read_chunks(conn, items)
    batches = {}
    for batch, total, status, succeeded, failed, output_key in conn.execute(
        "SELECT batch, total, status, succeeded, failed, output_key FROM batches"
    ):
        where = f"batches row {batch!r:.60}"
        batches[_text(batch, f"{where}: batch")] = StoredBatch(
            _int(total, f"{where}: total"),
            _one_of(status, BATCH_STATUSES, f"{where}: status"),
            _int(succeeded, f"{where}: succeeded", null=True),
            _int(failed, f"{where}: failed", null=True),
            _text(output_key, f"{where}: output_key", null=True),
        )
    starts = _starts(conn)
    status = starts[-1][1] if starts else None
    return StoredRun(meta, status, len(starts), nodes, items, batches, updates)


def _starts(conn: sqlite3.Connection) -> list[tuple[float, str | None, float | None]]:
    """(started, status, duration_ms) of each start of the run, the first first."""
    starts = []
    for seq, (started, status, ms) in enumerate(
        conn.execute("SELECT started, status, duration_ms FROM runs ORDER BY seq"), 1
    ):
        where = f"runs row {seq}"
        starts.append((
            _number(started, f"{where}: started"),
            _one_of(status, RUN_STATUSES, f"{where}: status", null=True),
            _number(ms, f"{where}: duration_ms", null=True),
        ))  # fmt: skip
    return starts


def _read_chunks(conn: sqlite3.Connection, items: dict[str, dict[int, StoredNode]]) -> None:
    """Add the chunks' successes to `items`. A success is final (a succeeded item is never run
    again), so it wins over any row of the same item, whatever their order."""
    chunks = conn.execute(
        "SELECT batch, size, indices, attempts, durations_us, actions, outputs FROM item_chunks"
    )
    for number, (batch, size, indices, attempts, durations_us, actions, outputs) in enumerate(
        chunks, 1
    ):
        where = f"item_chunks row {number} (batch {batch!r:.60})"
        stored = items.setdefault(_text(batch, f"{where}: batch"), {})
        n = _int(size, f"{where}: size")
        # Each column has `size` elements of its type: a damaged chunk is an error, never
        # items matched with the wrong outputs.
        columns = (
            _array(indices, f"{where}: indices", n, {int}),
            [1] * n if attempts is None else _array(attempts, f"{where}: attempts", n, {int}),
            _array(durations_us, f"{where}: durations_us", n, _NUMBER),
            [None] * n
            if actions is None
            else _array(actions, f"{where}: actions", n, {str, type(None)}),
            _decoded(outputs, f"{where}: outputs", kind=list),
        )
        if len(columns[-1]) != n:
            raise _Damaged(f"{where}: outputs has {len(columns[-1])} elements, not {n}")
        for index, attempt, us, action, output in zip(*columns, strict=True):
            stored[index] = StoredNode("succeeded", attempt, us / 1000, output, action, None)


@dataclass(frozen=True, slots=True)
class Span:
    node: str
    started: float
    finished: float | None
    status: str | None


@dataclass(frozen=True, slots=True)
class Samples:
    """A batch's items running over time: the peak in each `step` seconds from `start`."""

    start: float
    step: float
    peaks: list[int]


@dataclass(frozen=True, slots=True)
class RunDetails:
    """One past run, for ``flowrun runs show``: what ``--resume`` reads, plus how it went."""

    run: StoredRun
    summary: RunSummary
    starts: list[tuple[float, str | None, float | None]]  # (started, status, duration_ms)
    spans: dict[str, Span]
    samples: dict[str, Samples]
    logged: dict[str, int]  # node or item -> attempts that printed something


def load_details(state_dir: Path, run_id: str) -> RunDetails:
    """Run `run_id` (or ``latest``) read back whole, read-only; a run recorded before schema
    version 3 has no spans, samples or logs."""
    run_dir = resolve_run_dir(state_dir, run_id)
    db = run_dir / DB_NAME
    if not db.is_file():
        raise StateError(f"{run_dir} is not a flowrun run directory (no {DB_NAME})")
    summary = _summary(run_dir)
    if summary.status == "corrupt":
        raise StateError(summary.error or f"cannot read run state {db}")
    with _checked(db):
        conn = connect(db, mode="ro")
        try:
            check_schema(conn, db)
            meta = read_meta(conn, db)
            run = _read_run(conn, meta)
            starts = _starts(conn)
            spans: dict[str, Span] = {}
            samples: dict[str, Samples] = {}
            logged: dict[str, int] = {}
            if _has(conn, "spans"):
                for node, started, finished, status in conn.execute(
                    "SELECT node, started, finished, status FROM spans ORDER BY started"
                ):
                    where = f"spans row {node!r:.60}"
                    spans[_text(node, f"{where}: node")] = Span(
                        node,
                        _number(started, f"{where}: started"),
                        _number(finished, f"{where}: finished", null=True),
                        _text(status, f"{where}: status", null=True),
                    )
                for batch, start, step, peaks in conn.execute(
                    "SELECT batch, start, step, peaks FROM samples"
                ):
                    where = f"samples row {batch!r:.60}"
                    samples[_text(batch, f"{where}: batch")] = Samples(
                        _number(start, f"{where}: start"),
                        _number(step, f"{where}: step"),
                        _array(peaks, f"{where}: peaks", None, {int}),
                    )
                for node, count in conn.execute(
                    "SELECT node, COUNT(*) FROM logs GROUP BY node ORDER BY MIN(ts)"
                ):
                    logged[_text(node, "logs row: node")] = count
        finally:
            conn.close()
    return RunDetails(run, summary, starts, spans, samples, logged)


def read_logs(state_dir: Path, run_id: str, node: str) -> list[tuple[int, str]]:
    """What `node` (a task node or an item `B[3]`) printed: (attempt, text), first attempt first."""
    db = resolve_run_dir(state_dir, run_id) / DB_NAME
    with translated(db):
        conn = connect(db, mode="ro")
        try:
            if not _has(conn, "logs"):
                return []
            rows = conn.execute(
                "SELECT attempt, text FROM logs WHERE node = ? ORDER BY attempt", (node,)
            )
            return [(attempt, text) for attempt, text in rows]
        finally:
            conn.close()


def _has(conn: sqlite3.Connection, table: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    return found is not None
