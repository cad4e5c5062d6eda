"""Property tests: random DAGs, random outcomes; the scheduler's join and skip rules hold."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flowrun.engine.scheduler import DONE_OK, Scheduler, Status

from .graphs import edge, graph, task

FAILED_LIKE = {Status.FAILED, Status.BLOCKED}


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]], list[str]]:
    n = draw(st.integers(1, 9))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=14)) if pairs else []
    joins = draw(st.lists(st.sampled_from(["all", "any"]), min_size=n, max_size=n))
    return n, edges, joins


@settings(max_examples=300, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_join_and_skip_rules(dag: tuple[int, list[tuple[int, int]], list[str]], rnd) -> None:  # type: ignore[no-untyped-def]
    n, pairs, joins = dag
    names = [f"n{i}" for i in range(n)]
    g = graph(
        [task(names[i], config={"join": joins[i]}) for i in range(n)],
        [edge(names[a], names[b]) for a, b in pairs],
    )
    preds = {x: [names[a] for a, b in pairs if names[b] == x] for x in names}
    succs = {x: [names[b] for a, b in pairs if names[a] == x] for x in names}
    s = Scheduler(g)
    taken_to: dict[str, set[str]] = {x: set() for x in names}
    settled: set[str] = set()
    started: list[str] = []
    ready = s.ready()
    while ready:
        for x in ready:
            assert x not in started  # each node is handed out once
            started.append(x)
            if joins[names.index(x)] == "all":
                assert all(p in settled for p in preds[x])  # waited for every predecessor
                assert not any(s.status[p] in FAILED_LIKE for p in preds[x])
            assert not preds[x] or taken_to[x]  # at least one edge into it was taken
        for x in ready:
            if rnd.random() < 0.2:
                s.finish(x, Status.FAILED)
            else:
                chosen = {t for t in succs[x] if rnd.random() < 0.6}
                for t in chosen:
                    taken_to[t].add(x)
                s.finish(x, Status.SUCCEEDED, dict.fromkeys(chosen))
            settled.add(x)
            settled.update(k for k, v in s.status.items() if v in (Status.SKIPPED, Status.BLOCKED))
        ready = s.ready()
    assert not s.is_active()
    for x in names:
        st_ = s.status[x]
        assert st_ in DONE_OK | {Status.FAILED, Status.SKIPPED, Status.BLOCKED}, (x, st_)
        upstream_failed = any(s.status[p] in FAILED_LIKE for p in preds[x])
        if st_ is Status.SKIPPED:
            assert not taken_to[x] and not upstream_failed
        if st_ is Status.BLOCKED:
            assert upstream_failed
        if x not in started:
            assert st_ in (Status.SKIPPED, Status.BLOCKED)
            if joins[names.index(x)] == "all":
                assert not taken_to[x] or upstream_failed
            else:
                assert not taken_to[x]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 9).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=16),
            st.permutations(range(n)),
        )
    )
)
def test_expansion_orders_nodes_as_graphlib_does(
    case: tuple[int, list[tuple[int, int]], list[int]],
) -> None:
    """The graph's order (which the run starts ready nodes in) is graphlib's static order for
    the nodes added in blueprint order, duplicate edges, sources listed after their targets,
    and cycles (None) included."""
    import graphlib
    from types import SimpleNamespace

    from flowrun.engine.expand import _static_order

    _, pairs, perm = case
    names = [f"n{i}" for i in perm]
    preds: dict[str, tuple[Any, ...]] = {name: () for name in names}
    for a, b in pairs:
        if a != b:
            preds[f"n{b}"] += (SimpleNamespace(source=f"n{a}"),)
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name in names:
        sorter.add(name, *(e.source for e in preds[name]))
    try:
        expected: list[str] | None = list(sorter.static_order())
    except graphlib.CycleError:
        expected = None
    assert _static_order(dict.fromkeys(names), preds) == expected  # type: ignore[arg-type]
