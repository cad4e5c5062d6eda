"""`flowrun.std.shell`, the `shell:` shorthand and `${{ }}` interpolation (SPEC §8)."""

from __future__ import annotations

import os
import pickle
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import flowrun
from flowrun.api import validate_file
from flowrun.expr.compiler import ExprEvalError
from flowrun.expr.template import Params, Template, compile_template
from flowrun.std.shell import ShellError, shell


def write(tmp_path: Path, body: str, name: str = "bp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def run(path: Path, **kw: Any) -> dict[str, Any]:
    report = flowrun.run(path, state_dir=path.parent / ".state", **kw)
    return report.as_dict()


# -- the function, called as user code -------------------------------------------------------


def test_list_command_runs_without_a_shell() -> None:
    assert shell(command=["echo", "a b", "$HOME"]) == "a b $HOME"


def test_string_command_runs_through_sh() -> None:
    assert shell(command="echo one; echo two", output="lines") == ["one", "two"]


def test_output_modes() -> None:
    assert shell(command="echo '{\"a\": [1, 2]}'", output="json") == {"a": [1, 2]}
    assert shell(command="printf 'x\\n\\n'") == "x\n"  # only the trailing newline goes
    assert shell(command="echo hi", output="none") is None


def test_env_and_cwd(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    out = shell(command="echo $GREETING; pwd", env={"GREETING": "hey"}, cwd="sub",
                _dir=str(tmp_path), output="lines")  # fmt: skip
    assert out == ["hey", str(tmp_path / "sub")]


def test_a_bare_program_name_is_found_on_the_commands_path(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for where, says in ((one, "first"), (two, "second")):
        where.mkdir()
        tool = where / "flowrun-test-tool"
        tool.write_text(f'#!/bin/sh\necho "{says} $1"\n')
        tool.chmod(0o755)
    assert shell(command=["flowrun-test-tool", "x"], env={"PATH": str(one)}) == "first x"
    assert shell(command=["flowrun-test-tool", "y"], env={"PATH": str(two)}) == "second y"
    (one / "flowrun-test-tool").unlink()  # found once, gone now: looked up again
    with pytest.raises(ShellError, match="cannot start"):
        shell(command=["flowrun-test-tool"], env={"PATH": str(one)})


def test_a_background_child_holding_stdout_does_not_hold_the_node(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    started = time.monotonic()
    assert shell(command=f"sleep 30 & echo $! > {pidfile}; echo done") == "done"
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)  # killed with the group when the shell exited


def test_a_failing_command_says_its_exit_code_and_stderr_tail() -> None:
    script = "for i in $(seq 1 30); do echo line$i >&2; done; exit 3"
    with pytest.raises(ShellError) as info:
        shell(command=script)
    message = str(info.value)
    assert info.value.exit_code == 3
    assert "exited with code 3" in message
    assert "line30" in message and "line11" in message and "line10\n" not in message


def test_check_false_returns_the_output_of_a_failing_command() -> None:
    assert shell(command="echo partial; exit 1", check=False) == "partial"


def test_a_command_that_is_not_a_string_or_list_is_refused() -> None:
    with pytest.raises(TypeError, match="must be a string"):
        shell(command=3)  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    path = write(
        tmp_path,
        f"""\
        id: slow
        nodes:
          - id: wait
            shell: "sleep 30 & echo $! > {pidfile}; wait"
            config: {{timeout: 300ms}}
        """,
    )
    started = time.monotonic()
    doc = run(path)
    assert doc["status"] == "failed"
    assert doc["errors"][0]["type"] == "AttemptTimeout"
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)  # the grandchild `sleep`, not only the shell, is gone


# -- templates ---------------------------------------------------------------------------------


def test_a_whole_string_template_keeps_its_type() -> None:
    tpl = compile_template("${{ input }}", ["input"])
    assert isinstance(tpl, Template)
    assert tpl.render({"input": [1, 2]}) == [1, 2]


def test_spliced_values_are_text_and_dollar_dollar_is_literal() -> None:
    tpl = compile_template("n=${{ input }} b=${{ input > 1 }} $${{ x }}", ["input"])
    assert isinstance(tpl, Template)
    assert tpl.render({"input": 2}) == "n=2 b=true ${{ x }}"
    assert compile_template("$${{ only literal }}", []) == "${{ only literal }}"


def test_params_pickle_and_render_after() -> None:
    params = Params({"x": compile_template("${{ input + 1 }}", ["input"]), "y": 5})
    again = pickle.loads(pickle.dumps(params))
    assert again.render((1,), {}) == {"x": 2, "y": 5}


def test_a_missing_environment_variable_names_it() -> None:
    params = Params({"x": compile_template("${{ env.FLOWRUN_SURELY_UNSET }}", ["env"])})
    with pytest.raises(ExprEvalError, match="FLOWRUN_SURELY_UNSET"):
        params.render((), {})


def test_items_cannot_inject_shell_syntax(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        id: inject
        context:
          items: ['"; touch pwned; echo "', "$(touch pwned)", "`touch pwned`", "a b"]
        nodes:
          - id: echo
            batch:
              shell: "printf '%s|' ${{ input }} && echo"
              inputKey: items
        """,
    )
    doc = run(path)
    assert doc["status"] == "completed"
    assert doc["context"]["echo"] == [
        '"; touch pwned; echo "|', "$(touch pwned)|", "`touch pwned`|", "a b|",
    ]  # fmt: skip
    assert not (tmp_path / "pwned").exists()


def test_shell_nodes_read_node_outputs_and_run_in_the_blueprint_dir(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("x\ny\n")
    path = write(
        tmp_path,
        """\
        id: pipeline
        nodes:
          - id: files
            shell: "cat data.txt"
            params: {output: lines}
          - id: count
            uses: flowrun.std.shell
            params:
              command: ["echo", "${{ len(files) }} files, first ${{ files[0] }}"]
          - id: typed
            uses: builtins.dict
            inputs: {first: files.0}
            params: {n: "${{ len(files) }}", names: "${{ files }}"}
        edges:
          - {source: files, target: count}
          - {source: count, target: typed}
        """,
    )
    doc = run(path)
    assert doc["context"]["count"] == "2 files, first x"
    assert doc["context"]["typed"] == {"first": "x", "n": 2, "names": ["x", "y"]}


def test_a_missing_env_var_fails_the_node(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        id: env
        nodes:
          - id: a
            shell: "echo ${{ env.FLOWRUN_SURELY_UNSET }}"
        """,
    )
    doc = run(path)
    assert doc["status"] == "failed"
    assert doc["errors"][0]["node"] == "a"
    assert "environment variable 'FLOWRUN_SURELY_UNSET' is not set" in doc["errors"][0]["message"]


def test_the_failure_message_reaches_the_report(tmp_path: Path) -> None:
    path = write(tmp_path, "id: f\nnodes:\n  - id: a\n    shell: 'echo oops >&2; exit 4'\n")
    doc = run(path)
    assert doc["errors"][0]["type"] == "ShellError"
    assert "exited with code 4" in doc["errors"][0]["message"]
    assert "oops" in doc["errors"][0]["message"]


def test_shell_batches_run_on_the_process_executor(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        id: proc
        context: {items: [1, 2, 3], tag: t}
        nodes:
          - id: each
            batch:
              shell: "echo ${{ context.tag }}${{ input * 2 }}"
              inputKey: items
        """,
    )
    doc = run(path, executor="process", concurrency=2)
    assert doc["context"]["each"] == ["t2", "t4", "t6"]


# -- validation ----------------------------------------------------------------------------------


def test_bad_shell_params_and_templates_are_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        id: bad
        nodes:
          - id: a
            shell: "echo ${{ inptu }}"
          - id: b
            uses: flowrun.std.shell
            params: {command: 3, outptu: lines}
          - id: c
            batch: {shell: ["x", "${{ 1 + }}"], inputKey: items}
          - id: d
            uses: builtins.print
            params: {msg: "${{ nope }}"}
        context: {items: []}
        """,
    )
    found = [(p.line, p.column, p.code, p.message) for p in validate_file(path)]
    assert found[0][:3] == (4, 22, "expr-interpolation")
    assert "did you mean 'input'" in found[0][3]
    assert found[1][:3] == (7, 23, "params.command")
    assert found[2][:3] == (7, 26, "params.unknown-key")
    assert "did you mean 'output'" in found[2][3]
    assert found[3][2] == "expr-interpolation" and found[3][0] == 9
    assert found[4][:3] == (12, 24, "expr-interpolation")
    assert len(found) == 5


def test_shell_and_uses_together_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "id: x\nnodes:\n  - id: a\n    shell: ls\n    uses: builtins.print\n")
    (problem,) = validate_file(path)
    assert problem.code == "schema.node-kind" and "both 'uses' and 'shell'" in problem.message


class _Cancelled:
    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.cancelled.set()


@pytest.mark.parametrize("fallback", ["no-pidfd", "pipes"])
def test_the_fallbacks_wait_and_stop_the_same_way(
    fallback: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    std_shell = sys.modules["flowrun.std.shell"]  # `flowrun.std.shell` names the function

    if fallback == "pipes":
        monkeypatch.setattr(std_shell, "_MEMFD", False)
    else:

        def no_pidfd(pid: int) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(std_shell.os, "pidfd_open", no_pidfd)
    assert shell(command="echo out; echo err >&2", output="lines") == ["out"]
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(ShellError, match="was stopped"):
        shell(command=f"sleep 30 & echo $! > {pidfile}; wait", ctx=_Cancelled())  # type: ignore[arg-type]
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)


@pytest.mark.parametrize("start", ["fork_exec", "popen"])
def test_both_ways_of_starting_a_command_behave_the_same(
    start: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    std_shell = sys.modules["flowrun.std.shell"]
    if start == "popen":
        monkeypatch.setattr(std_shell, "_fork_exec", None)
    elif std_shell._fork_exec is None:
        pytest.skip("this interpreter starts commands through Popen only")
    script = tmp_path / "no-shebang"
    script.write_bytes(b"\x7fELF not really")
    script.chmod(0o755)
    (tmp_path / "sub").mkdir()
    out = shell(command='echo "$GREETING"; pwd; echo err >&2; exit 0', env={"GREETING": 1},
                cwd="sub", _dir=str(tmp_path), output="lines")  # fmt: skip
    assert out == ["1", str(tmp_path / "sub")]
    assert shell(command=["printf", "%s|", "a b", "$HOME"]) == "a b|$HOME|"
    with pytest.raises(ShellError) as info:
        shell(command="echo bad >&2; kill -TERM $$")
    assert info.value.exit_code == -15 and "was killed by SIGTERM" in str(info.value)
    assert "bad" in str(info.value)
    cases = [
        (["flowrun-no-such-program"], None, "No such file or directory"),
        ([str(tmp_path / "missing")], None, "No such file or directory"),
        (["true"], "no-such-dir", "No such file or directory"),
        ([str(tmp_path / "sub")], None, "Permission denied"),
        ([str(script)], None, "Exec format error"),
    ]
    for command, cwd, why in cases:
        with pytest.raises(ShellError) as info:
            shell(command=command, cwd=cwd, _dir=str(tmp_path))
        where = os.path.join(str(tmp_path), cwd or "")
        assert str(info.value) == f"cannot start command `{command[0]}` in {where}: {why}"
    with pytest.raises(ValueError, match="illegal environment variable name"):
        shell(command=["true"], env={"A=B": "x"})
    pid = int(shell(command="echo $$"))
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(pid, os.WNOHANG)


def test_a_fork_exec_that_refuses_the_arguments_falls_back_to_popen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    std_shell = sys.modules["flowrun.std.shell"]
    calls: list[int] = []

    def other_signature(*args: Any) -> int:
        calls.append(len(args))
        raise TypeError("fork_exec() takes exactly 22 arguments")

    monkeypatch.setattr(std_shell, "_fork_exec", other_signature)
    assert shell(command=["echo", "still runs"]) == "still runs"
    assert std_shell._fork_exec is None  # Popen from now on, without trying again
    assert shell(command="echo again") == "again"
    assert calls == [23]


class _Interrupted(Exception):
    pass


def test_a_wait_cut_short_by_an_exception_still_reaps_the_command(tmp_path: Path) -> None:
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    pidfile = tmp_path / "cmd.pid"
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(_Interrupted):
            shell(command=f"echo $$ > {pidfile}; sleep 30")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(ChildProcessError):  # killed with its group and reaped: no zombie
        os.waitpid(int(pidfile.read_text()), os.WNOHANG)
