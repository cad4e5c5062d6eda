"""The durable run store: round trips, item groups, resume reads, listing, errors at the
boundary, an older schema, kill -9."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowrun.errors import StateError
from flowrun.events import (
    BatchFinished,
    BatchStarted,
    NodeFailed,
    NodeRecovered,
    NodeRetry,
    NodeSkipped,
    NodeStarted,
    NodeSucceeded,
    RunFinished,
    RunStarted,
)
from flowrun.store import (
    DB_NAME,
    GROUP_MAX,
    MAX_BACKLOG,
    RunMeta,
    RunStore,
    StoredBatch,
    StoredError,
    StoredNode,
    list_runs,
    new_run_id,
)

REPO = Path(__file__).resolve().parent.parent
T0 = 1_790_000_000.0  # a fixed start time, 2026-09-21 UTC


def meta(run_id: str, started: float = T0, **context: object) -> RunMeta:
    return RunMeta(
        run_id=run_id,
        blueprint_id="batch-workflow",
        blueprint_path="blueprints/batch.yaml",
        blueprint_sha256="ab" * 32,
        context=dict(context),
        options={"concurrency": 4, "executor": "thread", "fail_fast": False},
        started=started,
    )


def item_ok(
    batch: str, index: int, output: object, attempt: int = 1, **fields: Any
) -> NodeSucceeded:
    return NodeSucceeded(
        ts=T0,
        node=f"{batch}[{index}]",
        batch=batch,
        index=index,
        attempt=attempt,
        output=output,
        output_json=json.dumps(output),
        **fields,
    )


def item_failed(batch: str, index: int) -> NodeFailed:
    return NodeFailed(
        ts=T0,
        node=f"{batch}[{index}]",
        batch=batch,
        index=index,
        attempt=2,
        error_type="ValueError",
        message="bad item",
        traceback="Traceback ...",
    )


def record(state_dir: Path, run_id: str, *events: object, started: float = T0) -> None:
    with RunStore.create(state_dir, meta(run_id, started)) as store:
        for event in events:
            store(event)  # type: ignore[arg-type]


def query(state_dir: Path, run_id: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows as committed, read through a connection of the test's own."""
    uri = (state_dir / "runs" / run_id / DB_NAME).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait for the writer thread to commit; the deadline only keeps a broken store from
    hanging the test."""
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


def test_new_run_id_sorts_by_time_and_is_unique() -> None:
    first, second = new_run_id(T0), new_run_id(T0 + 1)
    assert first.startswith("20260921-") and len(first) == len("20261128-055533-3f9a")
    assert first < second
    assert len({new_run_id(T0) for _ in range(50)}) > 1


def test_every_event_kind_round_trips(tmp_path: Path) -> None:
    output = {"rows": [1, 2.5, None, "é"], "ok": True}
    events = [
        RunStarted(ts=T0, run_id="r1", blueprint="batch-workflow"),
        NodeStarted(ts=T0, node="start"),  # not stored: starts and retries carry no result
        NodeRetry(ts=T0, node="start", error_type="OSError"),
        NodeSucceeded(
            ts=T0 + 1,
            node="start",
            attempt=2,
            duration_ms=12.5,
            action="big",
            output=output,
            output_json=json.dumps(output),
            context_updates={"seen": 3},
        ),
        BatchStarted(ts=T0 + 2, node="B", total=3),
        item_ok("B", 0, 10),
        item_failed("B", 1),
        item_ok("B", 2, [3]),
        BatchFinished(
            ts=T0 + 3,
            node="B",
            status="succeeded",
            total=3,
            succeeded=2,
            failed=1,
            output_key="doubled",
            output=[10, None, [3]],
        ),
        NodeSkipped(ts=T0 + 4, node="other-branch"),
        NodeFailed(
            ts=T0 + 5,
            node="flaky",
            attempt=3,
            error_type="KeyError",
            message="'x'",
            traceback="Traceback (most recent call last): ...",
        ),
        NodeRecovered(ts=T0 + 6, node="flaky", fallback="backup", output={"default": 0}),
        NodeFailed(ts=T0 + 7, node="broken", error_type="RuntimeError", message="boom"),
        RunFinished(ts=T0 + 8, status="failed", duration_ms=8000.0),
    ]
    record(tmp_path, "r1", *events)

    with RunStore.open(tmp_path, "r1") as store:
        run = store.load()
    assert run.meta == meta("r1")
    assert (run.status, run.starts) == ("failed", 1)
    assert run.nodes["start"] == StoredNode("succeeded", 2, 12.5, output, "big", None)
    assert run.nodes["other-branch"].status == "skipped"
    assert run.nodes["flaky"] == StoredNode(
        "recovered",
        3,
        0.0,
        {"default": 0},
        None,
        StoredError("KeyError", "'x'", "Traceback (most recent call last): ..."),
        "backup",
    )
    assert run.nodes["broken"].error == StoredError("RuntimeError", "boom", "")
    assert set(run.nodes) == {"start", "other-branch", "flaky", "broken"}
    assert {i: (n.status, n.output) for i, n in run.items["B"].items()} == {
        0: ("succeeded", 10),
        1: ("failed", None),
        2: ("succeeded", [3]),
    }
    assert run.items["B"][1].error == StoredError("ValueError", "bad item", "Traceback ...")
    assert run.batches == {"B": StoredBatch(3, "succeeded", 2, 1, "doubled")}
    assert run.context_updates == {"seen": 3}


def test_output_json_is_stored_as_given(tmp_path: Path) -> None:
    text = '{"b": 1, "a": [1.0, 1e+300]}'  # key order and number spelling as the worker wrote
    record(tmp_path, "r1", NodeSucceeded(ts=T0, node="n", output_json=text))
    with sqlite3.connect(tmp_path / "runs" / "r1" / DB_NAME) as conn:
        assert conn.execute("SELECT output FROM nodes").fetchone() == (text,)


def test_a_fresh_run_loads_empty_and_unfinished(tmp_path: Path) -> None:
    with RunStore.create(tmp_path, meta("r1", color="blue")) as store:
        run = store.load()
    assert (run.status, run.starts, run.nodes, run.items, run.batches) == (None, 0, {}, {}, {})
    assert run.meta.context == {"color": "blue"}


def test_a_later_record_replaces_an_earlier_one(tmp_path: Path) -> None:
    record(
        tmp_path,
        "r1",
        RunStarted(ts=T0),
        BatchStarted(ts=T0, node="B", total=2),
        item_ok("B", 0, 0),
        item_failed("B", 1),
        RunFinished(ts=T0, status="failed"),
    )
    with RunStore.open(tmp_path, "r1") as store:  # the resumed run re-runs the failed item
        store(RunStarted(ts=T0 + 9, resumed=True))
        store(BatchStarted(ts=T0 + 9, node="B", total=2, done=1))
        assert store.load().batches["B"].status == "running"
        assert store.load().status is None  # the resumed start has not finished yet
        store(item_ok("B", 1, 1, attempt=1))
        store(NodeSucceeded(ts=T0 + 9, node="x", context_updates={"k": "first"}))
        store(NodeSucceeded(ts=T0 + 9, node="y", context_updates={"k": "second"}))
        store(RunFinished(ts=T0 + 10, status="completed"))
    with RunStore.open(tmp_path, "r1") as store:
        run = store.load()
    assert {i: n.status for i, n in run.items["B"].items()} == {0: "succeeded", 1: "succeeded"}
    assert run.items["B"][1].error is None
    assert (run.status, run.starts) == ("completed", 2)
    assert run.context_updates == {"k": "second"}  # merged in record order


def test_a_reused_success_is_not_written_again(tmp_path: Path) -> None:
    record(tmp_path, "r1", item_ok("B", 0, "first"))
    with RunStore.open(tmp_path, "r1") as store:
        store(NodeSucceeded(ts=T0, node="B[0]", batch="B", index=0, output_json='"x"', reused=True))
        assert store.load().items["B"][0].output == "first"


def test_latest_is_the_most_recently_started_run(tmp_path: Path) -> None:
    record(tmp_path, "20260921-100000-ffff", started=T0)
    record(tmp_path, "20260921-100005-aaaa", started=T0 + 5)
    record(tmp_path, "20260921-100005-0000", started=T0 + 5.5)  # same second, started later
    with RunStore.open(tmp_path, "latest") as store:
        assert store.run_id == "20260921-100005-0000"
    with pytest.raises(StateError, match=r"no run to resume in .*: it does not exist"):
        RunStore.open(tmp_path / "empty", "latest")


def test_list_runs_newest_first_with_status(tmp_path: Path) -> None:
    record(
        tmp_path,
        "20260921-100000-0001",
        RunFinished(ts=T0, status="completed", duration_ms=1500.0),
        started=T0,
    )
    record(tmp_path, "20260921-100001-0002", RunFinished(ts=T0, status="cancelled"), started=T0 + 1)
    record(tmp_path, "20260921-100002-0003", RunStarted(ts=T0), started=T0 + 2)
    corrupt = tmp_path / "runs" / "20260921-100003-0004"
    corrupt.mkdir()
    (corrupt / DB_NAME).write_bytes(b"\x00 not a database " * 100)
    with RunStore.create(tmp_path, meta("20260921-100004-0005", T0 + 4)):
        runs = list_runs(tmp_path)

    assert [(r.run_id[-4:], r.status) for r in runs] == [
        ("0005", "running"),
        ("0004", "corrupt"),
        ("0003", "interrupted"),
        ("0002", "cancelled"),
        ("0001", "completed"),
    ]
    assert runs[-1].duration_s == 1.5 and runs[-1].started == T0
    assert runs[-1].blueprint_path == "blueprints/batch.yaml"
    assert str(corrupt / DB_NAME) in (runs[1].error or "")
    assert [r.run_id[-4:] for r in list_runs(tmp_path, limit=2)] == ["0005", "0004"]
    assert list_runs(tmp_path / "nowhere") == []


def test_missing_run_names_the_known_runs(tmp_path: Path) -> None:
    record(tmp_path, "r1")
    with pytest.raises(StateError) as info:
        RunStore.open(tmp_path, "r2")
    assert str(info.value) == f"no run 'r2' under {tmp_path / 'runs'} (runs: r1)"
    with pytest.raises(StateError, match="invalid run id"):
        RunStore.open(tmp_path, "../r1")


def bad_run(tmp_path: Path, content: bytes | None) -> Path:
    run_dir = tmp_path / "runs" / "bad"
    run_dir.mkdir(parents=True)
    if content is not None:
        (run_dir / DB_NAME).write_bytes(content)
    return run_dir / DB_NAME


def test_a_foreign_file_is_a_state_error(tmp_path: Path) -> None:
    db = bad_run(tmp_path, b"id: not-a-database\n" * 200)
    with pytest.raises(StateError, match="file is not a database") as info:
        RunStore.open(tmp_path, "bad")
    assert str(db) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_an_sqlite_db_without_our_schema_is_a_state_error(tmp_path: Path) -> None:
    db = bad_run(tmp_path, None)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    with pytest.raises(StateError, match="not a flowrun run") as info:
        RunStore.open(tmp_path, "bad")
    assert str(db) in str(info.value)
    with sqlite3.connect(db) as conn:  # left as it was found
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_a_dir_without_a_database_is_a_state_error(tmp_path: Path) -> None:
    bad_run(tmp_path, None)
    with pytest.raises(StateError, match="is not a flowrun run directory"):
        RunStore.open(tmp_path, "bad")


def test_a_schema_from_the_future_is_a_state_error(tmp_path: Path) -> None:
    record(tmp_path, "r1")
    db = tmp_path / "runs" / "r1" / DB_NAME
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StateError, match="newer flowrun") as info:
        RunStore.open(tmp_path, "r1")
    assert str(db) in str(info.value)
    assert list_runs(tmp_path)[0].status == "corrupt"


def test_a_run_is_locked_while_open(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, meta("r1"))
    with pytest.raises(StateError, match="run r1 is in use by another flowrun process"):
        RunStore.open(tmp_path, "r1")
    store.close()
    store.close()  # idempotent
    RunStore.open(tmp_path, "r1").close()


def test_a_failed_write_is_reported_by_flush_and_close(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, meta("r1"))
    store(NodeSkipped(ts=None, node="n"))  # type: ignore[arg-type]  # violates NOT NULL
    with pytest.raises(StateError, match=re.escape(f"cannot record run state in {tmp_path}")):
        store.flush()
    with pytest.raises(StateError, match="NOT NULL") as info:
        store.close()
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
    store.close()  # reported once
    RunStore.open(tmp_path, "r1").close()  # the lock was released all the same


def test_create_refuses_an_existing_run(tmp_path: Path) -> None:
    record(tmp_path, "r1")
    with pytest.raises(StateError, match="already exists"):
        RunStore.create(tmp_path, meta("r1"))


def test_non_json_values_fail_at_the_sink(tmp_path: Path) -> None:
    with RunStore.create(tmp_path, meta("r1")) as store:
        with pytest.raises(StateError, match=r"node .n.: the fallback output"):
            store(NodeRecovered(ts=T0, node="n", fallback="f", output=float("nan")))
        with pytest.raises(StateError, match="node 'm'"):
            store(NodeSucceeded(ts=T0, node="m", context_updates={"k": object()}))
    with pytest.raises(StateError, match="closed"):
        store(NodeSkipped(ts=T0, node="late"))
    with pytest.raises(StateError, match="not JSON"):
        RunStore.create(tmp_path, meta("r2", when=object()))


def test_item_successes_are_recorded_in_groups(tmp_path: Path) -> None:
    n = 2 * GROUP_MAX + 88
    order = [(i * 7) % n for i in range(n)]  # items finish out of order
    events = []
    for k, i in enumerate(order):
        attempt = 2 if k == 3 else 1  # a retried item in the first group only
        action = "big" if i % 2 and k >= GROUP_MAX else None  # actions in the later groups
        output = {"i": i, "name": f"item-{i}"} if i % 3 else [i, None, 1.5]
        events.append(item_ok("B", i, output, attempt, duration_ms=i / 1000, action=action))
    record(tmp_path, "r1", BatchStarted(ts=T0, node="B", total=n), *events)

    chunks = query(tmp_path, "r1", "SELECT size, attempts, actions FROM item_chunks ORDER BY rowid")
    assert [size for size, _, _ in chunks] == [GROUP_MAX, GROUP_MAX, 88]
    assert [attempts is None for _, attempts, _ in chunks] == [False, True, True]
    assert [actions is None for _, _, actions in chunks] == [True, False, False]
    assert query(tmp_path, "r1", "SELECT COUNT(*) FROM nodes") == [(0,)]
    (outputs,) = query(tmp_path, "r1", "SELECT outputs FROM item_chunks ORDER BY rowid LIMIT 1")
    # the workers' JSON texts, joined as given
    assert outputs == (f"[{','.join(e.output_json for e in events[:GROUP_MAX])}]",)

    with RunStore.open(tmp_path, "r1") as store:
        items = store.load().items["B"]
    assert items == {
        e.index: StoredNode("succeeded", e.attempt, e.duration_ms, e.output, e.action, None)
        for e in events
        if e.index is not None
    }
    assert len(items) == n


def test_a_success_wins_over_a_failure_recorded_before_or_after_it(tmp_path: Path) -> None:
    record(
        tmp_path,
        "r1",
        item_failed("B", 0),
        item_ok("B", 0, "zero"),  # a chunk committed after the failure's row
        item_ok("B", 1, "one"),
        item_failed("B", 1),  # a row committed after the chunk
        item_failed("B", 2),
    )
    with RunStore.open(tmp_path, "r1") as store:
        items = store.load().items["B"]
    assert {i: (n.status, n.output, n.error is None) for i, n in items.items()} == {
        0: ("succeeded", "zero", True),
        1: ("succeeded", "one", True),
        2: ("failed", None, False),
    }


def test_idle_and_any_other_record_hand_the_groups_over(tmp_path: Path) -> None:
    def committed() -> list[tuple[Any, ...]]:
        return query(tmp_path, "r1", "SELECT batch, size FROM item_chunks ORDER BY rowid")

    with RunStore.create(tmp_path, meta("r1")) as store:
        for i in range(3):
            store(item_ok("A", i, i))
        store(item_ok("B", 0, 0))
        assert committed() == []  # held in the groups, not handed to the writer yet
        store.idle()  # the run is about to wait for work
        eventually(lambda: committed() == [("A", 3), ("B", 1)], "the groups committed")
        store.idle()  # nothing held: nothing written
        store(item_ok("A", 3, 3))
        store(BatchFinished(ts=T0, node="A", status="succeeded", total=4, succeeded=4))
        eventually(lambda: len(committed()) == 3, "the group before the batch's end")
        assert committed()[-1] == ("A", 1)


def test_close_and_an_unclosed_store_commit_their_groups(tmp_path: Path) -> None:
    record(tmp_path, "r1", item_ok("B", 0, "closed"))
    store = RunStore.create(tmp_path, meta("r2"))
    store(item_ok("B", 0, "dropped"))
    del store
    gc.collect()  # the store's finalizer hands the group over, commits, releases the lock
    for run_id, output in (("r1", "closed"), ("r2", "dropped")):
        with RunStore.open(tmp_path, run_id) as store:
            assert store.load().items["B"][0].output == output


def test_an_item_that_sets_context_keeps_its_own_row(tmp_path: Path) -> None:
    record(tmp_path, "r1", item_ok("B", 0, 0), item_ok("B", 1, 1, context_updates={"k": 1}))
    assert query(tmp_path, "r1", "SELECT node, output, updates FROM nodes") == [
        ("B[1]", "1", '{"k": 1}')
    ]
    with RunStore.open(tmp_path, "r1") as store:
        run = store.load()
    assert {i: n.output for i, n in run.items["B"].items()} == {0: 0, 1: 1}
    assert run.context_updates == {"k": 1}


def test_a_run_recorded_before_item_groups_is_upgraded_when_reopened(tmp_path: Path) -> None:
    record(tmp_path, "r1", RunStarted(ts=T0))
    db = tmp_path / "runs" / "r1" / DB_NAME
    with sqlite3.connect(db) as conn:  # what schema version 1 wrote: one row per item
        for table in ("item_chunks", "logs", "spans", "samples"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        conn.execute(
            "INSERT INTO nodes (node, batch, idx, status, attempt, output, ts)"
            " VALUES ('B[0]', 'B', 0, 'succeeded', 1, '\"old\"', 0)"
        )
    conn.close()
    assert list_runs(tmp_path)[0].status == "interrupted"  # listed as it is, left unchanged
    with RunStore.open(tmp_path, "r1") as store:
        store(item_ok("B", 1, "new"))
        items = store.load().items["B"]
    assert {i: n.output for i, n in items.items()} == {0: "old", 1: "new"}
    assert query(tmp_path, "r1", "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]


def test_a_version_2_run_is_listed_read_and_upgraded_when_reopened(tmp_path: Path) -> None:
    record(tmp_path, "r1", RunStarted(ts=T0), item_ok("B", 0, "old"))
    with sqlite3.connect(tmp_path / "runs" / "r1" / DB_NAME) as conn:  # what version 2 wrote
        for table in ("logs", "spans", "samples"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.close()
    assert list_runs(tmp_path)[0].status == "interrupted"
    with RunStore.open(tmp_path, "r1") as store:
        store(item_ok("B", 1, "new"))
        items = store.load().items["B"]
    assert {i: n.output for i, n in items.items()} == {0: "old", 1: "new"}
    assert query(tmp_path, "r1", "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]


def test_a_damaged_group_is_a_state_error(tmp_path: Path) -> None:
    record(tmp_path, "r1", item_ok("B", 0, "a"), item_ok("B", 1, "b"))
    with sqlite3.connect(tmp_path / "runs" / "r1" / DB_NAME) as conn:
        conn.execute("UPDATE item_chunks SET outputs = '[\"a\"]'")  # one output for two items
    conn.close()
    with (
        RunStore.open(tmp_path, "r1") as store,
        pytest.raises(
            StateError, match=r"r1 is damaged: item_chunks row 1 .* outputs has 1 elements, not 2"
        ),
    ):
        store.load()


CHILD = """
import sys, time
from pathlib import Path
from flowrun.events import NodeSucceeded
from flowrun.store import RunMeta, RunStore

meta = RunMeta(sys.argv[2], "bp", "bp.yaml", "0" * 64, {}, {}, time.time())
store = RunStore.create(Path(sys.argv[1]), meta)
for i in range(20_000):
    store(NodeSucceeded(ts=time.time(), node=f"B[{i}]", batch="B", index=i, output_json=str(i)))
    print(i, flush=True)
    if i == 99:
        store.flush()
        print("flushed", flush=True)
sys.stdin.read()  # never exits on its own: the parent kills it
"""


def test_kill_9_keeps_whole_groups_and_loses_at_most_a_group_and_the_backlog(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), "r1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    lines = []
    # Kill mid-stream: after the flush proved some records durable, at the 5,000th line read
    # (the pipe's buffer keeps the child at most ~10,000 lines ahead of this reader).
    while len(lines) < 5_000 or "flushed" not in lines:
        lines.append(child.stdout.readline().strip())
        assert lines[-1], "the child exited early"
    child.send_signal(signal.SIGKILL)
    lines += child.stdout.read().split()
    assert child.wait() == -signal.SIGKILL
    acknowledged = sum(1 for line in lines if line.isdigit())

    with RunStore.open(tmp_path, "r1") as store:
        items = store.load().items["B"]
    durable = len(items)
    # One batch, its groups committed in order: a prefix, no holes, made of whole groups (the
    # first one of 100 items, handed over by the flush).
    assert sorted(items) == list(range(durable))
    assert (durable - 100) % GROUP_MAX == 0
    assert all(items[i].output == i for i in items)
    assert 100 <= durable <= acknowledged + 1  # the item being printed when killed may be in
    # Lost: at most the group being filled (< GROUP_MAX) and the writer's backlog.
    assert acknowledged - durable < GROUP_MAX + MAX_BACKLOG


def test_a_transaction_writes_table_by_table_keeping_each_tables_order() -> None:
    """The writer groups a transaction's records by table (one statement for a run of task
    nodes' rows, one for their spans); each table's rows stay in the order recorded, so a
    later row for the same key still wins. Every statement's table is known to the grouping."""
    from flowrun.store import records as rec

    for kind, sql in rec.SQL.items():
        assert re.search(r"INTO (\w+)", sql).group(1) == rec._TABLE[kind]  # type: ignore[union-attr]
    node = rec._NODE
    rows = [(node, "a", 1), (rec.SPAN, "a"), (rec._RECOVERED, "a"), (rec.SPAN, "b"), (node, "b")]
    grouped = rec.by_table(rows)
    assert grouped == [(node, "a", 1), (rec._RECOVERED, "a"), (node, "b"), (rec.SPAN, "a"),
                       (rec.SPAN, "b")]  # fmt: skip
    assert rec.by_table(rows[:1]) == rows[:1]


def test_a_recorder_waiting_on_the_backlog_ends_the_writers_group_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chunk row holds up to GROUP_MAX items, so the backlog (counted in items) fills long
    before a group reaches COMMIT_MAX_RECORDS records: the writer must not then sit out
    COMMIT_LATENCY_S while the run waits for it (a 100,000-item batch spent 60% of its time
    so)."""
    import queue
    import threading

    from flowrun.store import records as rec
    from flowrun.store import writer as wr

    monkeypatch.setattr(wr, "COMMIT_LATENCY_S", 3600.0)
    w = wr._Writer.__new__(wr._Writer)  # no thread, no connection: only the group's gathering
    w.queue = queue.SimpleQueue()
    w.wake = threading.Event()
    for i in range(3):
        w.queue.put((rec.SPAN, f"n{i}", 0.0, 1.0, "succeeded"))
    w.hurry, got = True, []
    w.wake.set()
    t = threading.Thread(target=lambda: got.append(w._drain()), daemon=True)
    t.start()
    t.join(30)  # liveness only: without the fix this waits out the hour
    assert not t.is_alive(), "the writer waited for COMMIT_LATENCY_S with the run waiting on it"
    assert [r[1] for r in got[0]] == ["n0", "n1", "n2"]
    assert w.hurry is False  # the next group waits for company again
