"""The `--events` file for a run with a batch, a retry and a skip, read back in order."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flowrun.cli import app

BLUEPRINT = """\
id: events-demo
context: {xs: [1, 2]}
nodes:
  - id: flaky
    uses: tests.nodes.flaky
    params: {fails: 1}
    config: {maxRetries: 1, retryDelay: 1}
  - id: route
    uses: tests.nodes.route
    params: {to: left}
  - {id: left, uses: tests.nodes.ident}
  - {id: right, uses: tests.nodes.ident}
  - id: B
    batch: {uses: tests.nodes.track, inputKey: xs}
edges:
  - {source: flaky, target: route}
  - {source: route, target: left, action: left}
  - {source: route, target: right, action: right}
  - {source: left, target: B}
"""


def test_event_file_sequence(tmp_path: Path) -> None:
    bp = tmp_path / "demo.yaml"
    bp.write_text(BLUEPRINT)
    events = tmp_path / "events.jsonl"
    out = CliRunner().invoke(
        app,
        ["run", str(bp), "-c", "1", "--events", str(events), "--state-dir", str(tmp_path / "s")],
    )
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["event"], e.get("node")) for e in lines] == [
        ("run_started", None),
        ("node_started", "flaky"),
        ("node_retry", "flaky"),
        ("node_started", "flaky"),
        ("node_succeeded", "flaky"),
        ("node_started", "route"),
        ("node_succeeded", "route"),
        ("node_skipped", "right"),
        ("node_started", "left"),
        ("node_succeeded", "left"),
        ("batch_started", "B"),
        ("node_started", "B[0]"),
        ("node_succeeded", "B[0]"),
        ("node_started", "B[1]"),
        ("node_succeeded", "B[1]"),
        ("batch_finished", "B"),
        ("run_finished", None),
    ]
    retry = lines[2]
    assert (retry["attempt"], retry["error_type"], retry["delay_s"]) == (
        1,
        "ConnectionError",
        0.001,
    )
    assert lines[4]["attempt"] == 2
    assert lines[11]["batch"] == "B" and lines[11]["index"] == 0
    assert lines[-2]["total"] == 2 and lines[-2]["succeeded"] == 2
    assert lines[-1]["status"] == "completed"
    assert all(isinstance(e["ts"], float) for e in lines)
    assert all("output" not in e for e in lines)  # outputs live in the state store
