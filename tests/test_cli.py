"""The `flowrun` command line: exit codes, what goes to stdout and what to stderr, and the exact
text a wrong blueprint gets.

Most tests drive the Typer app in-process with `typer.testing.CliRunner`, which captures stdout
and stderr apart; a few run `python -m flowrun` in a subprocess. Bad blueprints live in
`tests/bad/` (with the node modules they name); the exact output of `validate` and `run` for
each is in `tests/golden/errors/<case>.txt`. The commands run from the repository root with
relative paths, so the text holds no absolute path. After an intended change to a message,
regenerate the golden files and read the diff::

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_cli.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from typer.testing import CliRunner

import flowrun
from flowrun.cli import app

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "errors"
SEED = ROOT / "blueprints" / "batch-workflow.yaml"
SEED_JSON = ROOT / "blueprints" / "batch-workflow.json"
REVIEW = ROOT / "blueprints" / "review.yaml"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

# Plain output whatever terminal or CI the tests run in.
ENV: dict[str, str | None] = {
    "NO_COLOR": "1",
    "FORCE_COLOR": None,
    "CI": None,
    "TTY_COMPATIBLE": None,
    "TTY_INTERACTIVE": None,
    "COLUMNS": "120",
}
ANSI = re.compile(r"\x1b\[")
PROBLEM = re.compile(
    r"^(?P<file>\S+):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)"
    r" \[(?P<code>[\w.-]+) at (?P<path>\$\S*)\]$"
)
SUMMARY = re.compile(r"^\d+ problems? in \d+ files?$")


@dataclass(frozen=True)
class Out:
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"

    def json(self) -> Any:
        return json.loads(self.stdout)

    def problems(self) -> list[re.Match[str]]:
        """The `file:line:col: message [code at $.path]` lines of stdout or stderr."""
        lines = (self.stdout + self.stderr).splitlines()
        return [m for line in lines if (m := PROBLEM.match(line))]


def cli(
    *args: str | Path, traceback: bool = False, env: dict[str, str | None] | None = None
) -> Out:
    """Run `flowrun ARGS` in-process. Only a failing node may print a traceback (on stderr)."""
    result = CliRunner().invoke(
        app,
        [str(a) for a in args],
        env={**ENV, **(env or {})},
        catch_exceptions=False,  # an unexpected exception fails the test with its traceback
        prog_name="flowrun",
    )
    out = Out(result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in out.stdout, out
    assert ("Traceback" in out.stderr) is traceback, out
    assert not ANSI.search(out.stdout + out.stderr), out
    return out


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def run_dirs(state_dir: Path) -> list[Path]:
    runs = state_dir / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.exists() else []


# Blueprints built for these tests; their functions are in tests/nodes.py.
FAILING = """\
id: failing
nodes:
  - {id: a, uses: tests.nodes.numbers}
  - {id: b, uses: tests.nodes.always_fails}
  - {id: c, uses: tests.nodes.ident}
edges:
  - {source: a, target: b}
  - {source: b, target: c}
"""

ECHO = """\
id: echo
context: {count: 1, enabled: false, name: anon, ratio: 0.5, label: x, empty: x}
nodes:
  - id: echo
    uses: tests.nodes.kwargs
    inputs:
      count: count
      enabled: enabled
      name: name
      ratio: ratio
      label: label
      empty: empty
"""


@pytest.fixture
def failing(tmp_path: Path) -> Path:
    return write(tmp_path, "failing.yaml", FAILING)


# -- --version, --help, unknown commands -------------------------------------------------------


def test_version() -> None:
    out = cli("--version")
    assert (out.code, out.stdout, out.stderr) == (0, f"flowrun {flowrun.__version__}\n", "")


def test_help_lists_every_command() -> None:
    out = cli("--help")
    assert out.code == 0 and out.stderr == ""
    for command in ("validate", "graph", "schema", "run", "runs"):
        assert re.search(rf"^\s+{command}\s", out.stdout, re.M), out


def test_no_arguments_shows_the_help() -> None:
    out = cli()
    assert out.code == 2
    assert "Usage: flowrun" in out.stdout + out.stderr


def test_run_help_names_every_option_of_the_spec() -> None:
    out = cli("run", "--help")
    assert out.code == 0
    for option in (
        "--concurrency", "-c", "--set", "--context", "--json", "--events", "--no-progress",
        "--quiet", "--fail-fast", "--keep-going", "--executor", "--address", "--resume",
        "--state-dir",
    ):  # fmt: skip
        assert re.search(rf"(^|[\s,]){re.escape(option)}\b", out.stdout), option
    # value placeholders a user can read, not Python type names
    assert "--set KEY=VALUE" in out.stdout
    assert "list[str]" not in out.stdout


def test_unknown_command_is_a_usage_error() -> None:
    out = cli("frobnicate")
    assert out.code == 2 and out.stdout == ""
    assert "No such command 'frobnicate'" in out.stderr


# -- schema ------------------------------------------------------------------------------------


def test_schema_prints_a_draft_2020_12_json_schema() -> None:
    out = cli("schema")
    assert out.code == 0 and out.stderr == ""
    schema = out.json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", [SEED, SEED_JSON], ids=lambda p: p.name)
def test_the_seed_blueprint_satisfies_the_printed_schema(path: Path) -> None:
    validator = Draft202012Validator(cli("schema").json())
    with path.open(encoding="utf-8") as f:
        data = json.load(f) if path.suffix == ".json" else yaml.safe_load(f)
    assert list(validator.iter_errors(data)) == []


def test_the_printed_schema_rejects_an_unknown_key() -> None:
    validator = Draft202012Validator(cli("schema").json())
    data = yaml.safe_load((ROOT / "tests" / "bad" / "unknown-keys.yaml").read_text())
    assert not validator.is_valid(data)


# -- run: stdout, stderr and the --json document -----------------------------------------------


def test_run_json_prints_exactly_one_document_and_progress_on_stderr(tmp_path: Path) -> None:
    out = cli("run", SEED, "--json", "--state-dir", tmp_path)
    assert out.code == 0, out
    doc = out.json()  # json.loads refuses anything after the document
    assert list(doc) == ["blueprint", "runId", "status", "context", "nodes", "errors"]
    assert doc["blueprint"] == "batch-workflow"
    assert doc["status"] == "completed"
    assert [p.name for p in run_dirs(tmp_path)] == [doc["runId"]]
    assert doc["context"] == {
        "factor": 2,
        "start": [10, 20, 30],
        "doubled": [20, 40, 60],
        "sum-results": 120,
    }
    nodes = doc["nodes"]
    assert list(nodes) == ["start", "double-items", "sum-results"]
    assert nodes["double-items"] == {
        "status": "succeeded",
        "items": {"total": 3, "succeeded": 3, "failed": 0},
    }
    for task in ("start", "sum-results"):
        assert set(nodes[task]) == {"status", "attempts", "durationMs"}
        assert nodes[task]["status"] == "succeeded" and nodes[task]["attempts"] == 1
        assert nodes[task]["durationMs"] >= 0
    assert doc["errors"] == []
    # progress: plain timestamped lines on stderr, one of them for each node
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+start\s+succeeded", out.stderr, re.M)
    assert "double-items" in out.stderr and "sum-results" in out.stderr


def test_run_without_json_prints_the_final_outputs(tmp_path: Path) -> None:
    out = cli("run", SEED, "--state-dir", tmp_path)
    assert out.code == 0
    assert out.stdout == "sum-results: 120\n"
    assert "started" in out.stderr


def test_a_failing_node_exits_1_with_its_traceback_on_stderr(failing: Path, tmp_path: Path) -> None:
    out = cli("run", failing, "--json", "--state-dir", tmp_path / "state", traceback=True)
    assert out.code == 1
    doc = out.json()
    assert doc["status"] == "failed"
    assert {n: r["status"] for n, r in doc["nodes"].items()} == {
        "a": "succeeded",
        "b": "failed",
        "c": "pending",
    }
    assert doc["errors"] == [{"node": "b", "type": "ValueError", "message": "boom"}]
    assert doc["context"] == {"a": [10, 20, 30]}
    assert "b failed (attempt 1): ValueError: boom" in out.stderr
    assert 'raise ValueError("boom")' in out.stderr  # the node's own source line


def test_quiet_prints_nothing_when_the_run_succeeds(tmp_path: Path) -> None:
    out = cli("run", SEED, "--quiet", "--state-dir", tmp_path)
    assert (out.code, out.stdout, out.stderr) == (0, "", "")
    out = cli("run", SEED, "--quiet", "--json", "--state-dir", tmp_path)
    assert out.code == 0 and out.stderr == ""
    assert out.json()["context"]["sum-results"] == 120


def test_quiet_prints_only_the_errors(failing: Path, tmp_path: Path) -> None:
    out = cli("run", failing, "--quiet", "--state-dir", tmp_path, traceback=True)
    assert out.code == 1
    assert out.stdout == ""
    assert out.stderr.startswith("b failed (attempt 1): ValueError: boom\nTraceback")
    assert "started" not in out.stderr and "succeeded" not in out.stderr


def test_no_progress_keeps_stderr_empty_on_success(tmp_path: Path) -> None:
    out = cli("run", SEED, "--no-progress", "--state-dir", tmp_path)
    assert (out.code, out.stdout, out.stderr) == (0, "sum-results: 120\n", "")


def test_no_progress_still_prints_a_failure_with_its_traceback(
    failing: Path, tmp_path: Path
) -> None:
    out = cli("run", failing, "--no-progress", "--state-dir", tmp_path, traceback=True)
    assert out.code == 1
    assert out.stdout == ""
    assert out.stderr.startswith("b failed (attempt 1): ValueError: boom\nTraceback")
    assert "started" not in out.stderr


EXPR_FAILS = """\
id: expr-fails
nodes:
  - {id: a, uses: tests.nodes.numbers}
  - {id: b, uses: tests.nodes.ident}
edges:
  - {source: a, target: b, condition: "output.size > 1"}  # a list has no .size
"""


@pytest.mark.parametrize("mode", ["--no-progress", "--quiet", "--keep-going"])
def test_an_edge_expression_failing_at_run_time_is_reported_on_stderr(
    mode: str, tmp_path: Path
) -> None:
    """SPEC: it fails its source node with a clear message, never silently."""
    path = write(tmp_path, "expr.yaml", EXPR_FAILS)
    out = cli("run", path, mode, "--state-dir", tmp_path / "state")
    assert out.code == 1
    assert re.search(r'\ba failed.*: ExprEvalError: condition "output.size > 1": ', out.stderr), out


def test_an_edge_expression_failing_at_run_time_is_a_node_failed_event(tmp_path: Path) -> None:
    path = write(tmp_path, "expr.yaml", EXPR_FAILS)
    events = tmp_path / "events.jsonl"
    out = cli("run", path, "--events", events, "--state-dir", tmp_path / "state")
    assert out.code == 1
    (last, *_) = [e for e in reversed(read_events(events)) if e.get("node") == "a"]
    assert last["event"] == "node_failed"
    assert last["error_type"] == "ExprEvalError"
    assert ["a", "failed"] in [line.split()[:2] for line in out.stderr.splitlines()], out


# -- run: --set, --context, --concurrency ------------------------------------------------------


def test_set_parses_values_as_yaml_scalars(tmp_path: Path) -> None:
    path = write(tmp_path, "echo.yaml", ECHO)
    out = cli(
        "run", path, "--json", "--state-dir", tmp_path / "state",
        "--set", "count=3", "--set", "enabled=true", "--set", "name=alice",
        "--set", "ratio=2.5", "--set", "label='42'", "--set", "empty=",
    )  # fmt: skip
    assert out.code == 0, out
    echoed = out.json()["context"]["echo"]
    assert echoed == {
        "count": 3,
        "enabled": True,
        "name": "alice",
        "ratio": 2.5,
        "label": "42",
        "empty": "",
    }
    assert type(echoed["count"]) is int and type(echoed["enabled"]) is bool


def test_set_of_an_unknown_key_exits_2_with_did_you_mean(tmp_path: Path) -> None:
    out = cli("run", SEED, "--set", "factr=3", "--state-dir", tmp_path)
    assert out.code == 2 and out.stdout == ""
    assert out.stderr == (
        "flowrun: error: --set factr: 'factr' is not a context key of the blueprint "
        "(did you mean 'factor'?); declare it under `context:` (null is fine)\n"
    )
    assert run_dirs(tmp_path) == []


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("factor", "flowrun: error: --set 'factor': expected KEY=VALUE\n"),
        ("=3", "flowrun: error: --set '=3': expected KEY=VALUE\n"),
        ("factor=[1", "flowrun: error: --set factor: cannot parse '[1' as a YAML value\n"),
    ],
)
def test_a_malformed_set_exits_2(item: str, message: str, tmp_path: Path) -> None:
    out = cli("run", SEED, "--set", item, "--state-dir", tmp_path)
    assert (out.code, out.stdout, out.stderr) == (2, "", message)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_set_wins_over_context_file_which_wins_over_the_blueprint(
    suffix: str, tmp_path: Path
) -> None:
    text = '{"factor": 5}' if suffix == ".json" else "factor: 5\n"
    context = write(tmp_path, f"context{suffix}", text)
    state = tmp_path / "state"

    def total(*args: str | Path) -> int:
        out = cli("run", SEED, "--json", "--state-dir", state, *args)
        assert out.code == 0, out
        result: int = out.json()["context"]["sum-results"]
        return result

    assert total() == 120  # the blueprint's factor: 2
    assert total("--context", context) == 300
    assert total("--context", context, "--set", "factor=7") == 420
    assert total("--set", "factor=7", "--context", context) == 420


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "file not found: 'ctx.yaml'"),
        ("- 1\n- 2\n", "the top level must be a mapping (key: value pairs), found a list"),
        ("factor: [1\n", "invalid YAML"),
    ],
    ids=["missing", "a-list", "malformed"],
)
def test_a_bad_context_file_exits_2(
    text: str | None, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if text is not None:
        write(tmp_path, "ctx.yaml", text)
    out = cli("run", SEED, "--context", "ctx.yaml", "--state-dir", "state")
    assert out.code == 2 and out.stdout == ""
    assert out.stderr.startswith("flowrun: error: --context: ctx.yaml:")
    assert expected in out.stderr
    assert len(out.stderr.splitlines()) == 1
    assert run_dirs(tmp_path / "state") == []


def test_a_context_file_key_the_blueprint_does_not_declare_exits_2(tmp_path: Path) -> None:
    context = write(tmp_path, "context.json", '{"factr": 5}')
    out = cli("run", SEED, "--context", context, "--state-dir", tmp_path / "state")
    assert out.code == 2
    assert "factr" in out.stderr and "did you mean 'factor'?" in out.stderr


@pytest.mark.parametrize("value", ["0", "-1"])
def test_concurrency_below_1_is_a_usage_error(value: str, tmp_path: Path) -> None:
    out = cli("run", SEED, "--concurrency", value, "--state-dir", tmp_path)
    assert out.code == 2 and out.stdout == ""
    assert "--concurrency" in out.stderr
    assert run_dirs(tmp_path) == []


# -- run: --events, --fail-fast, --state-dir ---------------------------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_events_file_gets_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    out = cli("run", SEED, "--events", path, "--json", "--state-dir", tmp_path / "state")
    assert out.code == 0
    events = read_events(path)
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "run_finished"
    assert names.count("run_started") == names.count("run_finished") == 1
    assert events[-1]["status"] == "completed"
    for e in events:
        assert isinstance(e["ts"], float), e
        if e["event"].startswith(("node_", "batch_")):
            assert isinstance(e["node"], str) and e["node"], e
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    started = {e["node"] for e in events if e["event"] == "node_started"}
    assert started == {
        "start",
        "double-items[0]",
        "double-items[1]",
        "double-items[2]",
        "sum-results",
    }
    batch = [e for e in events if e["event"].startswith("batch_")]
    assert [(e["event"], e["node"]) for e in batch] == [
        ("batch_started", "double-items"),
        ("batch_finished", "double-items"),
    ]
    assert out.json()["status"] == "completed"  # stdout still holds only the document


def test_events_file_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for _ in range(2):
        assert cli("run", SEED, "--events", path, "--quiet", "--state-dir", tmp_path).code == 0
    names = [e["event"] for e in read_events(path)]
    assert names.count("run_started") == names.count("run_finished") == 2


def test_events_file_that_cannot_be_opened_exits_2(tmp_path: Path) -> None:
    out = cli(
        "run", SEED, "--events", tmp_path / "no" / "such" / "dir.jsonl", "--state-dir", tmp_path
    )
    assert out.code == 2
    assert out.stderr.startswith("flowrun: error: --events ")
    assert run_dirs(tmp_path) == []


FAIL_FAST = """\
id: fail-fast
nodes:
  - {id: boom, uses: tests.nodes.always_fails}
  - {id: other, uses: tests.nodes.numbers}
  - {id: after, uses: tests.nodes.ident}
edges:
  - {source: other, target: after}
"""


@pytest.mark.parametrize(
    ("flag", "other"),
    [("--fail-fast", "pending"), ("--keep-going", "succeeded"), (None, "succeeded")],
)
def test_fail_fast_stops_starting_work_keep_going_finishes_independent_branches(
    flag: str | None, other: str, tmp_path: Path
) -> None:
    # With one slot, `boom` (first in the file) runs and fails before `other` can start.
    path = write(tmp_path, "ff.yaml", FAIL_FAST)
    args = [flag] if flag else []
    out = cli(
        "run", path, "-c", "1", "--json", *args, "--state-dir", tmp_path / "s", traceback=True
    )
    assert out.code == 1
    doc = out.json()
    assert doc["status"] == "failed"
    statuses = {n: r["status"] for n, r in doc["nodes"].items()}
    assert statuses == {"boom": "failed", "other": other, "after": other}


def test_state_dir_holds_the_run(tmp_path: Path) -> None:
    out = cli("run", SEED, "--json", "--state-dir", tmp_path / "state")
    run_id = out.json()["runId"]
    assert run_dirs(tmp_path / "state") == [tmp_path / "state" / "runs" / run_id]
    assert any((tmp_path / "state" / "runs" / run_id).iterdir())


def test_runs_are_kept_in_dot_flowrun_of_the_current_directory_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_id = cli("run", SEED, "--json").json()["runId"]
    assert run_dirs(tmp_path / ".flowrun") == [tmp_path / ".flowrun" / "runs" / run_id]
    listed = cli("runs", "--json").json()
    assert [r["run_id"] for r in listed] == [run_id]


# -- runs --------------------------------------------------------------------------------------


def test_runs_lists_the_runs_with_their_status(failing: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    ok = cli("run", SEED, "--json", "--state-dir", state).json()["runId"]
    bad = cli("run", failing, "--json", "--state-dir", state, traceback=True).json()["runId"]

    listed = cli("runs", "--json", "--state-dir", state)
    assert listed.code == 0 and listed.stderr == ""
    found = {r["run_id"]: r for r in listed.json()}
    assert set(found) == {ok, bad}
    assert (found[ok]["status"], found[ok]["blueprint_id"]) == ("completed", "batch-workflow")
    assert (found[bad]["status"], found[bad]["blueprint_id"]) == ("failed", "failing")

    table = cli("runs", "--state-dir", state, env={"COLUMNS": "80"})
    assert table.code == 0 and table.stderr == ""
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["run", "id"]
    for run_id, status, blueprint in (
        (ok, "completed", "batch-workflow"),
        (bad, "failed", "failing"),
    ):
        (line,) = [line for line in lines if run_id in line.split()]  # the whole id, never cut
        assert [blueprint, status] == line.split()[1:3]


def test_runs_with_no_runs(tmp_path: Path) -> None:
    out = cli("runs", "--state-dir", tmp_path)
    assert (out.code, out.stdout) == (0, "")
    assert "no runs under" in out.stderr
    out = cli("runs", "--json", "--state-dir", tmp_path)
    assert (out.code, out.json(), out.stderr) == (0, [], "")


def test_runs_on_a_state_dir_that_is_a_file_exits_2(tmp_path: Path) -> None:
    not_a_dir = write(tmp_path, "state", "")
    out = cli("runs", "--state-dir", not_a_dir)
    assert out.code == 2 and out.stdout == ""
    assert out.stderr.startswith("flowrun: error: cannot list runs in ")
    assert len(out.stderr.splitlines()) == 1


# -- validate ----------------------------------------------------------------------------------


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root, so paths (and messages) are relative."""
    monkeypatch.chdir(ROOT)


@pytest.mark.usefixtures("at_root")
def test_validate_checks_several_files_in_one_run() -> None:
    out = cli(
        "validate",
        "blueprints/batch-workflow.yaml",
        "tests/bad/duplicate-ids.yaml",
        "blueprints/review.yaml",
        "tests/bad/cycle.yaml",
    )
    assert out.code == 2 and out.stderr == ""
    lines = out.stdout.splitlines()
    assert lines[0] == "blueprints/batch-workflow.yaml: ok"
    assert lines[1].startswith("tests/bad/duplicate-ids.yaml:7:9: node id 'load' is used twice")
    assert lines[2] == "blueprints/review.yaml: ok"
    assert lines[3].startswith("tests/bad/cycle.yaml:")
    assert lines[4:] == ["2 problems in 2 files"]
    assert [m["file"] for m in out.problems()] == [
        "tests/bad/duplicate-ids.yaml",
        "tests/bad/cycle.yaml",
    ]


@pytest.mark.usefixtures("at_root")
def test_validate_exits_0_when_every_file_is_clean() -> None:
    out = cli("validate", "blueprints/batch-workflow.yaml", "blueprints/batch-workflow.json")
    assert (out.code, out.stderr) == (0, "")
    assert out.stdout == "blueprints/batch-workflow.yaml: ok\nblueprints/batch-workflow.json: ok\n"


@pytest.mark.usefixtures("at_root")
def test_validate_text_lines_name_file_line_column_message_code_and_path() -> None:
    out = cli("validate", "tests/bad/several-problems.yaml")
    lines = out.stdout.splitlines()
    assert SUMMARY.match(lines[-1]), out
    matches = [PROBLEM.match(line) for line in lines[:-1]]
    assert all(matches), out
    assert {m["file"] for m in matches if m} == {"tests/bad/several-problems.yaml"}
    assert lines[-1] == f"{len(matches)} problems in 1 file"


@pytest.mark.usefixtures("at_root")
def test_validate_format_json() -> None:
    files = ["tests/bad/unknown-keys.yaml", "blueprints/etl.yaml", "tests/bad/malformed.json"]
    out = cli("validate", "--format", "json", *files)
    assert out.code == 2 and out.stderr == ""
    problems = out.json()
    assert isinstance(problems, list) and problems
    keys = ["file", "line", "column", "path", "code", "message", "severity"]
    for p in problems:
        assert list(p) == keys
        assert p["severity"] == "error"
        assert isinstance(p["line"], int) and isinstance(p["column"], int)
        assert p["line"] >= 1 and p["column"] >= 1
        assert p["path"].startswith("$")
    assert [p["file"] for p in problems] == ["tests/bad/unknown-keys.yaml"] * 4 + [
        "tests/bad/malformed.json"
    ]
    assert problems[1] == {
        "file": "tests/bad/unknown-keys.yaml",
        "line": 6,
        "column": 5,
        "path": "$.nodes[0].prams",
        "code": "schema.unknown-key",
        "message": "node 'a': unknown key 'prams' (did you mean 'params'?)",
        "severity": "error",
    }
    # the same problems as the text format, in the same order
    text = cli("validate", *files).problems()
    assert [(p["line"], p["column"], p["message"]) for p in problems] == [
        (int(m["line"]), int(m["col"]), m["msg"]) for m in text
    ]


@pytest.mark.usefixtures("at_root")
def test_validate_format_json_of_clean_files_is_an_empty_list() -> None:
    out = cli("validate", "--format", "json", "blueprints/review.yaml")
    assert (out.code, out.json(), out.stderr) == (0, [], "")


@pytest.mark.usefixtures("at_root")
def test_validate_format_github() -> None:
    out = cli("validate", "--format", "github", "tests/bad/bad-fallbacks.yaml")
    assert out.code == 2 and out.stderr == ""
    assert out.stdout == (
        "::error file=tests/bad/bad-fallbacks.yaml,line=5,col=24::"
        "fallback 'outbx' is not a node (did you mean 'outbox'?)\n"
        "::error file=tests/bad/bad-fallbacks.yaml,line=10,col=24::"
        "node 'notify' cannot be its own fallback\n"
    )


def test_validate_format_github_escapes_percent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "pct.yaml",
        "id: pct\nnodes:\n  - {id: a, uses: builtins.list}\n  - {id: b, uses: builtins.list}\n"
        "edges:\n  - {source: a, target: b, condition: 'output %'}\n",
    )
    out = cli("validate", "--format", "github", "pct.yaml")
    assert out.code == 2
    (line,) = out.stdout.splitlines()
    assert re.fullmatch(r"::error file=pct\.yaml,line=6,col=\d+::condition 'output %25': .+", line)


# -- graph -------------------------------------------------------------------------------------

GRAPH_GOLDEN = ROOT / "tests" / "golden" / "graph"


@pytest.mark.parametrize(
    ("fmt", "suffix"), [("ascii", "txt"), ("mermaid", "mmd"), ("dot", "dot"), ("json", "json")]
)
def test_graph_of_the_seed_matches_the_renderer_golden_file(fmt: str, suffix: str) -> None:
    out = cli("graph", SEED, "--format", fmt)
    assert out.code == 0 and out.stderr == ""
    assert out.stdout == (GRAPH_GOLDEN / f"seed.{suffix}").read_text(encoding="utf-8")


def test_graph_formats_of_the_seed() -> None:
    ascii_ = cli("graph", SEED).stdout
    assert ascii_ == cli("graph", SEED, "--format", "ascii").stdout
    assert "double-items_scatter" in ascii_ and "scatter" in ascii_.replace("_scatter", "")
    assert "double-items_gather" in ascii_ and "gather" in ascii_.replace("_gather", "")

    mermaid = cli("graph", SEED, "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart TD\n")

    dot = cli("graph", SEED, "--format", "dot").stdout
    assert dot.startswith("digraph")
    assert dot.rstrip().endswith("}") and dot.count("{") == dot.count("}")

    graph = json.loads(cli("graph", SEED, "--format", "json").stdout)
    assert graph["nodes"] == [
        {"id": "start", "kind": "task"},
        {"id": "double-items_scatter", "kind": "scatter"},
        {"id": "double-items", "kind": "worker"},
        {"id": "double-items_gather", "kind": "gather"},
        {"id": "sum-results", "kind": "task"},
    ]
    assert sorted((e["source"], e["target"]) for e in graph["edges"]) == [
        ("double-items", "double-items_gather"),
        ("double-items_gather", "sum-results"),
        ("double-items_scatter", "double-items"),
        ("start", "double-items_scatter"),
    ]
    for edge in graph["edges"]:
        assert list(edge) == ["source", "target", "action", "condition"]


def test_graph_shows_actions_and_conditions_on_edges() -> None:
    graph = json.loads(cli("graph", REVIEW, "--format", "json").stdout)
    labelled = {(e["source"], e["target"]): (e["action"], e["condition"]) for e in graph["edges"]}
    assert labelled[("classify", "reject")] == ("reject", None)
    assert labelled[("reject", "notify-author")] == (None, "output.score < 0.2")
    assert "flowchart TD" in cli("graph", REVIEW, "--format", "mermaid").stdout


@pytest.mark.usefixtures("at_root")
@pytest.mark.parametrize("fmt", ["ascii", "mermaid", "dot", "json"])
def test_graph_of_a_bad_file_exits_2(fmt: str) -> None:
    out = cli("graph", "tests/bad/cycle.yaml", "--format", fmt)
    assert out.code == 2 and out.stdout == ""
    assert [m["code"] for m in out.problems()] == ["cycle"]


def test_graph_with_an_unknown_format_is_a_usage_error() -> None:
    out = cli("graph", SEED, "--format", "png")
    assert out.code == 2 and out.stdout == ""
    assert "'png' is not one of 'ascii', 'mermaid', 'dot', 'json'" in out.stderr


# -- bad input: exit 2, one line per problem, no traceback, nothing runs -----------------------
#
# Each case is a file under tests/bad/ (or a path that names nothing). The golden file holds
# what `flowrun validate FILE` and `flowrun run FILE` print. The run also gets --state-dir and
# --events in a temporary directory (left out of the golden text), to show that nothing ran.

BAD_CASES = {
    "malformed-yaml": "tests/bad/malformed.yaml",
    "malformed-json": "tests/bad/malformed.json",
    "empty-file": "tests/bad/empty.yaml",
    "top-level-list": "tests/bad/top-level-list.yaml",
    "binary": "tests/bad/binary.yaml",
    "not-utf8": "tests/bad/latin1.yaml",
    "missing-file": "tests/bad/does-not-exist.yaml",
    "directory": "tests/bad/directory.yaml",
    "unknown-keys": "tests/bad/unknown-keys.yaml",
    "wrong-types": "tests/bad/wrong-types.yaml",
    "reserved-ids": "tests/bad/reserved-ids.yaml",
    "duplicate-ids": "tests/bad/duplicate-ids.yaml",
    "duplicate-keys": "tests/bad/duplicate-keys.yaml",
    "cycle": "tests/bad/cycle.yaml",
    "unknown-edge-nodes": "tests/bad/unknown-edge-nodes.yaml",
    "unknown-sources": "tests/bad/unknown-sources.yaml",
    "not-upstream": "tests/bad/not-upstream.yaml",
    "expr-syntax": "tests/bad/expr-syntax.yaml",
    "expr-unknown-name": "tests/bad/expr-unknown-name.yaml",
    "expr-dunder": "tests/bad/expr-dunder.yaml",
    "expr-call": "tests/bad/expr-call.yaml",
    "bad-fallbacks": "tests/bad/bad-fallbacks.yaml",
    "bad-durations": "tests/bad/bad-durations.yaml",
    "uses-not-found": "tests/bad/uses-not-found.yaml",
    "uses-module-typo": "tests/bad/uses-module-typo.yaml",
    "uses-attribute-typo": "tests/bad/uses-attribute-typo.yaml",
    "uses-not-callable": "tests/bad/uses-not-callable.yaml",
    "uses-import-raises": "tests/bad/uses-import-raises.yaml",
    "uses-missing-dependency": "tests/bad/uses-missing-dependency.yaml",
    "several-problems": "tests/bad/several-problems.yaml",
    "several-schema-problems": "tests/bad/several-schema-problems.json",
}


def transcript(command: str, out: Out) -> str:
    stdout = f"--- stdout:\n{out.stdout}" if out.stdout else "--- stdout: (empty)\n"
    stderr = f"--- stderr:\n{out.stderr}" if out.stderr else "--- stderr: (empty)\n"
    return f"$ {command}\n--- exit {out.code}\n{stdout}{stderr}"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}; create it with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.usefixtures("at_root")
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input(case: str, tmp_path: Path) -> None:
    path = BAD_CASES[case]
    state, events = tmp_path / "state", tmp_path / "events.jsonl"
    checked = cli("validate", path)
    ran = cli("run", path, "--state-dir", state, "--events", events)

    check_golden(case, transcript(f"flowrun validate {path}", checked) + "\n"
                 + transcript(f"flowrun run {path}", ran))  # fmt: skip

    assert checked.code == ran.code == 2
    assert checked.stderr == ran.stdout == ""
    # `run` prints the problems `validate` found, without the count
    *problems, count = checked.stdout.splitlines()
    assert ran.stderr.splitlines() == problems
    assert count == f"{len(problems)} problem{'s' * (len(problems) > 1)} in 1 file"
    for line in problems:
        match = PROBLEM.match(line)
        assert match, line
        assert match["file"] == path
    # no node ran: no run directory, not one event
    assert not state.exists()
    assert events.read_text() == ""
    for out in (checked, ran):
        text = out.stdout + out.stderr
        assert str(ROOT) not in text and str(tmp_path) not in text

    # `graph` reports the same problems, except those only an import finds (it imports nothing)
    drawn = cli("graph", path)
    without_imports = [line for line in problems if " [resolve." not in line]
    if without_imports:
        assert (drawn.code, drawn.stdout) == (2, "")
        assert drawn.stderr.splitlines() == without_imports


def test_every_golden_error_file_has_its_case() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.txt")) == sorted(BAD_CASES)


@pytest.mark.usefixtures("at_root")
def test_several_problems_of_different_stages_come_in_one_run() -> None:
    codes = [m["code"] for m in cli("validate", "tests/bad/several-problems.yaml").problems()]
    assert sorted(codes) == sorted([
        "resolve.no-attribute", "resolve.not-found", "unknown-source", "unknown-fallback",
        "duplicate-id", "resolve.import-error", "unknown-node", "expr-condition",
    ])  # fmt: skip


EXPR_HEAD = "id: x\nnodes:\n  - {id: a, uses: builtins.list}\n  - {id: b, uses: builtins.list}\n"


@pytest.mark.parametrize(
    ("name", "edges", "points_at"),
    [
        (
            "plain.yaml",
            "edges:\n  - source: a\n    target: b\n    condition: 1 < outptu\n",
            "outptu",
        ),
        ("single.yaml", "edges:\n  - {source: a, target: b, condition: '1 < outptu'}\n", "outptu"),
        ("double.yaml", 'edges:\n  - {source: a, target: b, condition: "1 < outptu"}\n', "outptu"),
        ("indented.yaml", "edges:\n  - {source: a, target: b, condition: '  outptu'}\n", "outptu"),
        # the text of the value differs from the file (an escape, a folded block): the value
        ("escaped.yaml", 'edges:\n  - {source: a, target: b, condition: "\\x31 < outptu"}\n', '"'),
        (
            "block.yaml",
            "edges:\n  - source: a\n    target: b\n    condition: >-\n      1 < outptu\n",
            ">-",
        ),
    ],
)
def test_an_expression_problem_points_at_its_column_inside_the_value(
    name: str, edges: str, points_at: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = EXPR_HEAD + edges
    write(tmp_path, name, text)
    (match,) = cli("validate", name).problems()
    assert match["code"] == "expr-condition"
    line = text.splitlines()[int(match["line"]) - 1]
    assert line[int(match["col"]) - 1 :].startswith(points_at), (line, match["col"])


def test_an_expression_problem_in_json_points_inside_the_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = json.dumps(
        {
            "id": "x",
            "nodes": [{"id": "a", "uses": "builtins.list"}, {"id": "b", "uses": "builtins.list"}],
            "edges": [{"source": "a", "target": "b", "transform": "output.__dict__"}],
        },
        indent=1,
    )
    write(tmp_path, "x.json", text)
    (match,) = cli("validate", "x.json").problems()
    line = text.splitlines()[int(match["line"]) - 1]
    assert line[int(match["col"]) - 1 :].startswith('__dict__"'), (line, match["col"])


@pytest.mark.usefixtures("at_root")
@pytest.mark.parametrize("path", ["tests/bad", "tests/bad/no-such-blueprint"])
def test_a_path_without_extension_says_what_is_wrong_with_it(path: str) -> None:
    out = cli("validate", path)
    assert out.code == 2
    assert "is a directory" in out.stdout or "file not found" in out.stdout, out


# -- python -m flowrun (a real process) --------------------------------------------------------


def python_m(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CI", "TTY_COMPATIBLE")}
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "flowrun", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_m_flowrun_version() -> None:
    proc = python_m("--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        f"flowrun {flowrun.__version__}\n",
        "",
    )


def test_python_m_flowrun_run_json(tmp_path: Path) -> None:
    proc = python_m("run", SEED, "--json", "--state-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["context"]["sum-results"] == 120
    assert "started" in proc.stderr
    assert not ANSI.search(proc.stdout + proc.stderr)


def test_python_m_flowrun_on_a_bad_blueprint_prints_the_golden_problems(tmp_path: Path) -> None:
    proc = python_m("run", "tests/bad/several-problems.yaml", "--state-dir", tmp_path / "s")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    golden = (GOLDEN / "several-problems.txt").read_text(encoding="utf-8")
    assert golden.endswith("--- stderr:\n" + proc.stderr)
    assert not (tmp_path / "s").exists()
