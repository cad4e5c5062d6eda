"""A batch over a subflow reading its items from a file (`itemsFrom`) and writing its results
to one (`outputTo`): one child run per line, results in item order."""

from __future__ import annotations

import json
from pathlib import Path

from flowrun import api

N = "tests.composition_nodes."


def test_a_streamed_batch_over_a_subflow(tmp_path: Path) -> None:
    (tmp_path / "items.jsonl").write_text("1\n2\nnot json\n4\n")
    (tmp_path / "one.yaml").write_text(
        f"context: {{input: null}}\nnodes:\n  - id: add\n    uses: {N}plus\n    inputs: input\n"
    )
    (tmp_path / "p.yaml").write_text(
        "nodes:\n  - id: each\n    batch:\n      itemsFrom: items.jsonl\n"
        "      outputTo: out.jsonl\n      maxFailures: 1\n"
        "      subflow: {blueprint: one.yaml}\n"
    )
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state", concurrency=2)
    assert report.status == "completed", report.errors
    assert report.nodes["each"].items == {"total": 4, "succeeded": 3, "failed": 1}
    assert [e["node"] for e in report.errors] == ["each[2]"]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [2, 3, None, 5]
    assert report.nodes["each[3]/add"].status == "succeeded"
