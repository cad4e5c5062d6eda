"""CI integration (SPEC §9) and selection and dry runs (SPEC §10), through the command line."""

from __future__ import annotations

import json
import os
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowrun.cli import app

ENV: dict[str, str | None] = {
    "NO_COLOR": "1",
    "FORCE_COLOR": None,
    "CI": None,
    "GITHUB_ACTIONS": None,
    "GITHUB_STEP_SUMMARY": None,
    "FLOWRUN_STATE_DIR": None,
    "COLUMNS": "120",
}

# Each node appends its id to calls.txt: what ran, in order, is in the file.
PIPELINE = """\
id: pipe
context: {files: [a, b, c]}
nodes:
  - id: fetch
    shell: "echo fetch >> calls.txt; echo ok"
  - id: lint
    batch:
      shell: "echo lint-${{ input }} >> calls.txt; test ${{ input }} != ${{ context.bad }}"
      inputKey: files
  - id: test
    shell: "echo test >> calls.txt"
  - id: package
    shell: "echo package >> calls.txt"
  - id: docs
    shell: "echo docs >> calls.txt"
edges:
  - {source: fetch, target: lint}
  - {source: lint, target: test}
  - {source: test, target: package}
"""


def cli(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={**ENV, **(env or {})})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "pipe.yaml"
    path.write_text(PIPELINE.replace("${{ context.bad }}", "zz"))
    return path


def calls(tmp_path: Path) -> list[str]:
    f = tmp_path / "calls.txt"
    return f.read_text().split() if f.exists() else []


# -- usage errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--address", "tcp://127.0.0.1:1"], "--address needs --executor dask"),
        (["--allow-changed"], "--allow-changed needs --resume"),
        (["--from", "test"], "--from needs --resume"),
        (["--target", "tset"], "no node 'tset' in the blueprint (did you mean 'test'?)"),
        (["--resume", "latest", "--from", "pakage"], "did you mean 'package'?"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(pipe: Path, args: list[str], says: str) -> None:
    code, _out, err = cli("run", str(pipe), "--no-progress", *args)
    assert code == 2
    assert says in err
    assert "Traceback" not in err
    assert calls(pipe.parent) == []
    assert not (pipe.parent / ".flowrun").exists()


# -- dry runs and selection ----------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_runs_nothing(pipe: Path) -> None:
    code, out, _err = cli("run", str(pipe), "--dry-run", "--target", "lint")
    assert code == 0
    assert out.splitlines() == [
        "plan for pipe: nothing is run",
        "  run    fetch",
        "  run    lint",
        "  skip   test     (not needed by --target)",
        "  skip   package  (not needed by --target)",
        "  skip   docs     (not needed by --target)",
    ]
    assert calls(pipe.parent) == []
    assert not (pipe.parent / ".flowrun").exists()


def test_target_runs_the_node_and_what_it_needs(pipe: Path) -> None:
    code, out, _ = cli("run", str(pipe), "--no-progress", "--json", "--target", "test")
    assert code == 0
    doc = json.loads(out)
    assert sorted(calls(pipe.parent)) == ["fetch", "lint-a", "lint-b", "lint-c", "test"]
    assert doc["nodes"]["package"]["status"] == "skipped"
    assert doc["nodes"]["docs"]["status"] == "skipped"
    assert list(doc["nodes"]) == ["fetch", "lint", "test", "package", "docs"]


def test_from_reruns_downstream_and_reuses_the_rest(pipe: Path) -> None:
    assert cli("run", str(pipe), "--no-progress")[0] == 0
    (pipe.parent / "calls.txt").unlink()
    _code, out, _ = cli("run", str(pipe), "--resume", "latest", "--from", "test", "--dry-run",
                       "--json")  # fmt: skip
    plan = {k: v["plan"] for k, v in json.loads(out)["nodes"].items()}
    assert plan == {"fetch": "reuse", "lint": "reuse", "test": "run", "package": "run",
                    "docs": "reuse"}  # fmt: skip
    assert calls(pipe.parent) == []
    assert cli("run", str(pipe), "--no-progress", "--resume", "latest", "--from", "test")[0] == 0
    assert calls(pipe.parent) == ["test", "package"]


# -- where runs live -----------------------------------------------------------------------------


def test_dash_c_runs_as_if_started_there(pipe: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    code, _, _ = cli("-C", str(pipe.parent), "run", "pipe.yaml", "--no-progress")
    assert code == 0
    assert (pipe.parent / ".flowrun" / "runs").is_dir()
    assert not (elsewhere / ".flowrun").exists()


def test_flowrun_state_dir_is_the_default_state_dir(pipe: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, _, _ = cli("run", str(pipe), "--no-progress", env={"FLOWRUN_STATE_DIR": str(state)})
    assert code == 0
    assert len(list((state / "runs").iterdir())) == 1


def test_resume_latest_with_nothing_says_where_it_looked(pipe: Path, tmp_path: Path) -> None:
    code, _, err = cli("run", str(pipe), "--resume", "latest", "--state-dir", str(tmp_path / "x"))
    assert code == 2
    assert str(tmp_path / "x" / "runs") in err
    assert "it does not exist" in err and "-C DIR" in err


def test_dash_h_is_help_and_completion_is_offered() -> None:
    code, out, _ = cli("-h")
    assert code == 0
    assert "--install-completion" in out and "--show-completion" in out
    assert "Usage" in cli("run", "-h")[1]


# -- GitHub Actions and JUnit --------------------------------------------------------------------


@pytest.fixture
def failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "pipe.yaml"
    path.write_text(PIPELINE.replace("${{ context.bad }}", "b"))
    return path


def test_github_annotations_groups_and_summary(failing: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    code, out, err = cli("run", str(failing), "--no-progress", "--json", env=env)
    assert code == 1
    json.loads(out)  # stdout is still only the document
    errors = [line for line in err.splitlines() if line.startswith("::error ")]
    assert len(errors) == 1
    assert errors[0].startswith(f"::error file={failing},line=6,title=node lint[1] failed::")
    assert "ShellError: command `echo lint-b" in errors[0]
    assert "exited with code 1" in errors[0] and "\n" not in errors[0]
    lines = err.splitlines()
    start = lines.index("::group::lint[1]: ShellError (traceback)")
    assert "::endgroup::" in lines[start + 1 :]
    text = summary.read_text()
    assert text.startswith("## ❌ flowrun `pipe`: failed")
    assert "| `lint` | failed |  |  | 2/3 ok, 1 failed |" in text
    assert "| `test` | pending |" in text
    assert "**`lint[1]`**: ShellError" in text


def test_no_annotations_outside_github_actions(failing: Path) -> None:
    _, _, err = cli("run", str(failing), "--no-progress")
    assert "::error" not in err


# The JUnit shape GitLab, Jenkins (junit-10.xsd) and CircleCI read: elements and attributes.
JUNIT = {
    "testsuites": {"name", "tests", "failures", "errors", "time"},
    "testsuite": {"name", "id", "tests", "failures", "errors", "skipped", "time"},
    "testcase": {"classname", "name", "time"},
    "failure": {"message", "type"},
    "skipped": {"message"},
}
CHILDREN = {"testsuites": {"testsuite"}, "testsuite": {"testcase"},
            "testcase": {"failure", "skipped"}, "failure": set(), "skipped": set()}  # fmt: skip


def check_junit(el: ET.Element) -> None:
    assert el.tag in JUNIT, el.tag
    assert set(el.attrib) <= JUNIT[el.tag], (el.tag, el.attrib)
    for child in el:
        assert child.tag in CHILDREN[el.tag], (el.tag, child.tag)
        check_junit(child)


def test_junit_report(failing: Path, tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    code, _, _ = cli("run", str(failing), "--no-progress", "--junit", str(report))
    assert code == 1
    root = ET.parse(report).getroot()
    check_junit(root)
    (suite,) = root
    cases = {c.get("name"): c for c in suite}
    assert list(cases) == ["fetch", "lint", "lint[1]", "test", "package", "docs"]
    assert suite.get("tests") == "6" and suite.get("failures") == "2"
    assert suite.get("skipped") == "2"
    item = cases["lint[1]"].find("failure")
    assert item is not None and item.get("type") == "ShellError"
    assert "exited with code 1" in (item.get("message") or "")
    assert item.text and "ShellError" in item.text
    batch = cases["lint"].find("failure")
    assert batch is not None and batch.get("message") == "1 of 3 items failed"
    assert cases["fetch"].find("failure") is None and cases["fetch"].find("skipped") is None
    assert cases["test"].find("skipped") is not None
    for case in suite:
        float(case.get("time") or "x")


def test_junit_escapes_control_characters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(
        textwrap.dedent("""\
        id: ctl
        nodes:
          - id: bad
            shell: 'printf "bell\\007 and esc\\033[31m" >&2; exit 1'

        """)
    )
    report = tmp_path / "j.xml"
    assert cli("run", str(path), "--no-progress", "--junit", str(report))[0] == 1
    root = ET.parse(report).getroot()  # it parses: no raw control characters
    failure = root.find("./testsuite/testcase/failure")
    assert failure is not None and "bell\ufffd and esc\ufffd[31m" in (failure.get("message") or "")
