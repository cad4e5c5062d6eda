"""A batch's items run, settle and are recorded by the chunk: the outcome of a chunk, the
events a chunk becomes for every sink, the --events lines and the store's records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import flowrun
from flowrun import events as ev
from flowrun.engine.invoke import CancelScope, Items, run_items
from flowrun.eventlog import EventLog
from flowrun.node import Result, SharedContext
from flowrun.store import RunStore, read_logs
from tests import chunk_nodes

N = 1200


def _run_chunk(fn: Any, values: list[Any], **kw: Any) -> Any:
    chunk = Items("B", "tests.chunk_nodes.fn", values, range(10, 10 + len(values)), {}, **kw)
    return run_items(chunk, fn, wants_ctx=False, is_async=False, run_id="r",
                     context=SharedContext(), cancel=CancelScope())  # fmt: skip


def test_a_chunk_keeps_plain_successes_as_columns_and_every_other_item_apart() -> None:
    def fn(x: int) -> Any:
        if x == 2:
            raise ValueError("two")
        if x == 3:
            return {1, 2}  # not JSON: only this item fails
        if x == 5:
            return Result(5, "five")
        if x == 6:
            return {1: [x]}  # int keys come back as strings, as from the store
        return x * 10

    res = _run_chunk(fn, [0, 1, 2, 3, 4, 5, 6, 7])
    assert res.ran == 8
    assert res.ok == [0, 1, 4, 6, 7]
    assert res.outputs == [0, 10, 40, {"1": [6]}, 70]
    assert json.loads(res.outputs_json) == res.outputs
    assert res.texts == ["0", "10", "40", '{"1":[6]}', "70"]  # kept: some item is apart
    others = dict(res.others)
    assert sorted(others) == [2, 3, 5]
    assert (others[2].ok, others[2].node, others[2].error_type) == (False, "B[12]", "ValueError")
    assert "two" in others[2].traceback
    assert others[3].error_type == "TypeError"
    assert "cannot be stored as JSON" in others[3].message
    assert (others[5].ok, others[5].action, others[5].output) == (True, "five", 5)
    assert len(res.durations_ms) == 5 and all(ms >= 0 for ms in res.durations_ms)


def test_an_output_that_contains_itself_fails_its_item_only() -> None:
    def fn(x: int) -> Any:
        out: list[Any] = [x]
        if x == 1:
            out.append(out)
        return out

    res = _run_chunk(fn, [0, 1, 2])
    assert res.ok == [0, 2] and res.outputs == [[0], [2]]
    (pos, out), = res.others  # fmt: skip
    assert pos == 1 and out.error_type == "TypeError"
    assert "cannot be stored as JSON (Circular reference detected)" in out.message


def test_a_chunk_gives_each_item_a_copy_of_its_input() -> None:
    values = [{"n": 1}, {"n": 2}]
    res = _run_chunk(chunk_nodes.mutating, values)
    assert values == [{"n": 1}, {"n": 2}]
    assert res.outputs == [{"n": 1, "seen": True}, {"n": 2, "seen": True}]
    assert res.texts is None  # nobody asked for them


def test_a_chunk_of_a_bad_call_says_how_the_item_was_called() -> None:
    res = _run_chunk(lambda: None, [1])
    (pos, out), = res.others  # fmt: skip
    assert pos == 0 and out.error_type == "TypeError" and not out.retryable
    assert "called as tests.chunk_nodes.fn(input)" in out.message


def _blueprint(tmp_path: Path, uses: str, max_failures: int = 0) -> Path:
    path = tmp_path / "bp.yaml"
    path.write_text(
        f"""id: chunks
context: {{xs: {list(range(N))}}}
nodes:
  - id: B
    batch: {{uses: {uses}, inputKey: xs, outputKey: out, maxFailures: {max_failures}}}
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("uses", ["tests.chunk_nodes.mixed", "tests.chunk_nodes.amixed"])
def test_a_batch_run_by_the_chunk_writes_an_events_line_per_item(tmp_path: Path, uses: str) -> None:
    events = tmp_path / "events.jsonl"
    log = EventLog(events)
    seen: list[ev.Event] = []

    class Chunks:
        def __init__(self) -> None:
            self.sizes: list[int] = []
            self.handlers = {ev.ItemsSucceeded: lambda e: self.sizes.append(len(e.indices))}

    chunks = Chunks()
    try:
        report = flowrun.run(
            _blueprint(tmp_path, uses, max_failures=N),
            state_dir=tmp_path / "state",
            sinks=[log, seen.append, chunks],
        )
    finally:
        log.close()
    assert max(chunks.sizes) > 1  # the items did settle by the chunk
    failing = {x for x in range(N) if x % 97 == 5}
    assert report.nodes["B"].items == {"total": N, "succeeded": N - len(failing),
                                       "failed": len(failing)}  # fmt: skip
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    started = [e for e in lines if e["event"] == "node_started" and e["batch"] == "B"]
    ended = [e for e in lines if e["event"] in ("node_succeeded", "node_failed")
             and e["batch"] == "B"]  # fmt: skip
    assert sorted(e["index"] for e in started) == list(range(N))
    assert sorted(e["index"] for e in ended) == list(range(N))
    assert {e["index"] for e in ended if e["event"] == "node_failed"} == failing
    # the same fields, in the same order, as the per-item events give
    one = ev.NodeStarted(1.0, "B[3]", 1, "B", 3).to_json()
    assert all(list(e) == list(one) for e in started)
    assert all(e["node"] == f"B[{e['index']}]" and e["attempt"] == 1 for e in started)
    done = ev.NodeSucceeded(1.0, "B[3]", 1, 0.1, "B", 3).to_json()
    ok = [e for e in ended if e["event"] == "node_succeeded"]
    assert all(list(e) == list(done) for e in ok)
    assert {e["index"] for e in ok if e["action"] == "chosen"} == {
        x for x in range(N) if x % 89 == 3 and x not in failing
    }
    position = {(e["event"], e["index"]): n for n, e in enumerate(lines) if "index" in e}
    assert all(position[("node_started", e["index"])] < position[(e["event"], e["index"])]
               for e in ended)  # fmt: skip
    # a plain callable sink sees the per-item events it always saw
    items = [e for e in seen if isinstance(e, ev.NodeSucceeded) and e.batch == "B"]
    assert len(items) == N - len(failing)
    assert all(json.loads(e.output_json) == e.output == e.index * 2 for e in items)
    assert not any(isinstance(e, ev.ItemsStarted | ev.ItemsSucceeded) for e in seen)
    assert sum(isinstance(e, ev.NodeStarted) and e.batch == "B" for e in seen) == N


@pytest.mark.parametrize("uses", ["tests.chunk_nodes.mixed", "tests.chunk_nodes.amixed"])
def test_a_batch_run_by_the_chunk_records_every_item(tmp_path: Path, uses: str) -> None:
    state = tmp_path / "state"
    report = flowrun.run(_blueprint(tmp_path, uses, max_failures=N),
                         state_dir=state)  # fmt: skip
    out = report.context["out"]
    assert [v for x, v in enumerate(out) if x % 97 != 5] == [x * 2 for x in range(N) if x % 97 != 5]
    with RunStore.open(state, report.run_id) as store:
        run = store.load()
    items = run.items["B"]
    assert sorted(items) == list(range(N))
    for x, rec in items.items():
        if x % 97 == 5:
            assert rec.status == "failed" and rec.error is not None
        else:
            assert (rec.status, rec.output) == ("succeeded", x * 2)
            assert rec.action == ("chosen" if x % 89 == 3 else None)
    # what an item printed is its own, also when its coroutine shared the loop with others
    speaks = [x for x in range(N) if x % 101 == 7 and x % 97 != 5]
    for x in speaks:
        (attempt, text), *more = read_logs(state, report.run_id, f"B[{x}]")
        assert attempt == 1 and not more and text.startswith(f"item {x} speaks\n"), text
    assert read_logs(state, report.run_id, "B[0]") == []


@pytest.mark.parametrize("uses", ["tests.chunk_nodes.keyed", "tests.chunk_nodes.akeyed"])
def test_outputs_round_trip_by_the_chunk_as_from_the_store(tmp_path: Path, uses: str) -> None:
    report = flowrun.run(_blueprint(tmp_path, uses),
                         state_dir=tmp_path / "state")  # fmt: skip
    assert report.context["out"] == [{str(x): x} for x in range(N)]


def test_chunk_events_reach_only_the_sinks_that_take_them() -> None:
    got: dict[str, list[ev.Event]] = {"plain": [], "typed": [], "other": [], "chunks": []}

    class Typed:
        def __init__(self) -> None:
            self.handlers = {ev.ItemsSucceeded: got["typed"].append}

    class Other:
        def __init__(self) -> None:
            self.handlers = {ev.NodeSucceeded: got["other"].append}

    class Chunks:
        def __init__(self) -> None:
            self.chunks = {ev.ItemsSucceeded: got["chunks"].append}

        def __call__(self, event: ev.Event) -> None:
            raise AssertionError(event)

    bus = ev.Bus([got["plain"].append, Typed(), Other(), Chunks()])
    chunk = ev.ItemsSucceeded(1.0, "B", range(4, 6), [0.5, 0.25], [{"a": 1}, 2], '[{"a":1},2]')
    bus(chunk)
    assert got["typed"] == [chunk] and got["chunks"] == [chunk] and got["other"] == []
    assert got["plain"] == [
        ev.NodeSucceeded(1.0, "B[4]", 1, 0.5, "B", 4, None, {"a": 1}, '{"a":1}'),
        ev.NodeSucceeded(1.0, "B[5]", 1, 0.25, "B", 5, None, 2, "2"),
    ]


def test_items_that_take_ctx_run_by_the_chunk_and_async_ones_on_the_loop(tmp_path: Path) -> None:
    class Sizes:
        def __init__(self) -> None:
            self.sizes: list[int] = []
            self.handlers = {ev.ItemsSucceeded: lambda e: self.sizes.append(len(e.indices))}

    for uses, want in (
        ("tests.chunk_nodes.indexed", [x * 1001 for x in range(N)]),
        ("tests.chunk_nodes.later", [x + 1 for x in range(N)]),
    ):
        sizes = Sizes()
        report = flowrun.run(_blueprint(tmp_path, uses), state_dir=tmp_path / "state",
                             sinks=[sizes])  # fmt: skip
        assert report.context["out"] == want, uses
        # both settle by the chunk: ctx items run one after another in a thread, async ones
        # gathered on the backend's loop
        assert sum(sizes.sizes) == N and max(sizes.sizes) > 1, uses


def test_the_progress_record_counts_a_chunk_as_its_items() -> None:
    from flowrun.display.record import RunRecord

    record = RunRecord(lambda: 5.0)
    record.on_items_started(ev.ItemsStarted(1.0, "B", range(3)))
    assert record.batches["B"].active == 3 and record.running_count() == 3
    record.on_items_succeeded(ev.ItemsSucceeded(1.0, "B", [0, 2], [1.0, 1.0], [1, 2], "[1,2]"))
    assert record.batches["B"].active == 1 and record.batches["B"].running == {1: 5.0}
    assert record.batches["B"].succeeded == 2


def test_each_success_text_is_what_the_encoder_gives() -> None:
    """The per-item texts of a chunk (an `outputTo` batch's lines) come from a C encoder
    built once; they must be exactly what `json` gives for the same decoded data."""
    from flowrun.engine.invoke import _ENCODER, each_json

    values = [{"i": 1, "a": [1.5, None, True, "x\u00e9\ud800"]}, "s", 3, None, 2.5, [], {},
              {"nested": {"deep": [[-0.0, 1e300]]}}, "\n\t\"quote\""]  # fmt: skip
    assert each_json(values) == [_ENCODER.encode(v) for v in values]
