"""The run engine end to end on a thread pool, over graphs built in code."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from flowrun import events as ev
from flowrun.blueprint.resolve import resolve
from flowrun.engine.backends.thread import ThreadBackend
from flowrun.engine.driver import Driver, Options
from flowrun.engine.invoke import CHUNK_BUDGET_MS, Call, ChunkFuture, Outcome
from flowrun.errors import BlueprintError
from flowrun.model import Graph
from flowrun.node import SharedContext
from flowrun.report import RunReport

from . import nodes
from .graphs import batch, edge, graph, loop, task

N = "tests.nodes."


def run(g: Graph, concurrency: int = 4, **opts: Any) -> tuple[RunReport, list[ev.Event]]:
    nodes.reset()
    targets = resolve(g.blueprint, ["."])
    context = SharedContext(dict(g.blueprint.context))
    cancelled = threading.Event()
    backend = ThreadBackend(
        targets, workers=concurrency, run_id="r", context=context, cancelled=cancelled
    )
    seen: list[ev.Event] = []
    driver = Driver(
        g, backend, run_id="r", context=context, emit=seen.append,
        options=Options(concurrency, **opts), cancelled=cancelled,
    )  # fmt: skip
    try:
        return driver.run(), seen
    finally:
        backend.close()


def seed() -> Graph:
    return graph(
        [
            task("start", N + "numbers"),
            batch("double-items", "start", N + "double", output_key="doubled"),
            task("sum-results", "builtins.sum", inputs="doubled"),
        ],
        [edge("start", "double-items_scatter"), edge("double-items_gather", "sum-results")],
        {"factor": 2},
    )


@pytest.mark.parametrize("concurrency", [1, 4])
def test_seed_example(concurrency: int) -> None:
    report, _ = run(seed(), concurrency)
    doc = report.as_dict()
    assert doc["status"] == "completed"
    assert doc["context"] == {
        "factor": 2,
        "start": [10, 20, 30],
        "doubled": [20, 40, 60],
        "sum-results": 120,
    }
    assert doc["nodes"]["double-items"] == {
        "status": "succeeded",
        "items": {"total": 3, "succeeded": 3, "failed": 0},
    }
    assert doc["nodes"]["start"]["attempts"] == 1
    assert doc["errors"] == []
    assert report.exit_code == 0


def test_event_sequence_in_order() -> None:
    # A worker slow enough (20 ms) that items go one per chunk; fast items are chunked and
    # their start events come together (test_chunked_items_keep_per_item_events).
    g = graph(
        [
            task("start", N + "numbers"),
            batch("double-items", "start", N + "track", output_key="doubled"),
            task("sum-results", "builtins.sum", inputs="doubled"),
        ],
        [edge("start", "double-items_scatter"), edge("double-items_gather", "sum-results")],
    )
    _, seen = run(g, 1)
    names = [(e.event, getattr(e, "node", None)) for e in seen]
    assert names == [
        ("run_started", None),
        ("node_started", "start"),
        ("node_succeeded", "start"),
        ("batch_started", "double-items"),
        ("node_started", "double-items[0]"),
        ("node_succeeded", "double-items[0]"),
        ("node_started", "double-items[1]"),
        ("node_succeeded", "double-items[1]"),
        ("node_started", "double-items[2]"),
        ("node_succeeded", "double-items[2]"),
        ("batch_finished", "double-items"),
        ("node_started", "sum-results"),
        ("node_succeeded", "sum-results"),
        ("run_finished", None),
    ]


def test_gather_keeps_item_order_under_out_of_order_completion() -> None:
    g = graph([batch("B", "xs", N + "jitter_double")], context={"xs": list(range(40))})
    report, seen = run(g, 8)
    assert report.context["B"] == [2 * i for i in range(40)]
    finished = [e.index for e in seen if isinstance(e, ev.NodeSucceeded)]
    assert finished != sorted(finished)  # they really did finish out of order


@pytest.mark.parametrize(("global_cap", "batch_cap", "expected"), [(3, None, 3), (8, 2, 2)])
def test_concurrency_caps_seen_from_inside(
    global_cap: int, batch_cap: int | None, expected: int
) -> None:
    g = graph(
        [batch("B", "xs", N + "track", concurrency=batch_cap)], context={"xs": list(range(24))}
    )
    run(g, global_cap)
    assert nodes.peak == expected


def test_global_cap_counts_tasks_and_items_together() -> None:
    g = graph(
        [task("t1", N + "track"), task("t2", N + "track"), batch("B", "xs", N + "track")],
        context={"xs": list(range(12))},
    )
    run(g, 2)
    assert nodes.peak == 2


def test_retries_then_success_with_events() -> None:
    g = graph([task("f", N + "flaky", config={"max_retries": 2, "retry_delay": 0.001})])
    report, seen = run(g)
    assert report.status == "completed"
    assert report.nodes["f"].attempts == 3
    retries = [e for e in seen if isinstance(e, ev.NodeRetry)]
    assert [(r.attempt, r.error_type) for r in retries] == [
        (1, "ConnectionError"),
        (2, "ConnectionError"),
    ]
    assert retries[1].delay_s == pytest.approx(0.002)  # doubled


def test_retries_exhausted_fails_the_run() -> None:
    g = graph([task("f", N + "flaky", params={"fails": 5}, config={"max_retries": 1})])
    report, _ = run(g)
    assert report.status == "failed" and report.exit_code == 1
    assert report.errors == [
        {"node": "f", "type": "ConnectionError", "message": "attempt 2 failed"}
    ]
    assert nodes.calls == {"f": 2}


def test_backoff_one_keeps_the_delay() -> None:
    g = graph(
        [task("f", N + "flaky", config={"max_retries": 2, "retry_delay": 0.001, "backoff": 1})]
    )
    _, seen = run(g)
    assert [e.delay_s for e in seen if isinstance(e, ev.NodeRetry)] == [0.001, 0.001]


def test_timeout_abandons_the_attempt_and_retries() -> None:
    g = graph([task("s", N + "sleepy", config={"timeout": 0.05, "max_retries": 1})])
    report, seen = run(g)
    assert report.context["s"] == "on time"
    retry = next(e for e in seen if isinstance(e, ev.NodeRetry))
    assert retry.error_type == "AttemptTimeout"


def test_fallback_stands_in() -> None:
    g = graph(
        [
            task("a", N + "always_fails", config={"fallback": "fb"}),
            task("fb", N + "standin"),
            task("b", N + "ident"),
        ],
        [edge("a", "b")],
    )
    report, seen = run(g)
    assert report.status == "completed"
    assert report.nodes["a"].status == "recovered"
    assert report.nodes["fb"].status == "succeeded"
    assert report.context["a"] == report.context["fb"] == {"from": "fallback", "input": None}
    assert report.context["b"] == report.context["a"]
    assert any(isinstance(e, ev.NodeRecovered) and e.fallback == "fb" for e in seen)


def test_failed_fallback_fails_the_node_and_does_not_hide_other_failures() -> None:
    g = graph(
        [
            task("a", N + "always_fails", config={"fallback": "fb"}),
            task("fb", N + "always_fails"),
            task("c", N + "always_fails"),
        ]
    )
    report, _ = run(g)
    assert report.status == "failed"
    assert report.nodes["a"].status == "failed"
    assert sorted(e["node"] for e in report.errors) == ["a", "c", "fb"]


def test_unused_fallback_is_skipped() -> None:
    report, _ = run(
        graph([task("a", N + "ident", config={"fallback": "fb"}), task("fb", N + "standin")])
    )
    assert report.nodes["fb"].status == "skipped"


def test_actions_route_and_exclusive_branches_rejoin() -> None:
    g = graph(
        [
            task("r", N + "route", params={"to": "right"}),
            task("left", N + "ident"),
            task("right", N + "ident"),
            task("join", N + "ident"),
        ],
        [
            edge("r", "left", action="left"),
            edge("r", "right", action="right"),
            edge("left", "join"),
            edge("right", "join"),
        ],
    )
    report, seen = run(g)
    assert report.nodes["left"].status == "skipped"
    assert report.nodes["join"].status == "succeeded"
    # several predecessors give a mapping, the skipped one left out (SPEC §1)
    assert report.context["join"] == {"right": {"score": 0.7, "to": "right"}}
    assert [e.node for e in seen if isinstance(e, ev.NodeSkipped)] == ["left"]


def test_unmatched_action_takes_only_unlabelled_edges() -> None:
    g = graph(
        [
            task("r", N + "route", params={"to": "other"}),
            task("a", N + "ident"),
            task("plain", N + "ident"),
        ],
        [edge("r", "a", action="left"), edge("r", "plain")],
    )
    report, _ = run(g)
    assert report.nodes["a"].status == "skipped"
    assert report.nodes["plain"].status == "succeeded"


def test_a_default_edge_is_not_taken_when_an_action_edge_is() -> None:
    """flowcraft's rule (SPEC §1): unlabelled edges are the router's default branch."""
    g = graph(
        [
            task("r", N + "route", params={"to": "left"}),
            task("a", N + "ident"),
            task("plain", N + "ident"),
        ],
        [edge("r", "a", action="left"), edge("r", "plain")],
    )
    report, _ = run(g)
    assert report.nodes["a"].status == "succeeded"
    assert report.nodes["plain"].status == "skipped"


def test_a_default_edge_is_taken_when_the_action_edges_conditions_are_false() -> None:
    g = graph(
        [
            task("r", N + "route", params={"to": "left"}),
            task("a", N + "ident"),
            task("plain", N + "ident"),
        ],
        [edge("r", "a", action="left", condition="output.score > 0.9"), edge("r", "plain")],
    )
    report, _ = run(g)
    assert report.nodes["a"].status == "skipped"
    assert report.nodes["plain"].status == "succeeded"


def test_flowcraft_expression_names() -> None:
    g = graph(
        [task("r", N + "route", params={"to": "left"}), task("a", N + "ident")],
        [
            edge(
                "r",
                "a",
                condition="result.action == 'left' and limit > 0",
                transform="input.score * limit",
            )
        ],
        context={"limit": 10},
    )
    report, _ = run(g)
    assert report.context["a"] == 7.0


def test_several_predecessors_give_a_mapping() -> None:
    g = graph(
        [task("x", N + "numbers"), batch("B", "x", N + "double"), task("m", N + "ident")],
        [edge("x", "B"), edge("x", "m"), edge("B", "m")],
    )
    report, _ = run(g)
    assert report.context["m"] == {"x": [10, 20, 30], "B": [20, 40, 60]}


def test_condition_and_transform() -> None:
    g = graph(
        [task("r", N + "route"), task("hi", N + "ident"), task("lo", N + "ident")],
        [
            edge("r", "hi", condition="output.score > 0.5", transform="output.score * 10"),
            edge("r", "lo", condition="output.score <= 0.5"),
        ],
    )
    report, _ = run(g)
    assert report.context["hi"] == 7.0
    assert report.nodes["lo"].status == "skipped"


def test_condition_runtime_error_fails_the_source_clearly() -> None:
    g = graph(
        [task("r", N + "route"), task("x", N + "ident")],
        [edge("r", "x", condition="output.missing > 1")],
    )
    report, _ = run(g)
    assert report.nodes["r"].status == "failed"
    assert report.nodes["x"].status == "pending"
    (err,) = report.errors
    assert err["node"] == "r" and err["type"] == "ExprEvalError" and "missing" in err["message"]


def test_inputs_mapping_and_params_become_kwargs() -> None:
    g = graph(
        [
            task("a", N + "numbers"),
            task("k", N + "kwargs", inputs={"values": "a", "f": "factor"}, params={"p": 1}),
        ],
        [edge("a", "k")],
        {"factor": 3},
    )
    report, _ = run(g)
    assert report.context["k"] == {"values": [10, 20, 30], "f": 3, "p": 1}


def test_dotted_input_path() -> None:
    g = graph([task("r", N + "route"), task("s", N + "ident", inputs="r.score")], [edge("r", "s")])
    assert run(g)[0].context["s"] == 0.7


def test_async_nodes() -> None:
    g = graph([batch("B", "xs", N + "async_double")], context={"xs": [1, 2, 3]})
    assert run(g)[0].context["B"] == [2, 4, 6]


def test_ctx_set_get_and_node_id() -> None:
    g = graph([task("s", N + "setter")], context={"note": None})
    report, _ = run(g)
    assert report.context["s"] == "set by s"
    assert report.context["note"] == "set by s"


def test_empty_batch_gives_empty_list_and_downstream_runs() -> None:
    g = graph(
        [batch("B", "xs", N + "double"), task("n", "builtins.len", inputs="B")],
        [edge("B", "n")],
        {"xs": []},
    )
    report, _ = run(g)
    assert report.context["B"] == [] and report.context["n"] == 0


@pytest.mark.parametrize(("value", "found"), [(None, "null"), ({"a": 1}, "dict"), ("abc", "str")])
def test_scatter_of_a_non_list_fails_naming_key_and_type(value: Any, found: str) -> None:
    report, _ = run(graph([batch("B", "xs", N + "double")], context={"xs": value}))
    assert report.status == "failed"
    (err,) = report.errors
    assert err == {
        "node": "B",
        "type": "TypeError",
        "message": f"batch 'B': inputKey 'xs' holds {found}, expected a list",
    }


def test_max_failures_allows_failed_items_as_null_slots() -> None:
    g = graph(
        [batch("B", "xs", N + "fail_on", params={"bad": [2, 4]}, max_failures=2)],
        context={"xs": [1, 2, 3, 4]},
    )
    report, _ = run(g)
    assert report.status == "completed"
    assert report.context["B"] == [1, None, 3, None]
    assert report.nodes["B"].items == {"total": 4, "succeeded": 2, "failed": 2}
    assert sorted(e["node"] for e in report.errors) == ["B[1]", "B[3]"]


def test_item_failure_beyond_budget_fails_the_batch() -> None:
    g = graph(
        [batch("B", "xs", N + "fail_on", params={"bad": [2]}), task("after", N + "ident")],
        [edge("B", "after")],
        {"xs": [1, 2, 3]},
    )
    report, _ = run(g, 1)
    assert report.status == "failed"
    assert report.nodes["B"].status == "failed"
    assert report.nodes["after"].status == "pending"


def test_batch_config_applies_per_item() -> None:
    g = graph(
        [batch("B", "xs", N + "flaky", params={"fails": 1}, config={"max_retries": 1})],
        context={"xs": [1, 2]},
    )
    report, _ = run(g)
    assert report.context["B"] == [{"attempt": 2}, {"attempt": 2}]
    assert nodes.calls == {"B[0]": 2, "B[1]": 2}


def test_keep_going_lets_independent_branches_finish() -> None:
    g = graph(
        [task("bad", N + "always_fails"), task("after", N + "ident"), task("other", N + "ident")],
        [edge("bad", "after")],
    )
    report, _ = run(g, 1)
    assert report.nodes["other"].status == "succeeded"
    assert report.nodes["after"].status == "pending"


def test_fail_fast_stops_starting_work() -> None:
    g = graph(
        [task("bad", N + "always_fails"), batch("B", "xs", N + "counted")],
        context={"xs": list(range(50))},
    )
    report, _ = run(g, 1, fail_fast=True)
    assert report.status == "failed"
    assert report.nodes["B"].status != "succeeded"
    assert len(nodes.calls) < 50


def test_unstorable_output_fails_the_node_naming_the_type() -> None:
    report, _ = run(graph([task("u", N + "unstorable")]))
    (err,) = report.errors
    assert err["type"] == "TypeError" and "object cannot be stored as JSON" in err["message"]


def test_input_from_a_skipped_node_fails_clearly() -> None:
    g = graph(
        [
            task("r", N + "route"),
            task("skipme", N + "ident"),
            task("reader", N + "ident", inputs="skipme"),
        ],
        [edge("r", "skipme", action="nope"), edge("r", "reader"), edge("skipme", "reader")],
    )
    report, _ = run(g)
    assert report.nodes["reader"].status == "failed"
    assert "'skipme' has no value" in report.errors[0]["message"]


def test_tracebacks_start_at_the_node_function() -> None:
    _, seen = run(graph([task("f", N + "always_fails"), task("u", N + "unstorable")]))
    failed = {e.node: e for e in seen if isinstance(e, ev.NodeFailed)}
    assert "invoke.py" not in failed["f"].traceback
    assert 'nodes.py", line' in failed["f"].traceback
    assert failed["f"].traceback.rstrip().endswith("ValueError: boom")
    # an output that is not JSON is flowrun's finding: the message alone, no flowrun frames
    assert failed["u"].traceback.startswith("TypeError: output of type object")


def test_fallback_gets_the_input_but_not_the_failed_nodes_params() -> None:
    # standin(x) takes no keyword arguments: had the failed node's params leaked into the
    # fallback call, it would raise TypeError and the node would end failed, not recovered.
    g = graph(
        [
            task("a", N + "fail_on", inputs="x", params={"bad": [1]}, config={"fallback": "fb"}),
            task("fb", N + "standin"),
        ],
        context={"x": 1},
    )
    report, _ = run(g)
    assert report.nodes["a"].status == "recovered"
    assert report.context["a"] == {"from": "fallback", "input": 1}


def test_chunked_items_keep_per_item_events_and_order() -> None:
    g = graph([batch("B", "xs", N + "ident")], context={"xs": list(range(2000))})
    report, seen = run(g, 2)
    assert report.context["B"] == list(range(2000))
    started = [e.index for e in seen if isinstance(e, ev.NodeStarted)]
    done = [e.index for e in seen if isinstance(e, ev.NodeSucceeded)]
    assert sorted(started) == sorted(done) == list(range(2000))  # one of each per item
    starts = {e.index: i for i, e in enumerate(seen) if isinstance(e, ev.NodeStarted)}
    ends = {e.index: i for i, e in enumerate(seen) if isinstance(e, ev.NodeSucceeded)}
    assert all(starts[i] < ends[i] for i in range(2000))


class _CountingBackend(ThreadBackend):
    """Records, for every chunk of several calls, how many it was given and how many it ran."""

    chunks: list[tuple[int, int]]
    ran: list[list[str]]  # the calls each chunk ran, in order

    def _run(self, fut: ChunkFuture) -> None:
        given = len(fut.waiting)
        super()._run(fut)
        self.chunks.append((given, len(fut.ran)))
        self.ran.append([o.node for o in fut.ran])


def run_on(
    g: Graph,
    backend: ThreadBackend,
    context: SharedContext,
    emit: Callable[[ev.Event], None] | None = None,
) -> tuple[RunReport, list[ev.Event]]:
    """Run `g` at concurrency 2 on `backend`; the report, and the events (unless `emit` takes
    them)."""
    seen: list[ev.Event] = []
    driver = Driver(g, backend, run_id="r", context=context, emit=emit or seen.append,
                    options=Options(2), cancelled=backend._cancelled)  # fmt: skip
    try:
        return driver.run(), seen
    finally:
        backend.close()


def test_a_chunk_of_task_calls_starts_none_past_its_budget_and_the_rest_run_once() -> None:
    """Independent task nodes of one function share chunks; a slow call must not hold the
    calls queued behind it in its chunk (they would run one after another on one worker):
    the chunk ends at its budget and the driver queues the rest again, announced once."""
    slow = {i for i in range(300) if i % 40 == 39}
    specs = [
        task(f"t{i}", N + "track", params={"item": i, "delay": 0.08 if i in slow else 0.0})
        for i in range(300)
    ]
    g = graph(specs)
    nodes.reset()
    context = SharedContext({})
    backend = _CountingBackend(resolve(g.blueprint, ["."]), workers=2, run_id="r",
                               context=context, cancelled=threading.Event())  # fmt: skip
    backend.chunks, backend.ran = [], []
    report, seen = run_on(g, backend, context)
    assert report.status == "completed"
    assert report.context == {f"t{i}": i for i in range(300)}
    started = Counter(e.node for e in seen if isinstance(e, ev.NodeStarted))
    succeeded = Counter(e.node for e in seen if isinstance(e, ev.NodeSucceeded))
    assert started == succeeded == Counter(f"t{i}" for i in range(300))  # once each
    assert any(n > 1 for n, _ in backend.chunks)  # the calls did share chunks
    cut = [(n, ran) for n, ran in backend.chunks if ran < n]
    assert cut  # and a slow call ended its chunk early


def test_a_call_that_does_not_end_holds_back_none_of_its_chunk() -> None:
    """While one call of a chunk runs on, the driver settles the calls that ended before it
    and takes back those behind it, which run on the other worker: every other node succeeds
    while it waits, and only then is it let go."""
    n, at = 400, 250
    g = graph([task(f"t{i}", N + "held", params={"i": i, "at": at}) for i in range(n)])
    nodes.reset()
    context = SharedContext({})
    backend = _CountingBackend(resolve(g.blueprint, ["."]), workers=2, run_id="r",
                               context=context, cancelled=threading.Event())  # fmt: skip
    backend.chunks, backend.ran = [], []
    seen: list[ev.Event] = []
    done: set[str] = set()

    def emit(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, ev.NodeSucceeded):
            done.add(event.node)
            if len(done) == n - 1 and f"t{at}" not in done:
                nodes.released.set()  # every other node is settled: let it go

    report, _ = run_on(g, backend, context, emit=emit)
    assert report.status == "completed"
    assert report.context[f"t{at}"] is True  # released, not tired of waiting
    assert report.context == {f"t{i}": True if i == at else i for i in range(n)}
    started = Counter(e.node for e in seen if isinstance(e, ev.NodeStarted))
    assert started == Counter(f"t{i}" for i in range(n))  # each announced once
    # It shared a chunk with calls that ran before it (those behind it were taken back).
    assert any(f"t{at}" in ran[1:] for ran in backend.ran), backend.ran


class _CallsOnly(_CountingBackend):
    """A thread backend without `submit_items`: a batch hands its items out as chunks of
    calls of its own (as on the process and Dask backends)."""

    runs_items = False
    start_lane = None  # nor lanes (the process and Dask backends have none)
    # A round trip as dear as a remote one's: chunks stay of many items even when a loaded
    # machine makes each item seem to take milliseconds (a GIL switch interval is 5 ms).
    dispatch_ms = 50.0
    whole: list[tuple[int, int]]

    def _run_all(self, calls: list[Call]) -> list[Outcome]:
        out = super()._run_all(calls)
        self.whole.append((len(calls), len(out)))
        return out


def test_a_batchs_own_chunk_of_calls_is_never_cut_by_the_budget() -> None:
    """Only the driver's chunks of independent calls may come back part run: a batch counts
    its chunks, and one that came back part run would unbalance that count."""
    xs = list(range(300))
    g = graph([batch("B", "xs", N + "track", params={"delay": 0.0})], context={"xs": xs})
    slow = graph([batch("S", "xs", N + "slow_at", params={"every": 40, "delay": 0.08})],
                 context={"xs": xs})  # fmt: skip
    for graph_ in (g, slow):
        nodes.reset()
        context = SharedContext(dict(graph_.blueprint.context))
        backend = _CallsOnly(resolve(graph_.blueprint, ["."]), workers=2, run_id="r",
                             context=context, cancelled=threading.Event())  # fmt: skip
        backend.chunks, backend.ran, backend.whole = [], [], []
        report, seen = run_on(graph_, backend, context)
        assert report.status == "completed"
        assert report.context[graph_.blueprint.nodes[0].id] == xs
        started = Counter(e.index for e in seen if isinstance(e, ev.NodeStarted))
        assert started == Counter(xs)  # every item announced once
        assert not backend.chunks  # no chunk of them was a budgeted one
        assert any(n > 1 for n, _ in backend.whole), backend.whole  # they did share chunks
        assert all(ran == n for n, ran in backend.whole)  # each ran whole


def test_a_thread_chunk_stops_starting_calls_past_its_budget() -> None:
    g = graph([task("t", N + "track")])
    targets = resolve(g.blueprint, ["."])
    backend = ThreadBackend(targets, workers=1, run_id="r", context=SharedContext({}),
                            cancelled=threading.Event())  # fmt: skip
    try:
        slow = Call("a", N + "track", (1,), {"delay": 2 * CHUNK_BUDGET_MS / 1000}, 1, None)
        fast = [Call(f"b{i}", N + "track", (i,), {"delay": 0.0}, 1, None) for i in range(5)]
        ran = backend.submit([slow, *fast], budget=True).result(timeout=30)
        assert [o.node for o in ran] == ["a"]  # the fast ones go back to the driver
        ran = backend.submit(fast, budget=True).result(timeout=30)
        assert [o.output for o in ran] == [0, 1, 2, 3, 4]  # within budget: all of them
        ran = backend.submit([slow, *fast]).result(timeout=30)  # a kind's chunk: never cut
        assert [o.output for o in ran] == [1, 0, 1, 2, 3, 4]
    finally:
        backend.close()


def test_an_expression_reads_a_batch_by_its_id() -> None:
    g = graph(
        [batch("B", "xs", N + "double", output_key="doubled"), task("t", N + "ident")],
        [edge("B", "t", condition="len(B) == 2 and B[1] == 4", transform="sum(B)")],
        {"xs": [1, 2]},
    )
    report, _ = run(g)
    assert report.context["t"] == 6


# -- runIf (SPEC §6) ---------------------------------------------------------------------------


def test_run_if_failure_runs_after_a_failure_with_what_succeeded() -> None:
    g = graph(
        [
            task("ok", N + "numbers"),
            task("bad", N + "always_fails"),
            task("notify", N + "ident", config={"run_if": "failure"}),
            task("cleanup", N + "ident", config={"run_if": "always"}),
            task("after", N + "ident"),
        ],
        [edge("ok", "notify"), edge("bad", "notify"), edge("bad", "cleanup"),
         edge("ok", "after"), edge("bad", "after")],
    )  # fmt: skip
    report, _ = run(g)
    assert report.status == "failed"  # the teardown running does not hide the failure
    assert report.nodes["notify"].status == "succeeded"
    assert report.context["notify"] == {"ok": [10, 20, 30]}
    assert report.nodes["cleanup"].status == "succeeded"
    assert report.nodes["after"].status == "pending"


def test_run_if_failure_is_skipped_when_nothing_failed() -> None:
    g = graph(
        [task("ok", N + "numbers"), task("notify", N + "ident", config={"run_if": "failure"})],
        [edge("ok", "notify")],
    )
    report, _ = run(g)
    assert report.status == "completed"
    assert report.nodes["notify"].status == "skipped"


def test_run_if_without_predecessors_runs_at_the_end() -> None:
    g = graph(
        [
            task("teardown", N + "kwargs", config={"run_if": "always"}),
            task("alert", N + "kwargs", config={"run_if": "failure"}),
            task("a", N + "sleepy", params={"seconds": 0.05}),
            task("b", N + "always_fails"),
        ],
        [edge("a", "b")],
    )
    report, seen = run(g)
    started = [e.node for e in seen if isinstance(e, ev.NodeStarted)]
    assert started == ["a", "b", "teardown", "alert"] or started == ["a", "b", "alert", "teardown"]
    assert report.nodes["teardown"].status == report.nodes["alert"].status == "succeeded"
    assert report.status == "failed"


def test_run_if_on_a_batch_is_a_validation_error() -> None:
    with pytest.raises(BlueprintError, match=r"config\.runIf applies to task nodes"):
        graph([task("x", N + "numbers"), batch("B", "x", config={"run_if": "always"})],
              [edge("x", "B")])  # fmt: skip


# -- loops (SPEC §6) ---------------------------------------------------------------------------


def test_a_loop_feeds_each_iteration_the_last_output_until_while_is_false() -> None:
    g = graph(
        [loop("poll", N + "poll", "output.state != 'done'", 10), task("after", N + "ident")],
        [edge("poll", "after")],
    )
    report, seen = run(g)
    assert report.status == "completed"
    assert report.context["poll"] == {"checks": 3, "state": "done"}
    assert report.context["after"] == {"checks": 3, "state": "done"}
    started = [(e.node, e.index) for e in seen if isinstance(e, ev.NodeStarted)]
    assert started[:3] == [("poll#1", 1), ("poll#2", 2), ("poll#3", 3)]
    assert report.nodes["poll"].status == "succeeded"
    assert report.nodes["poll"].items == {"total": 3, "succeeded": 3, "failed": 0}


def test_a_loop_that_reaches_max_iterations_fails_saying_so() -> None:
    g = graph([loop("poll", N + "poll", "output.state != 'done'", 2, params={"ready_at": 5})])
    report, _ = run(g)
    assert report.status == "failed"
    (err,) = report.errors
    assert err["node"] == "poll" and err["type"] == "LoopLimitError"
    assert "reached maxIterations (2)" in err["message"]
    assert report.nodes["poll"].status == "failed"


def test_loop_config_retries_each_iteration() -> None:
    g = graph([loop("l", N + "flaky", "False", 3, params={"fails": 1}, config={"max_retries": 1})])
    report, seen = run(g)
    assert report.status == "completed"
    assert report.context["l"] == {"attempt": 2}
    assert [e.node for e in seen if isinstance(e, ev.NodeRetry)] == ["l#1"]


def test_a_bad_while_is_a_validation_error() -> None:
    with pytest.raises(BlueprintError, match="nope"):
        graph([loop("l", N + "poll", "nope > 1", 3)])
