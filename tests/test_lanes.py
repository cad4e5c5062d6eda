"""A batch of slow items on the thread backend: its workers take the next items themselves
(`engine.lanes`). Whatever a worker claimed, every item keeps its events, its record, its
retries and its place in the result, and the concurrency limits hold."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flowrun
from flowrun import events as ev
from flowrun.api import Run, RunOptions
from flowrun.engine.invoke import CancelScope, Items, run_items
from flowrun.engine.lanes import Feed, merged
from flowrun.eventlog import EventLog
from flowrun.node import SharedContext
from flowrun.store import RunStore, read_logs
from tests import lane_nodes

N = 300


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    lane_nodes.reset()
    yield


def _blueprint(tmp_path: Path, uses: str, n: int = N, batch: str = "", config: str = "",
               extra: str = "") -> Path:  # fmt: skip
    path = tmp_path / "bp.yaml"
    cfg = f"\n    config: {{{config}}}" if config else ""
    path.write_text(
        f"""id: lanes
context: {{xs: {list(range(n))}}}
nodes:
  - id: B
    batch: {{uses: tests.lane_nodes.{uses}, inputKey: xs, outputKey: out{batch}}}{cfg}
{extra}""",
        encoding="utf-8",
    )
    return path


class Lanes:
    """Counts the lanes a run started (so a test knows the items did take that path); with
    `claims`, lanes claim several items at any concurrency, and `claims` lists each claim's
    items."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, claims: bool = False) -> None:
        from flowrun.engine import lanes
        from flowrun.engine.backends.thread import ThreadBackend

        self.started = 0
        self.claims: list[list[int]] = []
        start = ThreadBackend.start_lane

        def counting(backend: ThreadBackend, lane: Any) -> None:
            self.started += 1
            start(backend, lane)

        monkeypatch.setattr(ThreadBackend, "start_lane", counting)
        if claims:
            monkeypatch.setattr(lanes, "CLAIM_MIN_LANES", 1)
            claim = Feed._claim

            def recorded(feed: Feed) -> Items:
                chunk = claim(feed)
                self.claims.append(list(chunk.indices))
                return chunk

            monkeypatch.setattr(Feed, "_claim", recorded)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("claims", [False, True])
def test_lanes_keep_every_items_events_record_and_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claims: bool
) -> None:
    lanes = Lanes(monkeypatch, claims=claims)
    events, state = tmp_path / "events.jsonl", tmp_path / "state"
    log = EventLog(events)
    seen: list[ev.Event] = []
    try:
        report = flowrun.run(_blueprint(tmp_path, "slow", batch=f", maxFailures: {N}"),
                             state_dir=state, concurrency=16,
                             sinks=[log, seen.append])  # fmt: skip
    finally:
        log.close()
    assert lanes.started > 0
    failing = {x for x in range(N) if x % 37 == 5}
    assert report.nodes["B"].items == {"total": N, "succeeded": N - len(failing),
                                       "failed": len(failing)}  # fmt: skip
    out = report.context["out"]
    assert out == [None if x in failing else x * 2 for x in range(N)]
    assert lane_nodes.calls == {x: 1 for x in range(N)}  # each item ran once
    lines = _lines(events)
    started = [e for e in lines if e["event"] == "node_started" and e.get("batch") == "B"]
    ended = [e for e in lines if e["event"] in ("node_succeeded", "node_failed")
             and e.get("batch") == "B"]  # fmt: skip
    assert sorted(e["index"] for e in started) == list(range(N))
    assert sorted(e["index"] for e in ended) == list(range(N))
    assert {e["index"] for e in ended if e["event"] == "node_failed"} == failing
    position = {(e["event"], e["index"]): n for n, e in enumerate(lines) if "index" in e}
    assert all(position[("node_started", e["index"])] < position[(e["event"], e["index"])]
               for e in ended)  # fmt: skip
    assert {e["index"] for e in ended if e.get("action") == "chosen"} == {
        x for x in range(N) if x % 43 == 3 and x not in failing
    }
    ok = [e for e in seen if isinstance(e, ev.NodeSucceeded) and e.batch == "B"]
    assert all(json.loads(e.output_json) == e.output == e.index * 2 for e in ok)
    with RunStore.open(state, report.run_id) as store:
        items = store.load().items["B"]
    assert sorted(items) == list(range(N))
    for x, rec in items.items():
        if x in failing:
            assert rec.status == "failed" and rec.error is not None
            assert rec.error.message == f"item {x} fails"
        else:
            assert (rec.status, rec.output) == ("succeeded", x * 2)
            assert rec.action == ("chosen" if x % 43 == 3 else None)
    for x in (x for x in range(N) if x % 41 == 7 and x not in failing):
        (attempt, text), *more = read_logs(state, report.run_id, f"B[{x}]")
        assert attempt == 1 and not more and text == f"item {x} speaks\n"
    assert not claims or max(map(len, lanes.claims)) > 1


@pytest.mark.parametrize("claims", [False, True])
def test_a_lanes_finished_item_settles_while_its_next_one_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claims: bool
) -> None:
    """An item that runs long holds back no success before it (its event, its record, what
    comes after it), however fast the items before it were: a lane reports each item as it
    ends, or (claiming several) the driver settles what its claim finished while it runs."""
    lanes = Lanes(monkeypatch, claims=claims)
    lane_nodes.released.clear()

    def sink(e: ev.Event) -> None:
        if isinstance(e, ev.NodeSucceeded) and e.batch == "B" and e.index == 39:
            lane_nodes.released.set()  # the item before the held one has settled

    bp = _blueprint(tmp_path, "held_at", n=60, batch=", params: {at: 40}")
    report = flowrun.run(bp, state_dir=tmp_path / "state", concurrency=1, sinks=[sink])
    assert report.status == "completed"
    assert lanes.started > 0
    assert report.context["out"][40] is True  # released, not tired of waiting
    assert lane_nodes.calls == {x: 1 for x in range(60)}
    if claims:  # the two were claimed together
        assert any(39 in c and 40 in c for c in lanes.claims), lanes.claims


def test_a_run_stopped_while_a_claimed_item_hangs_keeps_what_its_claim_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grace period ends with an item stuck in the middle of a lane's claim: the items of
    the claim that ended before it still settle (events, records); those after it never
    start."""
    from flowrun.engine import lanes as lanes_module

    lanes = Lanes(monkeypatch, claims=True)
    monkeypatch.setattr(lanes_module, "PEEK_S", 60.0)  # no look into the claim before the end
    monkeypatch.setattr(lanes_module, "LONG_S", 60.0)
    lane_nodes.released.clear()
    lane_nodes.reached.clear()
    succeeded: list[int] = []

    def sink(e: ev.Event) -> None:
        if isinstance(e, ev.NodeSucceeded) and e.batch == "B":
            succeeded.append(e.index or 0)

    bp = _blueprint(tmp_path, "hangs_at", n=60, batch=", params: {at: 20}")
    run = Run(bp, RunOptions(state_dir=tmp_path / "state", concurrency=1, sinks=[sink]))
    threading.Thread(target=lambda: lane_nodes.reached.wait(10) and run.cancel()).start()
    try:
        report = run.start()
    finally:
        lane_nodes.released.set()
    held = next(c for c in lanes.claims if 20 in c)
    assert held[0] < 19 and held[-1] > 20, lanes.claims  # others of its claim before and after
    assert report.status == "cancelled"
    assert sorted(succeeded) == list(range(20))
    assert report.nodes["B"].items == {"total": 60, "succeeded": 20, "failed": 0}
    assert set(lane_nodes.calls) == set(range(21))  # nothing after the stuck one started
    with RunStore.open(tmp_path / "state", report.run_id) as store:
        items = store.load().items["B"]
    assert {x for x, rec in items.items() if rec.status == "succeeded"} == set(range(20))


@pytest.mark.parametrize("cap", [None, 3])
def test_lanes_hold_the_concurrency_and_the_batch_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: int | None
) -> None:
    lanes = Lanes(monkeypatch)
    batch = "" if cap is None else f", concurrency: {cap}"
    report = flowrun.run(_blueprint(tmp_path, "slow", n=200, batch=f", maxFailures: 200{batch}"),
                         state_dir=tmp_path / "state", concurrency=5)  # fmt: skip
    assert report.status == "completed"
    assert lanes.started > 0
    assert 1 < lane_nodes.peak <= (cap or 5)


def test_a_retry_waiting_for_a_slot_gets_one_before_the_batch_ends(tmp_path: Path) -> None:
    """The lanes give their slots back once other work waits for one: a retry of an early item
    starts long before the last items do."""
    events = tmp_path / "events.jsonl"
    log = EventLog(events)
    try:
        flowrun.run(_blueprint(tmp_path, "flaky", n=400, config="maxRetries: 1"),
                    state_dir=tmp_path / "state", concurrency=2, sinks=[log])  # fmt: skip
    finally:
        log.close()
    starts = [(e["index"], e["attempt"]) for e in _lines(events) if e["event"] == "node_started"
              and e.get("batch") == "B"]  # fmt: skip
    assert starts.index((3, 2)) < starts.index((300, 1))


@pytest.mark.parametrize("claims", [False, True])
def test_lanes_retry_an_item_as_its_own_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claims: bool
) -> None:
    lanes = Lanes(monkeypatch, claims=claims)
    events = tmp_path / "events.jsonl"
    log = EventLog(events)
    try:
        report = flowrun.run(_blueprint(tmp_path, "flaky", config="maxRetries: 2"),
                             state_dir=tmp_path / "state", concurrency=8, sinks=[log])  # fmt: skip
    finally:
        log.close()
    assert lanes.started > 0
    assert report.status == "completed"
    assert report.context["out"] == list(range(N))
    assert lane_nodes.calls == {x: 2 if x % 10 == 3 else 1 for x in range(N)}
    lines = _lines(events)
    retried = [e for e in lines if e["event"] == "node_started" and e.get("attempt") == 2]
    assert sorted(e["index"] for e in retried) == [x for x in range(N) if x % 10 == 3]
    assert not claims or max(map(len, lanes.claims)) > 1


@pytest.mark.parametrize("claims", [False, True])
def test_a_batch_over_its_failure_budget_starts_no_more_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claims: bool
) -> None:
    lanes = Lanes(monkeypatch, claims=claims)
    events = tmp_path / "events.jsonl"
    log = EventLog(events)
    try:
        report = flowrun.run(_blueprint(tmp_path, "failing", n=2000, batch=", maxFailures: 2"),
                             state_dir=tmp_path / "state", concurrency=4, sinks=[log])  # fmt: skip
    finally:
        log.close()
    assert lanes.started > 0
    assert report.status == "failed"
    assert report.nodes["B"].status == "failed"
    lines = _lines(events)
    started = {e["index"] for e in lines if e["event"] == "node_started" and e.get("batch") == "B"}
    ended = {e["index"] for e in lines if e["event"] in ("node_succeeded", "node_failed")
             and e.get("batch") == "B"}  # fmt: skip
    assert started == ended == set(lane_nodes.calls)  # what started ran and settled
    assert len(started) < 200  # and the batch stopped handing out items soon after
    assert not claims or max(map(len, lanes.claims)) > 1
    assert any(e["event"] == "batch_finished" and e["status"] == "failed" for e in lines)


@pytest.mark.parametrize("claims", [False, True])
def test_fail_fast_stops_the_lanes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claims: bool
) -> None:
    lanes = Lanes(monkeypatch, claims=claims)
    report = flowrun.run(_blueprint(tmp_path, "failing", n=2000), state_dir=tmp_path / "state",
                         concurrency=4, fail_fast=True)  # fmt: skip
    assert report.status == "failed"
    assert len(lane_nodes.calls) < 200
    assert not claims or max(map(len, lanes.claims)) > 1


@pytest.mark.parametrize("claims", [False, True])
def test_items_that_take_ctx_run_on_lanes_and_set_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claims: bool
) -> None:
    lanes = Lanes(monkeypatch, claims=claims)
    report = flowrun.run(_blueprint(tmp_path, "counted", n=100), state_dir=tmp_path / "state",
                         concurrency=4)  # fmt: skip
    assert lanes.started > 0
    assert report.context["out"] == [x * 1000 + x for x in range(100)]
    assert all(report.context[f"seen-{k}"] is True for k in range(3))
    assert not claims or max(map(len, lanes.claims)) > 1


@pytest.mark.parametrize("claims", [False, True])
def test_a_cancelled_run_leaves_the_unclaimed_items_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claims: bool
) -> None:
    """Whatever the lanes claimed, only the items that ran are announced, and all of them
    settle."""
    lanes = Lanes(monkeypatch, claims=claims)
    cancelled = threading.Event()
    started: list[int] = []
    ended: list[int] = []

    def sink(e: ev.Event) -> None:
        if isinstance(e, ev.NodeStarted) and e.batch == "B":
            started.append(e.index or 0)
            if len(started) == 100:
                cancelled.set()
        if isinstance(e, ev.NodeSucceeded | ev.NodeFailed) and e.batch == "B":
            ended.append(e.index or 0)

    report = flowrun.run(_blueprint(tmp_path, "unlucky", n=3000), state_dir=tmp_path / "state",
                         concurrency=4, cancelled=cancelled, sinks=[sink])  # fmt: skip
    assert report.status == "cancelled"
    assert sorted(ended) == sorted(started) == sorted(lane_nodes.calls)
    assert len(started) < 3000
    assert not claims or max(map(len, lanes.claims)) > 1


def test_a_feed_hands_out_its_window_once_and_merges_what_came_back() -> None:
    woken: list[int] = []
    values = list(range(100, 110))
    feed = Feed("B", "tests.lane_nodes.slow", values, {}, None, lambda: woken.append(1),
                lambda: False)  # fmt: skip
    feed.take = 2
    feed.top_up([0, 1, 2, 3, 7])
    first = feed.first()
    assert first is not None and list(first.indices) == [0, 1] and list(first.values) == [100, 101]

    def run(chunk: Items) -> Any:
        return run_items(chunk, lambda v: v * 2, wants_ctx=False, is_async=False, run_id="r",
                         context=SharedContext(), cancel=CancelScope())  # fmt: skip

    nxt = feed.report(first, run(first))
    assert nxt is not None and list(nxt.indices) == [2, 3] and woken == [1]
    last = feed.report(nxt, run(nxt))  # the driver has not looked: no second wake-up
    assert last is not None and list(last.indices) == [7] and woken == [1]
    assert feed.report(last, run(last)) is None  # nothing waits: the lane leaves
    reports, claimed, _, left, fresh = feed.swap()
    # the first item of each claim since the driver looked; the others of the claims that ran
    assert claimed == [2, 7] and fresh == [1, 3] and left == 1
    assert not feed.running  # no claim of several items runs any more
    chunk, res = merged(reports)
    assert list(chunk.indices) == [0, 1, 2, 3, 7]
    assert res.ran == 5 and res.ok == [0, 1, 2, 3, 4]
    assert json.loads(res.outputs_json) == res.outputs == [200, 202, 204, 206, 214]
    assert feed.swap() == ([], [], feed.claimed_at, 0, [])


def test_lanes_start_each_other_and_run_what_they_could_not_start() -> None:
    woken: list[int] = []
    feed = Feed("B", "tests.lane_nodes.slow", list(range(10)), {}, None,
                lambda: woken.append(1), lambda: False)  # fmt: skip
    feed.top_up(list(range(10)))
    started: list[Any] = []
    feed.start = started.append
    feed.starting = 3
    assert feed.spread() == [] and len(started) == 2 and feed.starting == 1
    assert feed.claimed == [0, 1] and not woken  # two lanes, each with an item of its own

    def no_thread(lane: Any) -> None:
        raise RuntimeError("can't start new thread")

    feed.start = no_thread
    mine = feed.spread()  # the last one could not start: this lane runs its item
    assert [list(c.indices) for c in mine] == [[2]] and feed.starting == 0
    assert woken == [1]  # the driver counts that lane out
    _, claimed, _, left, _ = feed.swap()
    assert claimed == [0, 1, 2] and left == 1
    assert list(feed.window) == list(range(3, 10))


def test_lanes_that_no_lane_can_start_leave_at_once() -> None:
    """Two lanes were to start the four still to start, and the window ran empty before they
    looked: all four leave with them, or their slots would stay taken for ever (a run that
    had settled every item once waited here with no lane left)."""
    woken: list[int] = []
    feed = Feed("B", "tests.lane_nodes.slow", list(range(10)), {}, None,
                lambda: woken.append(1), lambda: False)  # fmt: skip
    started: list[Any] = []
    feed.start = started.append
    feed.starting = 4
    assert feed.spread() == [] and not started  # nothing to claim: none started...
    assert feed.starting == 0 and woken == [1]  # ...and none left to start
    assert feed.swap()[3] == 4  # the driver counts all four out
    feed.top_up([0, 1, 2])
    feed.starting = 3
    feed.halted = True  # an item failed: none claims more until the driver has seen it
    assert feed.spread() == [] and feed.starting == 0 and feed.swap()[3] == 3


def test_no_lane_claims_after_a_failure_until_the_driver_has_settled_it() -> None:
    """A failure may put the batch past its budget or stop the run: until the driver has seen
    it, the lanes claim nothing more (before lanes, the driver started every item itself)."""
    feed = Feed("B", "tests.lane_nodes.slow", list(range(10)), {}, None, lambda: None,
                lambda: False)  # fmt: skip
    feed.top_up(list(range(10)))
    a, b = feed.first(), feed.first()
    assert a is not None and b is not None

    def run(chunk: Items, fn: Callable[[Any], Any]) -> Any:
        return run_items(chunk, fn, wants_ctx=False, is_async=False, run_id="r",
                         context=SharedContext(), cancel=CancelScope())  # fmt: skip

    def boom(v: Any) -> Any:
        raise ValueError(v)

    assert feed.report(a, run(a, boom)) is None  # its item failed: it claims nothing
    assert feed.report(b, run(b, lambda v: v)) is None  # nor does any other lane
    assert feed.waiting() == 8
    feed.swap()
    c = feed.first()
    assert c is not None
    assert feed.report(c, run(c, boom)) is None  # a failure after the driver looked...
    feed.resume()  # ...keeps the lanes halted when the driver settles the earlier ones
    assert feed.halted
    feed.swap()
    feed.resume()
    d = feed.first()
    assert d is not None
    nxt = feed.report(d, run(d, lambda v: v))
    assert nxt is not None and list(nxt.indices) == [4]  # settled: the lanes claim again


class _Lane:
    """A lane on a thread of its own, running the first claim (items 0-2 of 100...109) of a
    feed that takes three at a time; the item of value `gated` waits for `gate`."""

    def __init__(self, gated: int, timeout: float | None = None) -> None:
        self.feed = feed = Feed("B", "tests.lane_nodes.slow", list(range(100, 110)), {},
                                timeout, lambda: None, lambda: False)  # fmt: skip
        feed.take = 3
        feed.top_up([0, 1, 2, 3])
        claim = feed.first()
        assert claim is not None and claim.progress is not None
        assert list(claim.indices) == [0, 1, 2]
        self.claim, self.progress = claim, claim.progress
        self.gate, self.calls, self.next = threading.Event(), list[int](), list[Items | None]()

        def fn(v: int) -> int:
            self.calls.append(v)
            if v == gated:
                self.gate.wait(10)
            return v * 2

        def run() -> None:
            res = run_items(claim, fn, wants_ctx=False, is_async=False, run_id="r",
                            context=SharedContext(), cancel=CancelScope())  # fmt: skip
            self.next.append(feed.report(claim, res))

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def until(self, cond: Callable[[], bool]) -> None:
        for _ in range(1000):
            if cond():
                return
            threading.Event().wait(0.01)

    def release(self) -> Items | None:
        self.gate.set()
        self.thread.join(10)
        (nxt,) = self.next
        return nxt


@pytest.mark.parametrize("timeout", [None, 5.0])  # each item a plain call / one with a timeout
def test_the_driver_settles_what_a_running_claim_finished_and_the_lane_the_rest(
    timeout: float | None,
) -> None:
    lane = _Lane(102, timeout)
    feed = lane.feed
    try:
        lane.until(lambda: lane.progress.done == 2)
        assert feed.finished(False) == ([], [])  # not running long yet
        parts, fresh = feed.finished(True)
        assert fresh == [1]  # its first item was announced when it was claimed
        chunk, res = merged(parts)
        assert list(chunk.indices) == [0, 1] and res.ok == [0, 1]
        assert json.loads(res.outputs_json) == res.outputs == [200, 202]
        assert feed.finished(True) == ([], [])  # settled once
    finally:
        rest = lane.release()
    assert rest is not None and list(rest.indices) == [3]  # what the lane claimed next
    reports, claimed, _, _, fresh = feed.swap()
    assert claimed == [3] and fresh == [2]
    chunk, res = merged(reports)  # the lane reported only what the driver had not settled
    assert list(chunk.indices) == [2] and res.ran == 1
    assert json.loads(res.outputs_json) == res.outputs == [204]
    assert not feed.running


def test_the_driver_takes_back_what_a_claim_stuck_on_an_item_has_not_started() -> None:
    lane = _Lane(100)
    feed = lane.feed
    try:
        lane.until(lambda: bool(lane.calls))
        assert feed.finished(True) == ([], [])  # nothing ended yet...
        assert list(feed.window) == [1, 2, 3]  # ...and what its lane has not started went back
    finally:
        again = lane.release()
    assert lane.calls == [100]  # the lane did not start them
    assert again is not None and list(again.indices) == [1, 2, 3]  # it goes on, with them
    reports, claimed, _, left, fresh = feed.swap()
    assert claimed == [1] and fresh == [] and left == 0
    chunk, res = merged(reports)
    assert list(chunk.indices) == [0] and res.outputs == [200]
