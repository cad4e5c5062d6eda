"""`loop.subflow` (SPEC §6): each iteration of a loop is one child run of another blueprint."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowrun import api
from flowrun import events as ev
from flowrun.errors import BlueprintError
from tests import composition_nodes as cn

N = "tests.composition_nodes."

LOOK = f"""\
context: {{input: null, stop_file: null}}
nodes:
  - id: look
    uses: {N}step
    inputs: input
  - id: check
    uses: {N}check_unless
    params: {{stop_file: "${{{{ context.stop_file }}}}"}}
edges:
  - {{source: look, target: check}}
"""


def looping(extra: str = "", inputs: str = "") -> str:
    return f"""\
context: {{stop: nothing}}
nodes:
  - id: start
    uses: builtins.dict
    params: {{looks: 0}}
  - id: poll
    loop:
      subflow: {{blueprint: look.yaml{inputs}}}
      while: "output.state != 'done'"
      maxIterations: 5{extra}
  - id: after
    uses: builtins.str
    inputs: poll.looks
edges:
  - {{source: start, target: poll}}
  - {{source: poll, target: after}}
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "look.yaml").write_text(LOOK)
    (tmp_path / "loop.yaml").write_text(looping())
    cn.reset()
    return tmp_path


def test_each_iteration_is_a_child_run_fed_the_last_output(files: Path) -> None:
    seen: list[ev.Event] = []
    report = api.run(files / "loop.yaml", state_dir=files / "state", sinks=[seen.append])
    assert report.status == "completed"
    assert report.context["poll"] == {"looks": 3, "state": "done"}  # the last iteration's
    assert report.context["after"] == "3"
    assert report.nodes["poll"].items == {"total": 3, "succeeded": 3, "failed": 0}
    for k in (1, 2, 3):
        assert report.nodes[f"poll#{k}/look"].status == "succeeded"
        assert report.nodes[f"poll#{k}/check"].status == "succeeded"
    assert "poll#4/look" not in report.nodes
    assert cn.calls == {f"poll#{k}/{n}": 1 for k in (1, 2, 3) for n in ("look", "check")}
    iterations = [e.node for e in seen if isinstance(e, ev.NodeSucceeded) and e.batch == "poll"]
    assert iterations == ["poll#1", "poll#2", "poll#3"]  # each recorded as it finished
    assert "look" not in report.context and "check" not in report.context  # the child's own


def test_max_iterations_with_while_still_true_fails_saying_so(files: Path) -> None:
    (files / "loop.yaml").write_text(looping().replace("maxIterations: 5", "maxIterations: 2"))
    report = api.run(files / "loop.yaml", state_dir=files / "state")
    assert report.status == "failed"
    (error,) = report.errors
    assert error["type"] == "LoopLimitError"
    assert "reached maxIterations (2)" in error["message"]


def test_subflow_inputs_set_child_keys_in_every_iteration(files: Path) -> None:
    stop = files / "stop-file"
    stop.write_text("")
    (files / "loop.yaml").write_text(looping(inputs=", inputs: {stop_file: stop}"))
    report = api.run(files / "loop.yaml", state_dir=files / "state")
    # the context key `stop` is 'nothing', not the file: the third look passes
    assert report.status == "completed"


def test_resume_continues_after_the_last_finished_iteration_and_inside_it(files: Path) -> None:
    stop = files / "stop-file"
    stop.write_text("")
    (files / "loop.yaml").write_text(
        looping(inputs=", inputs: {stop_file: stop}").replace("stop: nothing", f"stop: '{stop}'")
    )
    first = api.run(files / "loop.yaml", state_dir=files / "state")
    assert first.status == "failed"
    assert [e["node"] for e in first.errors] == ["poll#3/check", "poll#3"]
    assert first.errors[1]["type"] == "SubflowError"
    assert cn.calls == {f"poll#{k}/{n}": 1 for k in (1, 2, 3) for n in ("look", "check")}
    stop.unlink()
    cn.reset()
    again = api.run(files / "loop.yaml", state_dir=files / "state", resume="latest")
    assert again.status == "completed"
    assert again.context["poll"] == {"looks": 3, "state": "done"}
    # iterations 1 and 2 are not run again; in iteration 3 only the unfinished node is
    assert cn.calls == {"poll#3/check": 1}
    # the finished iterations' nodes are reported (reused), as an uninterrupted run's are
    assert again.nodes["poll#1/look"].status == "succeeded"
    assert again.nodes["poll#3/look"].status == "succeeded"


def test_config_retries_each_iteration_as_a_whole(files: Path) -> None:
    stop = files / "stop-file"
    stop.write_text("")
    (files / "loop.yaml").write_text(
        looping("\n    config: {maxRetries: 2, retryDelay: 1ms}", ", inputs: {stop_file: stop}")
        .replace("stop: nothing", f"stop: '{stop}'")
    )  # fmt: skip
    seen: list[ev.Event] = []

    def unstop(event: ev.Event) -> None:
        seen.append(event)
        if isinstance(event, ev.NodeRetry):
            stop.unlink()  # the second attempt of iteration 3 passes

    report = api.run(files / "loop.yaml", state_dir=files / "state", sinks=[unstop])
    assert report.status == "completed"
    (retry,) = [e for e in seen if isinstance(e, ev.NodeRetry)]
    assert (retry.node, retry.attempt, retry.error_type) == ("poll#3", 1, "SubflowError")
    assert cn.calls["poll#3/look"] == 2  # the whole child ran again
    assert cn.calls["poll#2/look"] == 1


def test_validate_follows_the_loop_child(tmp_path: Path) -> None:
    (tmp_path / "bad-child.yaml").write_text("nodes:\n  - id: y\n    usse: 3\n")
    (tmp_path / "p.yaml").write_text(
        "nodes:\n"
        "  - id: a\n    loop:\n      subflow: {blueprint: nothere.yaml}\n"
        "      while: 'iteration < 2'\n      maxIterations: 3\n"
        "  - id: b\n    loop:\n      subflow: {blueprint: bad-child.yaml}\n"
        "      while: 'iteration < 2'\n      maxIterations: 3\n"
        "  - id: c\n    loop:\n      subflow: {blueprint: p.yaml, outputs: nothing}\n"
        "      while: 'iteration < 2'\n      maxIterations: 3\n"
    )
    found = api.validate_file(tmp_path / "p.yaml")
    where = [(Path(p.file).name, p.line, p.code) for p in found]
    assert where == [
        ("p.yaml", 4, "subflow-missing"),
        ("p.yaml", 14, "subflow-cycle"),
        ("bad-child.yaml", 2, "schema.node-kind"),
        ("bad-child.yaml", 3, "schema.unknown-key"),
    ]
    assert "reaches itself: p.yaml -> p.yaml" in found[1].message
    with pytest.raises(BlueprintError):
        api.prepare(tmp_path / "p.yaml")


def test_validate_checks_outputs_and_inputs_against_the_loop_child(files: Path) -> None:
    (files / "loop.yaml").write_text(looping(inputs=", inputs: {nope: stop}, outputs: nowhere"))
    found = api.validate_file(files / "loop.yaml")
    assert [(p.line, p.code) for p in found] == [(8, "subflow-input"), (8, "subflow-output")]


@pytest.mark.parametrize(
    ("stanza", "code", "words"),
    [
        ("uses: builtins.str\n      subflow: {blueprint: look.yaml}", "schema.node-kind",
         "has both 'uses' and 'subflow'"),
        ("params: {a: 1}", "schema.node-kind", "a loop needs 'uses'"),
    ],
)  # fmt: skip
def test_a_loop_has_uses_or_subflow(files: Path, stanza: str, code: str, words: str) -> None:
    (files / "loop.yaml").write_text(looping().replace("subflow: {blueprint: look.yaml}", stanza))
    found = api.validate_file(files / "loop.yaml")
    assert code in [p.code for p in found]
    assert any(words in p.message for p in found), [p.message for p in found]


def test_graph_labels_a_loop_over_a_subflow_with_its_file(files: Path) -> None:
    from flowrun import diagram

    graph = api.load(files / "loop.yaml")
    assert "look.yaml" in diagram.render(graph, "ascii")
    assert "look" in diagram.render(graph, "mermaid", expand=True)


def test_plain_lines_show_the_loop_as_one_row_not_its_child_nodes(files: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "CI": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "flowrun", "run", "loop.yaml", "--state-dir", "state"],
        cwd=files, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "poll#1/look" not in proc.stderr
    assert "3/3 items" in proc.stderr


def test_resume_from_a_loop_over_a_subflow_runs_its_children_again(files: Path) -> None:
    first = api.run(files / "loop.yaml", state_dir=files / "state")
    assert first.status == "completed"
    cn.reset()
    again = api.run(
        files / "loop.yaml", state_dir=files / "state", resume="latest", rerun_from=["poll"]
    )
    assert again.status == "completed"
    # --from poll re-runs poll as a whole: its iterations' child nodes too, not reused
    assert cn.calls == {"poll#1/look": 1, "poll#2/look": 1, "poll#3/look": 1,
                        "poll#1/check": 1, "poll#2/check": 1, "poll#3/check": 1}  # fmt: skip
