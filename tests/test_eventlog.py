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


def test_a_chunk_event_is_written_as_the_lines_of_its_items(tmp_path: Path) -> None:
    """The lines of `ItemsStarted` / `ItemsSucceeded` are those of the per-item events they
    stand for (durations to the microsecond), also for a batch name a `%` format would read
    and one beyond ASCII."""
    from flowrun.eventlog import EventLog
    from flowrun.events import ItemsStarted, ItemsSucceeded

    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    started = ItemsStarted(12.5, 'b%d"xé', range(3, 6))
    succeeded = ItemsSucceeded(13.25, 'b%d"xé', [3, 4, 5], [1.23456, 0.5, 20.0], [1, 2, 3])
    log.chunks[ItemsStarted](started)
    log.chunks[ItemsSucceeded](succeeded)
    one_by_one = next(iter(started.expand()))
    log(one_by_one)  # an event written on its own
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    expected = [e.to_json() for e in started.expand()]
    for e in succeeded.expand():
        one = e.to_json()
        one["duration_ms"] = round(one["duration_ms"], 3)
        expected.append(one)
    expected.append(one_by_one.to_json())
    assert lines == expected
    assert [e["node"] for e in lines[:3]] == ['b%d"xé[3]', 'b%d"xé[4]', 'b%d"xé[5]']


def test_an_events_file_that_cannot_be_written_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    """A full disk under `--events`: the run goes on to its end, then exit 1 naming the file,
    once, and no traceback."""
    bp = tmp_path / "demo.yaml"
    bp.write_text(BLUEPRINT)
    state = tmp_path / "s"
    out = CliRunner().invoke(
        app, ["run", str(bp), "-c", "1", "--events", "/dev/full", "--state-dir", str(state)]
    )
    assert out.exit_code == 1, out.output
    assert out.stderr.count("--events /dev/full: cannot write: No space left on device") == 1
    assert "Traceback" not in out.output
    listed = CliRunner().invoke(app, ["runs", "--state-dir", str(state), "--json"])
    assert json.loads(listed.stdout)[0]["status"] == "completed"
