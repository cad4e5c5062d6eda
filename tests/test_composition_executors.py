"""Thread, process and Dask give the same `--json` document for a blueprint with a subflow, a
loop, a loop over a subflow and a batch over a subflow: child nodes are ordinary calls,
shipped like any other, and each sees its own child run's context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import pytest

from flowrun import api

N = "tests.composition_nodes."

VIEW = f"""\
context: {{input: null, who: null, scratch: null}}
nodes:
  - id: view
    uses: {N}context_view
    inputs: input
  - id: later
    uses: {N}read_scratch
edges:
  - {{source: view, target: later}}
"""

LOOK = f"""\
context: {{input: null}}
nodes:
  - id: look
    uses: {N}step
    inputs: input
"""

PARENT = f"""\
context: {{name: ada, secret: parent-only}}
nodes:
  - id: start
    uses: tests.nodes.numbers
    params: {{n: 5}}
  - id: sub
    subflow:
      blueprint: view.yaml
      inputs: {{who: name}}
      outputs: {{view: view, later: later, scratch: scratch}}
  - id: each
    batch:
      inputKey: start
      subflow: {{blueprint: view.yaml, inputs: {{who: name}}, outputs: view}}
  - id: poll
    loop:
      uses: tests.nodes.poll
      params: {{ready_at: 3}}
      while: "output.state != 'done'"
      maxIterations: 5
  - id: looks
    loop:
      subflow: {{blueprint: look.yaml}}
      while: "output.state != 'done'"
      maxIterations: 5
  - id: after
    uses: {N}read_scratch
edges:
  - {{source: start, target: sub}}
  - {{source: start, target: each}}
  - {{source: sub, target: after}}
  - {{source: each, target: after}}
  - {{source: poll, target: after}}
  - {{source: looks, target: after}}
"""


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    # Worker processes of their own on 127.0.0.1: every call is shipped to them
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
        dashboard_address=None,
    )  # fmt: skip
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _doc(tmp_path: Path, executor: str, address: str | None = None) -> dict[str, Any]:
    report = api.run(
        tmp_path / "p.yaml", state_dir=tmp_path / executor, executor=executor,
        address=address, concurrency=3,
    )  # fmt: skip
    doc = report.as_dict()
    doc.pop("runId")
    doc.pop("durationMs", None)
    for node in doc["nodes"].values():
        node.pop("durationMs", None)
    return doc


def test_thread_process_and_dask_agree_on_subflows_and_loops(tmp_path: Path, address: str) -> None:
    (tmp_path / "view.yaml").write_text(VIEW)
    (tmp_path / "look.yaml").write_text(LOOK)
    (tmp_path / "p.yaml").write_text(PARENT)
    thread = _doc(tmp_path, "thread")
    assert thread["status"] == "completed", thread["errors"]
    ctx = thread["context"]
    assert ctx["sub"]["view"] == {"input": [10, 20, 30, 40, 50], "who": "ada", "secret": None}
    assert ctx["sub"]["scratch"] == "set by sub/view"
    assert [v["input"] for v in ctx["each"]] == [10, 20, 30, 40, 50]
    assert ctx["poll"] == {"checks": 3, "state": "done"}
    assert ctx["looks"] == {"looks": 3, "state": "done"}
    assert ctx["after"] is None and "scratch" not in ctx  # nothing leaked from a child
    assert thread["nodes"]["looks#3/look"]["status"] == "succeeded"
    assert thread["nodes"]["each[4]/later"]["status"] == "succeeded"
    assert _doc(tmp_path, "process") == thread
    assert _doc(tmp_path, "dask", address) == thread
