"""Call signatures of loop bodies and of the nodes of child blueprints (subflows, batches over
subflows, loops over subflows) are checked by `validate` and `run` like top-level tasks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowrun import api
from flowrun.errors import BlueprintError

N = "tests.composition_nodes."
REPO = Path(__file__).resolve().parents[1]

CHILD = f"""\
context: {{input: null}}
nodes:
  - id: add
    uses: {N}plus
    inputs: input
    params: {{byy: 2}}
"""

PARENT = """\
context: {xs: [1, 2]}
nodes:
  - id: start
    uses: tests.nodes.ident
    inputs: xs
  - id: sub
    subflow: {blueprint: child.yaml}
  - id: each
    batch: {inputKey: xs, subflow: {blueprint: child.yaml}}
  - id: poll
    loop: {subflow: {blueprint: child.yaml}, while: "iteration < 2", maxIterations: 2}
edges:
  - {source: start, target: sub}
  - {source: start, target: poll}
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "child.yaml").write_text(CHILD)
    (tmp_path / "p.yaml").write_text(PARENT)
    return tmp_path


def test_a_child_node_call_is_checked_at_the_child_file_once(files: Path) -> None:
    (problem,) = api.validate_file(files / "p.yaml")  # three nodes run the file: one problem
    assert (Path(problem.file).name, problem.line, problem.column) == ("child.yaml", 6, 19)
    assert problem.code == "signature.unknown-argument"
    assert "has no parameter 'byy' (did you mean 'by'?)" in problem.message
    with pytest.raises(BlueprintError) as caught:
        api.prepare(files / "p.yaml")
    assert [p.code for p in caught.value.problems] == ["signature.unknown-argument"]


def test_run_refuses_a_bad_child_call_with_exit_2_and_runs_nothing(files: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flowrun", "run", "p.yaml", "--state-dir", "state"],
        cwd=files,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "child.yaml:6:19:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (files / "state" / "runs").exists() or not any((files / "state" / "runs").iterdir())


def test_a_child_node_that_cannot_take_its_input(files: Path) -> None:
    (files / "child.yaml").write_text(
        CHILD.replace("plus", "fresh").replace("    params: {byy: 2}\n", "")
    )
    (problem,) = api.validate_file(files / "p.yaml")
    assert (Path(problem.file).name, problem.line, problem.code) == (
        "child.yaml", 4, "signature.bad-call"
    )  # fmt: skip
    assert "too many positional arguments" in problem.message


def _loop(tmp_path: Path, stanza: str, edge: bool = False) -> Path:
    text = "nodes:\n  - id: start\n    uses: tests.nodes.numbers\n"
    text += f"  - id: poll\n    loop:\n{stanza}      while: 'iteration < 2'\n"
    text += "      maxIterations: 2\n"
    text += "edges:\n  - {source: start, target: poll}\n" if edge else ""
    (tmp_path / "loop.yaml").write_text(text)
    return tmp_path / "loop.yaml"


def test_a_loop_body_with_an_unknown_param(tmp_path: Path) -> None:
    path = _loop(tmp_path, f"      uses: {N}plus\n      params: {{byy: 1}}\n", edge=True)
    (problem,) = api.validate_file(path)
    assert (problem.line, problem.code) == (7, "signature.unknown-argument")
    assert problem.message.startswith(f"loop 'poll' body: {N}plus(")
    assert problem.message.endswith(f"flowrun calls it as {N}plus(input, **params)")


def test_a_loop_body_must_take_the_previous_output_from_the_second_iteration(
    tmp_path: Path,
) -> None:
    # the first iteration has no input (no predecessor): fresh() fits it, but not fresh(output)
    path = _loop(tmp_path, f"      uses: {N}fresh\n")
    (problem,) = api.validate_file(path)
    assert (problem.line, problem.code, problem.path) == (
        6, "signature.bad-call", "$.nodes[1].loop.uses"
    )  # fmt: skip
    assert "too many positional arguments" in problem.message


def test_a_loop_body_that_fits_both_calls_passes(tmp_path: Path) -> None:
    assert api.validate_file(_loop(tmp_path, f"      uses: {N}plus\n", edge=False)) != []
    # plus(x) needs an input on the first iteration too: with a predecessor it has one
    assert api.validate_file(_loop(tmp_path, f"      uses: {N}plus\n", edge=True)) == []
