"""SPEC §7: node output captured per node and item, kept in the store, printed under the
failure, never mixed into flowrun's own stdout; `runs show` and `runs clean`; call signatures
checked at validate time; what --fail-fast leaves pending."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flowrun
from flowrun import api, store
from flowrun.cli import app
from flowrun.engine import capture
from flowrun.engine.invoke import Call, CancelScope, run_attempt
from flowrun.node import SharedContext
from flowrun.store import LOCK_NAME

from .test_cli import cli, run_dirs, write

ROOT = Path(__file__).resolve().parents[1]

PRINTING = """\
id: printing
nodes:
  - {id: a, uses: tests.printing_nodes.chatty}
  - {id: f, uses: tests.printing_nodes.fd_writer}
  - id: b
    uses: tests.printing_nodes.loud_failure
    inputs: a
edges:
  - {source: a, target: b}
"""

BATCH = """\
id: items
context: {xs: [0, 1, 2, 3, 4, 5, 6, 7]}
nodes:
  - id: w
    batch: {uses: tests.printing_nodes.echo_item, inputKey: xs, maxFailures: 1}
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "FORCE_COLOR")}
    env["PYTHONPATH"] = str(ROOT)
    env["NO_COLOR"] = "1"
    return env


def test_json_stdout_is_one_document_whatever_nodes_print(tmp_path: Path) -> None:
    # before: stdout started with the node's print and `json.loads` failed
    bp = write(tmp_path, "printing.yaml", PRINTING)
    env = {**_env(), "FLOWRUN_TEST_IMPORT_PRINT": "1"}
    argv = [sys.executable, "-m", "flowrun", "run", str(bp), "--json"]
    argv += ["--state-dir", str(tmp_path / "s")]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)  # the document and nothing else
    assert doc["status"] == "failed"
    assert "printed while importing printing_nodes" in proc.stderr  # import time
    assert "fd-level stdout line" in proc.stderr  # fd level: moved to stderr, not dropped
    assert "hello from chatty" not in proc.stdout


def test_failure_prints_its_own_output_and_the_store_keeps_it(tmp_path: Path) -> None:
    # before: a failed node's output was lost
    bp = write(tmp_path, "printing.yaml", PRINTING)
    out = cli("run", bp, "--state-dir", tmp_path / "s", "--no-progress", traceback=True)
    assert out.code == 1
    assert "--- output of b ---\nabout to fail with 1" in out.stderr
    assert "hello from chatty" not in out.stdout + out.stderr  # a success's output is stored
    logs = cli("runs", "show", "latest", "--logs", "a", "--state-dir", tmp_path / "s")
    assert logs.stdout == "hello from chatty\nto stderr from chatty\n"
    as_json = cli("runs", "show", "latest", "--logs", "b", "--json", "--state-dir", tmp_path / "s")
    assert as_json.json() == [{"attempt": 1, "text": "about to fail with 1\n"}]


def test_each_batch_item_gets_its_own_output(tmp_path: Path) -> None:
    bp = write(tmp_path, "items.yaml", BATCH)
    report = flowrun.run(bp, state_dir=tmp_path / "s", concurrency=4)
    assert report.status == "completed"
    run_id = report.run_id
    for i in range(8):
        found = store.read_logs(tmp_path / "s", run_id, f"w[{i}]")
        assert found == [(1, f"item {i} says hi\n")], i


def test_process_workers_capture_too(tmp_path: Path) -> None:
    bp = write(tmp_path, "items.yaml", BATCH)
    report = flowrun.run(bp, state_dir=tmp_path / "s", concurrency=2, executor="process")
    assert report.status == "completed"
    assert store.read_logs(tmp_path / "s", report.run_id, "w[3]") == [(1, "item 3 says hi\n")]


def test_capture_keeps_the_tail_of_one_mebibyte() -> None:
    call = Call("n", "tests.printing_nodes.flood")
    from tests.printing_nodes import flood

    token = capture.install()
    try:
        out = run_attempt(
            call, flood, wants_ctx=False, is_async=False, run_id="r",
            context=SharedContext({}), cancel=CancelScope(),
        )  # fmt: skip
    finally:
        capture.uninstall(token)
    assert not out.ok
    assert len(out.logs.encode()) <= capture.MAX_LOG_BYTES + 100
    assert out.logs.startswith("[... ") and "characters cut" in out.logs
    assert out.logs.endswith("the last line\n")


def test_writes_outside_an_attempt_reach_the_real_stream(
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = capture.install()
    try:
        print("from flowrun itself")
        capture.begin()
        print("from a node")
        assert capture.end() == "from a node\n"
        capture.begin()
        assert capture.end() == ""  # nothing written: no buffer was made
    finally:
        capture.uninstall(token)
    assert capsys.readouterr().out == "from flowrun itself\n"


SIGNATURES = """\
id: sig
context: {x: 1}
nodes:
  - {id: one, uses: tests.printing_nodes.needs_two, inputs: x}
  - id: kw
    uses: tests.printing_nodes.needs_two
    inputs: {a: x}
    params: {bb: 2}
  - {id: lst, uses: tests.printing_nodes.no_args}
  - id: w
    batch: {uses: tests.printing_nodes.no_args, inputKey: lst}
edges:
  - {source: lst, target: w}
"""


def test_validate_and_run_report_every_signature_problem(tmp_path: Path) -> None:
    # before: validate passed, run failed at run time with 1 problem shown
    bp = write(tmp_path, "sig.yaml", SIGNATURES)
    found = cli("validate", bp)
    assert found.code == 2
    codes = [m["code"] for m in found.problems()]
    assert codes == ["signature.bad-call", "signature.unknown-argument", "signature.no-item"]
    assert "missing a required argument: 'b'" in found.stdout
    assert "has no parameter 'bb' (did you mean 'b'?)" in found.stdout
    assert "cannot take an item" in found.stdout
    ran = cli("run", bp, "--state-dir", tmp_path / "s")
    assert ran.code == 2
    assert [m["code"] for m in ran.problems()] == codes
    assert run_dirs(tmp_path / "s") == []


def test_run_reports_problems_of_every_stage_at_once(tmp_path: Path) -> None:
    text = "id: two\nnodes:\n  - {id: a, uses: tests.printing_nodes.chatty, extra: 1}\n"
    text += "  - {id: b, uses: tests.printing_nodes.nope}\n"
    bp = write(tmp_path, "two.yaml", text)
    assert len(cli("run", bp, "--state-dir", tmp_path / "s").problems()) == len(
        cli("validate", bp).problems()
    )
    assert len(cli("validate", bp).problems()) == 2


def test_a_type_error_from_the_call_itself_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # validate would catch it; switch the check off to see what the run does on its own
    monkeypatch.setattr(api, "check_calls", lambda graph, targets: [])
    text = "id: t\ncontext: {x: 1}\nnodes:\n  - id: n\n    uses: tests.printing_nodes.needs_two\n"
    text += "    inputs: x\n    config: {maxRetries: 3, retryDelay: 1ms}\n"
    report = flowrun.run(write(tmp_path, "t.yaml", text), state_dir=tmp_path / "s")
    assert report.status == "failed"
    assert report.nodes["n"].attempts == 1  # before: 4 attempts
    message = report.errors[0]["message"]
    assert "missing 1 required positional argument: 'b'" in message
    assert "called as tests.printing_nodes.needs_two(input) with input=1, no params" in message


def test_a_type_error_inside_the_function_is_retried(tmp_path: Path) -> None:
    text = "id: t\nnodes:\n  - id: n\n    uses: tests.printing_nodes.needs_two\n"
    text += "    params: {a: 1, b: x}\n    config: {maxRetries: 1, retryDelay: 1ms}\n"
    report = flowrun.run(write(tmp_path, "t.yaml", text), state_dir=tmp_path / "s")
    assert report.nodes["n"].attempts == 2
    assert "called as" not in report.errors[0]["message"]


FAIL_FAST = """\
id: ff
nodes:
  - {id: a, uses: tests.nodes.always_fails}
  - id: b
    uses: tests.nodes.flaky
    params: {fails: 5}
    config: {maxRetries: 3, retryDelay: 300ms}
"""


def test_fail_fast_leaves_a_node_waiting_for_its_retry_pending(tmp_path: Path) -> None:
    # before: b got a final node_failed event and was listed in errors as failed
    events = tmp_path / "events.jsonl"
    bp = write(tmp_path, "ff.yaml", FAIL_FAST)
    out = cli("run", bp, "--fail-fast", "--json", "--events", events,
              "--state-dir", tmp_path / "s", traceback=True)  # fmt: skip
    doc = out.json()
    assert doc["nodes"]["b"]["status"] == "pending"
    assert [e["node"] for e in doc["errors"]] == ["a"]
    failed = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["node"] for e in failed if e["event"] == "node_failed"] == ["a"]
    assert "resume with: flowrun run" in out.stderr


def _runs(tmp_path: Path, n: int) -> list[str]:
    bp = write(tmp_path, "printing.yaml", PRINTING)
    return [flowrun.run(bp, state_dir=tmp_path / "s").run_id for _ in range(n)]


def test_runs_show_text_and_json(tmp_path: Path) -> None:
    (run_id,) = _runs(tmp_path, 1)
    text = cli("runs", "show", "latest", "--state-dir", tmp_path / "s")
    assert text.code == 0
    assert text.stdout.startswith(f"run {run_id}  printing (")
    assert "status failed" in text.stdout
    assert "error: b: ValueError: loud failure" in text.stdout
    shown = CliRunner().invoke(app, ["runs", "show", run_id, "--json", "--state-dir",
                                     str(tmp_path / "s")], env={"NO_COLOR": "1"})  # fmt: skip
    assert shown.exit_code == 0, shown.stderr
    doc = json.loads(shown.stdout)  # tracebacks are part of the document
    assert doc["runId"] == run_id and doc["status"] == "failed"
    assert doc["nodes"]["a"]["status"] == "succeeded" and doc["nodes"]["a"]["logs"] == 1
    assert doc["nodes"]["b"]["error"]["type"] == "ValueError"
    assert "Traceback" in doc["nodes"]["b"]["error"]["traceback"]
    assert doc["nodes"]["b"]["started"] <= doc["nodes"]["b"]["finished"]
    missing = cli("runs", "show", "nope-run", "--state-dir", tmp_path / "s")
    assert missing.code == 2 and "no run 'nope-run'" in missing.stderr


def test_runs_without_a_subcommand_still_lists(tmp_path: Path) -> None:
    (run_id,) = _runs(tmp_path, 1)
    listed = cli("runs", "--state-dir", tmp_path / "s", "--json").json()
    assert [r["run_id"] for r in listed] == [run_id]


def test_runs_clean_keeps_the_newest_and_never_a_held_run(tmp_path: Path) -> None:
    ids = _runs(tmp_path, 4)  # in start order (ids of one second do not sort by start)
    state = tmp_path / "s"
    dry = cli("runs", "clean", "--keep", "1", "--dry-run", "--state-dir", state)
    assert dry.stdout.count("would delete") == 3
    assert len(run_dirs(state)) == 4  # a dry run deletes nothing
    held = store.RunStore.open(state, ids[0])  # another process recording the oldest run
    try:
        out = cli("runs", "clean", "--keep", "1", "--state-dir", state)
    finally:
        held.close()
    assert out.code == 0
    assert sorted(p.name for p in run_dirs(state)) == sorted([ids[0], ids[-1]])
    assert (state / "runs" / ids[0] / LOCK_NAME).exists()
    again = cli("runs", "clean", "--older-than", "1d", "--state-dir", state)
    assert "deleted 0 runs" in again.stderr  # both are younger than a day
    assert cli("runs", "clean", "--state-dir", state).code == 2  # nothing said what to delete
    assert cli("runs", "clean", "--older-than", "soon", "--state-dir", state).code == 2
    assert cli("runs", "clean", "--older-than", "0s", "--state-dir", state).code == 0
    assert run_dirs(state) == []


def test_a_logging_handler_made_at_import_time_is_captured_too(tmp_path: Path) -> None:
    # before: a handler bound to sys.stderr when the module was imported bypassed everything
    text = "id: lg\nnodes:\n  - {id: n, uses: tests.logging_nodes.logs_and_fails}\n"
    out = cli("run", write(tmp_path, "lg.yaml", text), "--state-dir", tmp_path / "s",
              "--no-progress", traceback=True)  # fmt: skip
    assert out.code == 1
    assert "--- output of n ---\nlogged by the node" in out.stderr
    assert out.stderr.count("logged by the node") == 1
