"""The process and Dask backends give the same results as the thread backend.

Dask runs on an in-process `LocalCluster` (processes=False, quick to start) reached through its
address, except in the one test of the default local cluster.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import distributed
import pytest

import flowrun.api
from flowrun.blueprint.resolve import resolve
from flowrun.engine.backends import Backend, make_backend
from flowrun.engine.backends import dask as dask_executor
from flowrun.engine.backends.remote import ContextPacker
from flowrun.engine.driver import Driver, Options
from flowrun.engine.invoke import Call, Outcome, chunk_budget_s
from flowrun.errors import UsageError
from flowrun.model import Graph
from flowrun.node import SharedContext
from flowrun.report import RunReport

from .graphs import batch, edge, graph, task

ROOT = Path(__file__).resolve().parent.parent
DIRS = (str(ROOT / "blueprints"), str(ROOT))
N = "tests.nodes."


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=4, processes=False, dashboard_address=":0"
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def backend(kind: str, address: str | None, dirs: tuple[str, ...] = DIRS) -> Backend:
    """A backend with no known targets: every chunk gets the (empty) context."""
    return make_backend(
        kind, {}, workers=2, run_id="r", context=SharedContext(), cancelled=threading.Event(),
        dirs=dirs, address=address if kind == "dask" else None,
    )  # fmt: skip


def run(g: Graph, kind: str, address: str | None, concurrency: int = 2) -> RunReport:
    targets = resolve(g.blueprint, DIRS)
    context = SharedContext(dict(g.blueprint.context))
    cancelled = threading.Event()
    be = make_backend(
        kind, targets, workers=concurrency, run_id="r", context=context, cancelled=cancelled,
        dirs=DIRS, address=address if kind == "dask" else None,
    )  # fmt: skip
    driver = Driver(
        g, be, run_id="r", context=context, emit=lambda e: None,
        options=Options(concurrency), cancelled=cancelled,
    )  # fmt: skip
    try:
        return driver.run()
    finally:
        be.close()


def one(be: Backend, call: Call) -> Outcome:
    try:
        (outcome,) = be.submit([call]).result(timeout=60)
    finally:
        be.close()
    return outcome


# -- the example blueprints ----------------------------------------------------------------

CASES = {
    "batch-workflow": ("batch-workflow.yaml", ["factor=3"]),  # tasks.double reads ctx
    "batch-workflow-json": ("batch-workflow.json", []),
    "etl": ("etl.yaml", []),
    "review-escalate": ("review.yaml", []),
    "review-notify": ("review.yaml", ["doc_id=promo-9"]),  # condition and transform
    "resilience": ("resilience.yaml", []),  # retries, a timeout, a fallback
    # shell nodes, `${{ }}` in commands, the blueprint's directory as the working directory
    "ci": ("ci.yaml", [f"dist={tempfile.gettempdir()}/flowrun-test-ci-dist"]),
}


def run_file(case: str, kind: str, address: str | None, state_dir: Path) -> RunReport:
    name, sets = CASES[case]
    return flowrun.api.run(
        ROOT / "blueprints" / name, executor=kind, concurrency=2, sets=sets,
        address=address if kind == "dask" else None, state_dir=state_dir,
    )  # fmt: skip


def features() -> Graph:
    """What the blueprints do not show: async nodes, a failed run, and `ctx.set`."""
    return graph(
        [
            batch("doubled", "xs", N + "async_double"),
            task("setter", N + "setter"),
            task("bad", N + "always_fails"),
            task("after-bad", N + "ident"),
        ],
        [edge("bad", "after-bad")],
        {"xs": [1, 2, 3], "note": None},
    )


def summary(report: RunReport) -> dict[str, Any]:
    """The `--json` document without what legitimately differs (run id, durations)."""
    doc = report.as_dict()
    nodes = {
        k: {f: v[f] for f in ("status", "attempts", "items") if f in v}
        for k, v in doc["nodes"].items()
    }
    errors = sorted((e["node"], e["type"], e["message"]) for e in doc["errors"])
    return {"status": doc["status"], "context": doc["context"], "nodes": nodes, "errors": errors}


_reference: dict[str, dict[str, Any]] = {}


def reference(case: str, state_dir: Path) -> dict[str, Any]:
    """The thread backend's result, computed once per case."""
    if case not in _reference:
        report = run(features(), "thread", None) if case == "features" else None
        _reference[case] = summary(report or run_file(case, "thread", None, state_dir))
    return _reference[case]


@pytest.mark.parametrize("kind", ["process", "dask"])
@pytest.mark.parametrize("case", list(CASES))
def test_blueprints_give_the_thread_result(
    case: str, kind: str, address: str, tmp_path: Path
) -> None:
    expected = reference(case, tmp_path / "thread")
    assert expected["status"] == "completed" and len(expected["context"]) > 2
    assert summary(run_file(case, kind, address, tmp_path / kind)) == expected


@pytest.mark.parametrize("kind", ["process", "dask"])
def test_async_nodes_failures_and_ctx_set_give_the_thread_result(
    kind: str, address: str, tmp_path: Path
) -> None:
    expected = reference("features", tmp_path)
    assert expected["errors"] == [("bad", "ValueError", "boom")]
    assert expected["context"]["note"] == "set by setter"
    assert expected["context"]["doubled"] == [2, 4, 6]
    assert summary(run(features(), kind, address)) == expected


# -- worker side ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["process", "dask"])
def test_a_node_exception_comes_back_with_type_message_and_traceback(
    kind: str, address: str
) -> None:
    out = one(backend(kind, address), Call("bad", N + "always_fails"))
    assert (out.ok, out.error_type, out.message) == (False, "ValueError", "boom")
    assert "in always_fails" in out.traceback and 'raise ValueError("boom")' in out.traceback


@pytest.mark.parametrize("kind", ["process", "dask"])
def test_ctx_set_travels_back_and_later_nodes_see_it(kind: str, address: str) -> None:
    g = graph(
        [task("s", N + "setter"), task("d", "tasks.double", inputs="note")],
        [edge("s", "d")],
        {"note": None, "factor": 2},
    )
    report = run(g, kind, address)
    assert report.context["note"] == "set by s"
    assert report.context["d"] == "set by sset by s"  # tasks.double read `factor` through ctx


@pytest.mark.parametrize("kind", ["process", "dask"])
def test_a_remote_chunk_stops_starting_calls_past_its_budget(kind: str, address: str) -> None:
    """As on threads: the calls behind a slow one come back unrun, for the driver to queue."""
    be = backend(kind, address)
    slow = Call("a", N + "track", (1,), {"delay": 0.1 + chunk_budget_s(be.dispatch_ms)})
    fast = [Call(f"b{i}", N + "track", (i,), {"delay": 0.0}) for i in range(3)]
    try:
        first = be.submit([slow, *fast], budget=True).result(60)
        second = be.submit(fast, budget=True).result(60)
        whole = be.submit([slow, *fast]).result(60)  # a kind's chunk: never cut
    finally:
        be.close()
    assert [o.node for o in first] == ["a"] and first[0].ok
    assert [o.output for o in second] == [0, 1, 2]
    assert [o.output for o in whole] == [1, 0, 1, 2]


@pytest.mark.parametrize("kind", ["process", "dask"])
def test_a_module_the_worker_cannot_import_fails_only_its_node(kind: str, address: str) -> None:
    be = backend(kind, address)
    try:
        bad, good = be.submit(
            [Call("x", "no_such_module.fn"), Call("y", "builtins.abs", (-2,))]
        ).result(60)
    finally:
        be.close()
    assert bad.error_type == "ResolveError" and "PYTHONPATH" in bad.message
    assert (good.ok, good.output) == (True, 2)


def test_workers_also_import_from_their_own_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flowrun_cwd_nodes.py").write_text("def hello():\n    return 'hi'\n")
    monkeypatch.chdir(tmp_path)  # the spawned worker starts here; no dirs are sent
    out = one(backend("process", None, dirs=()), Call("h", "flowrun_cwd_nodes.hello"))
    assert (out.ok, out.output) == (True, "hi"), out.message


def test_a_kwarg_named_key_reaches_the_node_on_dask(address: str) -> None:
    g = graph([task("k", N + "kwargs", params={"key": "v", "workers": 3, "pure": True})])
    assert run(g, "dask", address).context["k"] == {"key": "v", "workers": 3, "pure": True}


def test_the_context_is_shipped_only_to_calls_that_take_ctx() -> None:
    g = graph(
        [
            task("start", "tasks.numbers"),
            task("s", "builtins.sum"),
            batch("d", "xs", "tasks.double"),
        ],
        context={"xs": []},
    )
    context = SharedContext({"factor": 3})
    packer = ContextPacker(resolve(g.blueprint, DIRS), context)
    assert packer.pack([Call("start", "tasks.numbers"), Call("s", "builtins.sum")]) is None
    first = packer.pack([Call("d[0]", "tasks.double", (1,))])
    assert first is not None
    assert packer.pack([Call("d[1]", "tasks.double", (2,))]) is first  # pickled once
    context.set("start", [1, 2])
    assert packer.pack([Call("d[2]", "tasks.double", (3,))]) not in (None, first)


# -- the process pool ----------------------------------------------------------------------


def test_process_nodes_run_in_other_processes_that_ignore_ctrl_c() -> None:
    be = backend("process", None)
    try:
        pid, handler = be.submit(
            [Call("p", "os.getpid"), Call("s", "signal.getsignal", (int(signal.SIGINT),))]
        ).result(60)
    finally:
        be.close()
    assert pid.output != os.getpid()
    assert handler.output == signal.SIG_IGN


def test_a_dead_worker_process_fails_its_call_and_the_pool_recovers() -> None:
    be = backend("process", None)
    try:
        (crash,) = be.submit([Call("crash", "os._exit", (3,))]).result(60)
        (after,) = be.submit([Call("next", "builtins.abs", (-1,))]).result(60)
    finally:
        be.close()
    assert (crash.ok, crash.error_type) == (False, "BrokenProcessPool")
    assert "worker process died while running this call" in crash.message
    assert after.output == 1


def test_only_the_call_that_kills_its_worker_fails_in_its_chunk() -> None:
    be = backend("process", None)
    calls = [Call(f"b[{i}]", "builtins.abs", (-i,), index=i) for i in range(6)]
    calls[3] = Call("b[3]", "os._exit", (3,), index=3)
    try:
        outcomes = be.submit(calls).result(60)
    finally:
        be.close()
    assert [o.ok for o in outcomes] == [True, True, True, False, True, True]
    assert [o.output for o in outcomes if o.ok] == [0, 1, 2, 4, 5]
    assert outcomes[3].error_type == "BrokenProcessPool"


def test_a_dead_worker_process_becomes_a_node_failure() -> None:
    g = graph([task("crash", "os._exit", inputs="code")], context={"code": 3})
    report = run(g, "process", None)
    assert report.status == "failed" and report.nodes["crash"].status == "failed"
    assert [(e["node"], e["type"]) for e in report.errors] == [("crash", "BrokenProcessPool")]


def test_cancel_terminates_a_worker_that_is_running_a_node() -> None:
    be = backend("process", None)
    fut = be.submit([Call("long", "time.sleep", (600,))])
    # Only a started node can be stopped: wait until a worker picked the chunk up.
    for _ in range(600):
        if fut.running():
            break
        threading.Event().wait(0.05)
    be.close(cancel=True)
    with pytest.raises(BrokenProcessPool):
        fut.result(60)  # a worker left running would hold this for 600 s


# -- Dask: setup and errors ----------------------------------------------------------------


def test_dask_without_distributed_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(UsageError, match=r"pip install 'flowrun\[dask\]'") as info:
        backend("dask", None)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("where", ["nonsense", "tcp://127.0.0.1:{port}"])
def test_a_bad_scheduler_address_is_a_usage_error_naming_it(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 0.5)  # dask retries until then
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        where = where.format(port=s.getsockname()[1])  # bound, not listening: refused
        with pytest.raises(UsageError, match=f"--address {where}: cannot connect"):
            backend("dask", where)


def test_default_dask_runs_a_local_cluster_of_worker_processes() -> None:
    g = graph(
        [task("pid", "os.getpid"), task("d", "tasks.double", inputs="factor")],
        context={"factor": 21},
    )
    report = run(g, "dask", None)
    assert report.status == "completed"
    assert report.context["pid"] != os.getpid()
    assert report.context["d"] == 441
