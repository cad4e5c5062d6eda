"""Drive the scheduler by hand and assert what it hands out, like test_graphlib."""

from __future__ import annotations

import pytest

from flowrun.engine.scheduler import Scheduler, Status

from .graphs import batch, edge, graph, task


def test_chain_runs_in_order() -> None:
    s = Scheduler(graph([task("a"), task("b"), task("c")], [edge("a", "b"), edge("b", "c")]))
    assert s.ready() == ["a"]
    assert s.ready() == []
    s.finish("a", Status.SUCCEEDED, {"b": 1})
    assert s.ready() == ["b"]
    assert s.inputs("b") == {"a": 1}
    s.finish("b", Status.SUCCEEDED, {"c": 2})
    assert s.ready() == ["c"]
    s.finish("c", Status.SUCCEEDED)
    assert not s.is_active()


def test_independent_roots_are_ready_together() -> None:
    s = Scheduler(graph([task("a"), task("b"), task("c")], [edge("a", "c"), edge("b", "c")]))
    assert sorted(s.ready()) == ["a", "b"]
    s.finish("a", Status.SUCCEEDED, {"c": 1})
    assert s.ready() == []  # c waits for b
    s.finish("b", Status.SUCCEEDED, {"c": 2})
    assert s.ready() == ["c"]
    assert s.inputs("c") == {"a": 1, "b": 2}


def test_edge_not_taken_skips_and_skip_propagates() -> None:
    g = graph(
        [task("a"), task("yes"), task("no"), task("after-no")],
        [edge("a", "yes"), edge("a", "no"), edge("no", "after-no")],
    )
    s = Scheduler(g)
    s.ready()
    s.finish("a", Status.SUCCEEDED, {"yes": 1})
    assert s.ready() == ["yes"]
    assert s.drain_skipped() == ["no", "after-no"]
    assert s.status["after-no"] is Status.SKIPPED


def test_exclusive_branches_rejoin_with_join_all() -> None:
    g = graph(
        [task("c"), task("x"), task("y"), task("join")],
        [edge("c", "x"), edge("c", "y"), edge("x", "join"), edge("y", "join")],
    )
    s = Scheduler(g)
    s.ready()
    s.finish("c", Status.SUCCEEDED, {"y": "doc"})
    assert s.ready() == ["y"]
    assert s.drain_skipped() == ["x"]
    s.finish("y", Status.SUCCEEDED, {"join": "done"})
    assert s.ready() == ["join"]  # the skipped branch does not stop the join
    assert s.inputs("join") == {"y": "done"}


def test_all_branches_skipped_skips_the_join() -> None:
    g = graph(
        [task("c"), task("x"), task("y"), task("join")],
        [edge("c", "x"), edge("c", "y"), edge("x", "join"), edge("y", "join")],
    )
    s = Scheduler(g)
    s.ready()
    s.finish("c", Status.SUCCEEDED, {})
    assert s.ready() == []
    assert s.drain_skipped() == ["x", "y", "join"]
    assert not s.is_active()


def test_failure_blocks_downstream_but_not_independent_branches() -> None:
    g = graph([task("a"), task("b"), task("c"), task("d")], [edge("a", "b"), edge("b", "d")])
    s = Scheduler(g)
    assert sorted(s.ready()) == ["a", "c"]
    s.finish("a", Status.FAILED)
    assert s.status["b"] is Status.BLOCKED and s.status["d"] is Status.BLOCKED
    assert s.drain_skipped() == []
    s.finish("c", Status.SUCCEEDED)
    assert not s.is_active()


def test_join_all_with_a_failed_predecessor_never_runs() -> None:
    g = graph([task("a"), task("b"), task("j")], [edge("a", "j"), edge("b", "j")])
    s = Scheduler(g)
    s.ready()
    s.finish("a", Status.SUCCEEDED, {"j": 1})
    s.finish("b", Status.FAILED)
    assert s.ready() == []
    assert s.status["j"] is Status.BLOCKED


def test_join_any_runs_at_the_first_taken_edge_and_once() -> None:
    g = graph(
        [task("a"), task("b"), task("j", config={"join": "any"})],
        [edge("a", "j"), edge("b", "j")],
    )
    s = Scheduler(g)
    s.ready()
    s.finish("b", Status.SUCCEEDED, {"j": "fast"})
    assert s.ready() == ["j"]
    assert s.inputs("j") == {"b": "fast"}
    s.finish("a", Status.SUCCEEDED, {"j": "slow"})  # ignored: j already started
    assert s.ready() == []
    s.finish("j", Status.SUCCEEDED)
    assert not s.is_active()


def test_recovered_counts_as_success() -> None:
    s = Scheduler(graph([task("a"), task("b")], [edge("a", "b")]))
    s.ready()
    s.finish("a", Status.RECOVERED, {"b": 0})
    assert s.ready() == ["b"]


def test_batch_binds_items_and_gathers_after_all_settle() -> None:
    g = graph([task("src"), batch("B", "src"), task("sink")], [edge("src", "B"), edge("B", "sink")])
    s = Scheduler(g)
    assert s.ready() == ["src"]
    s.finish("src", Status.SUCCEEDED, {"B_scatter": [1, 2, 3]})
    assert s.ready() == ["B_scatter"]
    s.bind("B", 3)
    assert s.open_batches() == ["B"]
    assert s.take_items("B", 2) == [0, 1]
    assert s.take_items("B", 5) == [2]
    assert s.take_items("B", 5) == []
    s.item_done("B", 2, True, "c")
    s.item_done("B", 0, True, "a")
    assert s.ready() == []
    s.item_done("B", 1, True, "b")
    assert s.ready() == ["B_gather"]
    assert s.batches["B"].results == ["a", "b", "c"]


def test_streamed_batch_keeps_counts_not_results_and_skips_what_its_file_holds() -> None:
    s = Scheduler(graph([batch("B", "xs")], context={"xs": []}))
    assert s.ready() == ["B_scatter"]
    # items 0-3 are in the output file already, 5 is in the store
    s.bind("B", 8, {5: "five", 9: "beyond"}, keep_results=False, first=4)
    state = s.batches["B"]
    assert (state.succeeded, state.remaining, state.results) == (5, 3, [])
    assert s.take_items("B", 10) == [4, 6, 7]
    for i in (7, 4, 6):
        s.item_done("B", i, True, i)
    assert state.results == [] and s.ready() == ["B_gather"]


def test_a_broken_batch_fails_once_its_items_in_flight_settle() -> None:
    s = Scheduler(graph([batch("B", "xs")], context={"xs": []}))
    s.ready()
    s.bind("B", 10)
    assert s.take_items("B", 2) == [0, 1]
    s.break_batch("B")
    assert s.open_batches() == [] and s.take_items("B", 5) == []
    s.item_done("B", 0, True, 0)
    assert s.status["B"] is Status.RUNNING
    s.item_done("B", 1, True, 1)
    assert s.status["B"] is Status.FAILED
    s.break_batch("B")  # once settled, nothing more happens
    assert s.status["B"] is Status.FAILED


def test_empty_batch_gathers_at_once() -> None:
    s = Scheduler(graph([batch("B", "xs")], context={"xs": []}))
    assert s.ready() == ["B_scatter"]
    s.bind("B", 0)
    assert s.ready() == ["B_gather"]


def test_batch_failure_budget() -> None:
    s = Scheduler(graph([batch("B", "xs", max_failures=1)], context={"xs": None}))
    s.ready()
    s.bind("B", 4)
    assert s.take_items("B", 4) == [0, 1, 2, 3]
    s.item_done("B", 0, False)
    s.item_done("B", 1, True, 1)
    s.item_done("B", 2, True, 2)
    s.item_done("B", 3, True, 3)
    assert s.ready() == ["B_gather"]
    assert s.batches["B"].results == [None, 1, 2, 3]


def test_batch_over_budget_stops_handing_out_and_fails_when_drained() -> None:
    s = Scheduler(graph([batch("B", "xs"), task("after")], [edge("B", "after")], {"xs": 1}))
    s.ready()
    s.bind("B", 10)
    assert s.take_items("B", 2) == [0, 1]
    s.item_done("B", 0, False)
    assert s.take_items("B", 2) == []
    assert s.open_batches() == []
    assert s.status["B"] is Status.RUNNING  # item 1 still in flight
    s.item_done("B", 1, True, 1)
    assert s.status["B"] is Status.FAILED
    assert s.status["after"] is Status.BLOCKED
    assert not s.is_active()


def test_bind_skips_items_done_in_an_earlier_run() -> None:
    s = Scheduler(graph([batch("B", "xs")], context={"xs": 1}))
    s.ready()
    s.bind("B", 4, {0: "a", 2: "c"})
    assert s.take_items("B", 10) == [1, 3]
    s.item_done("B", 1, True, "b")
    s.item_done("B", 3, True, "d")
    assert s.ready() == ["B_gather"]
    assert s.batches["B"].results == ["a", "b", "c", "d"]


def test_fallback_nodes_are_not_scheduled_on_their_own() -> None:
    s = Scheduler(graph([task("a", config={"fallback": "fb"}), task("fb")]))
    assert s.ready() == ["a"]


def test_finish_requires_a_running_node() -> None:
    s = Scheduler(graph([task("a")]))
    with pytest.raises(AssertionError):
        s.finish("a", Status.SUCCEEDED)


def _chain(n: int) -> Scheduler:
    names = [f"n{i}" for i in range(n)]
    edges = [edge(a, b) for a, b in zip(["head", *names], names, strict=False)]
    return Scheduler(graph([task("head"), *map(task, names)], edges))


def test_a_failure_blocks_a_10000_node_chain_without_recursing() -> None:
    s = _chain(10_000)
    assert s.ready() == ["head"]
    s.finish("head", Status.FAILED)
    assert s.status["n9999"] is Status.BLOCKED
    assert not s.is_active()


def test_an_edge_not_taken_skips_a_10000_node_chain_in_order() -> None:
    s = _chain(10_000)
    s.ready()
    s.finish("head", Status.SUCCEEDED, {})
    assert s.drain_skipped() == [f"n{i}" for i in range(10_000)]
    assert not s.is_active()


def test_propagation_is_depth_first_in_edge_order() -> None:
    g = graph(
        [task("a"), task("b"), task("b2"), task("c"), task("c2")],
        [edge("a", "b"), edge("b", "b2"), edge("a", "c"), edge("c", "c2")],
    )
    s = Scheduler(g)
    s.ready()
    s.finish("a", Status.SUCCEEDED, {})
    assert s.drain_skipped() == ["b", "b2", "c", "c2"]
