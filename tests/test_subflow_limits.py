"""A child run's own context (`ctx.get`/`ctx.set`), and `config.timeout` on a child run as a
whole: a subflow node, a batch item over a subflow, an iteration of a loop over a subflow."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from flowrun import api
from flowrun import events as ev

N = "tests.composition_nodes."

VIEW = f"""\
context: {{input: null, who: null, scratch: null}}
nodes:
  - id: view
    uses: {N}context_view
  - id: later
    uses: {N}read_scratch
edges:
  - {{source: view, target: later}}
"""


def _parent(sub: str) -> str:
    return f"""\
context: {{name: ada, secret: parent-only}}
nodes:
  - id: start
    uses: tests.nodes.numbers
{sub}
  - id: after
    uses: {N}read_scratch
edges:
  - {{source: start, target: sub}}
  - {{source: sub, target: after}}
"""


@pytest.mark.parametrize(
    ("executor", "view"),
    [("thread", "context_view"), ("process", "context_view"), ("thread", "context_view_async")],
)
def test_ctx_in_a_child_node_sees_the_child_context_and_sets_keys_there(
    tmp_path: Path, executor: str, view: str
) -> None:
    (tmp_path / "view.yaml").write_text(VIEW.replace("context_view", view))
    (tmp_path / "p.yaml").write_text(
        _parent(
            "  - id: sub\n    subflow:\n      blueprint: view.yaml\n      inputs: {who: name}\n"
            "      outputs: {view: view, later: later, scratch: scratch}"
        )
    )
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state", executor=executor)
    assert report.status == "completed", report.errors
    out = report.context["sub"]
    # the child's `input` and the key `inputs` set; nothing of the parent's own context
    assert out["view"] == {"input": [10, 20, 30], "who": "ada", "secret": None}
    # what a child node sets, later child nodes and `outputs` see ...
    assert out["later"] == "set by sub/view"
    assert out["scratch"] == "set by sub/view"
    # ... and the parent does not, except through `outputs`
    assert "scratch" not in report.context
    assert report.context["after"] is None


def test_each_batch_item_child_has_its_own_context(tmp_path: Path) -> None:
    (tmp_path / "view.yaml").write_text(VIEW)
    (tmp_path / "p.yaml").write_text(
        _parent(
            "  - id: sub\n    batch:\n      inputKey: start\n"
            "      subflow: {blueprint: view.yaml, inputs: {who: name}, outputs: view}"
        )
    )
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state", concurrency=3)
    assert report.status == "completed", report.errors
    assert [v["input"] for v in report.context["sub"]] == [10, 20, 30]
    assert "scratch" not in report.context


# -- config.timeout on a child run as a whole ----------------------------------------------------


def _gone(pid: int, within: float = 10.0) -> bool:
    """Has process `pid` ended (it is reaped by the shell node that started it)?"""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def _napping_child(tmp_path: Path) -> Path:
    """A child whose one node is a shell command that sleeps for `input` seconds, after
    writing its process id (its process group's id) to a file."""
    pids = tmp_path / "pids"
    (tmp_path / "nap.yaml").write_text(
        "context: {input: null}\nnodes:\n  - id: nap\n"
        f"    shell: \"echo $$ >> '{pids}'; sleep ${{{{ context.input }}}}; echo done\"\n"
    )
    return pids


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_a_subflow_past_its_timeout_fails_and_its_running_nodes_are_killed(
    tmp_path: Path,
) -> None:
    pids = _napping_child(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "context: {nap: 30}\nnodes:\n  - id: start\n    uses: tests.nodes.ident\n"
        "    inputs: nap\n"
        "  - id: sub\n    subflow: {blueprint: nap.yaml}\n    config: {timeout: 300ms}\n"
        "edges:\n  - {source: start, target: sub}\n"
    )
    seen: list[ev.Event] = []
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state", sinks=[seen.append])
    assert report.status == "failed"
    assert report.errors == [
        {"node": "sub", "type": "AttemptTimeout", "message": "subflow 'sub' timed out after 0.3 s"}
    ]
    (pid,) = _pids(pids)
    assert _gone(pid), "the child's shell command (its process group) is still running"
    # nothing the cancelled child node reported afterwards is recorded as its own outcome
    assert "sub/nap" not in report.nodes
    ended = [e.node for e in seen if isinstance(e, ev.NodeFailed | ev.NodeSucceeded)]
    assert ended == ["start", "sub"]


def test_a_timed_out_subflow_is_retried_then_its_fallback_stands_in(tmp_path: Path) -> None:
    pids = _napping_child(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "context: {nap: 30}\nnodes:\n  - id: start\n    uses: tests.nodes.ident\n"
        "    inputs: nap\n"
        "  - id: sub\n    subflow: {blueprint: nap.yaml}\n"
        "    config: {timeout: 200ms, maxRetries: 1, retryDelay: 1ms, fallback: plan-b}\n"
        "  - id: plan-b\n    uses: tests.nodes.standin\n"
        "edges:\n  - {source: start, target: sub}\n"
    )
    seen: list[ev.Event] = []
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state", sinks=[seen.append])
    assert report.status == "completed"
    assert report.nodes["sub"].status == "recovered"
    assert report.context["sub"] == {"from": "fallback", "input": 30}
    retries = [e for e in seen if isinstance(e, ev.NodeRetry)]
    assert [(e.node, e.error_type) for e in retries] == [("sub", "AttemptTimeout")]
    assert len(_pids(pids)) == 2  # the whole child ran again
    assert all(_gone(pid) for pid in _pids(pids))


def test_retry_on_decides_whether_a_subflow_timeout_is_retried(tmp_path: Path) -> None:
    pids = _napping_child(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "context: {nap: 30}\nnodes:\n  - id: start\n    uses: tests.nodes.ident\n"
        "    inputs: nap\n"
        "  - id: sub\n    subflow: {blueprint: nap.yaml}\n"
        "    config: {timeout: 200ms, maxRetries: 3, retryOn: [ConnectionError]}\n"
        "edges:\n  - {source: start, target: sub}\n"
    )
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state")
    assert report.status == "failed"
    assert report.nodes["sub"].attempts == 1
    assert len(_pids(pids)) == 1


def test_a_child_that_ends_in_time_is_not_affected(tmp_path: Path) -> None:
    _napping_child(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "context: {nap: 0}\nnodes:\n  - id: start\n    uses: tests.nodes.ident\n"
        "    inputs: nap\n"
        "  - id: sub\n    subflow: {blueprint: nap.yaml}\n    config: {timeout: 60s}\n"
        "edges:\n  - {source: start, target: sub}\n"
    )
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state")
    assert report.status == "completed"
    assert report.context["sub"] == "done"


def test_a_batch_item_over_a_subflow_times_out_alone(tmp_path: Path) -> None:
    pids = _napping_child(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "context: {naps: [0, 30, 0]}\nnodes:\n  - id: each\n    batch:\n"
        "      inputKey: naps\n      subflow: {blueprint: nap.yaml}\n      maxFailures: 1\n"
        "    config: {timeout: 2s}\n"
    )
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state", concurrency=3)
    assert report.status == "completed", report.errors
    assert report.context["each"] == ["done", None, "done"]
    assert report.errors == [
        {"node": "each[1]", "type": "AttemptTimeout",
         "message": "subflow 'each[1]' timed out after 2 s"}
    ]  # fmt: skip
    assert all(_gone(pid) for pid in _pids(pids))
    assert len(_pids(pids)) == 3


def test_a_batch_item_over_a_subflow_is_retried(tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    stop.write_text("")
    (tmp_path / "one.yaml").write_text(
        "context: {input: null}\nnodes:\n  - id: check\n    uses: tests.nodes.stop_if\n"
        f"    params: {{stop_file: '{stop}'}}\n"
    )
    (tmp_path / "p.yaml").write_text(
        "context: {xs: [1, 2]}\nnodes:\n  - id: each\n    batch:\n"
        "      inputKey: xs\n      subflow: {blueprint: one.yaml}\n"
        "    config: {maxRetries: 1, retryDelay: 1ms}\n"
    )

    def unstop(event: ev.Event) -> None:
        if isinstance(event, ev.NodeRetry) and stop.exists():
            stop.unlink()

    seen: list[ev.Event] = []
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state", sinks=[unstop, seen.append])
    assert report.status == "completed", report.errors
    assert report.context["each"] == [None, None]  # stop_if passes its (absent) input on
    assert {e.node for e in seen if isinstance(e, ev.NodeRetry)} <= {"each[0]", "each[1]"}


def test_a_loop_iteration_over_a_subflow_times_out(tmp_path: Path) -> None:
    pids = _napping_child(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "context: {nap: 0}\nnodes:\n  - id: start\n    uses: tests.nodes.ident\n"
        "    inputs: nap\n"
        "  - id: poll\n    loop:\n      subflow: {blueprint: nap.yaml, outputs: input}\n"
        "      while: 'iteration < 3'\n      maxIterations: 3\n    config: {timeout: 10s}\n"
        "edges:\n  - {source: start, target: poll}\n"
    )
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state")
    assert report.status == "completed", report.errors  # iterations in time
    (tmp_path / "p.yaml").write_text(
        (tmp_path / "p.yaml").read_text().replace("nap: 0", "nap: 30").replace("10s", "300ms")
    )
    report = api.run(tmp_path / "p.yaml", state_dir=tmp_path / "state")
    assert report.status == "failed"
    assert report.errors == [
        {"node": "poll#1", "type": "AttemptTimeout",
         "message": "subflow 'poll#1' timed out after 0.3 s"}
    ]  # fmt: skip
    assert report.nodes["poll"].items == {"total": 1, "succeeded": 0, "failed": 1}
    assert all(_gone(pid) for pid in _pids(pids))


def _ended(pid: int) -> bool:
    """Has `pid` ended (gone, or a zombie no one has reaped yet)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.parametrize("where", ["node", "subflow"])
def test_the_cli_leaves_no_timed_out_command_running(tmp_path: Path, where: str) -> None:
    """`flowrun run` exits as soon as the run ends; a command whose attempt timed out (on a
    node, or in a subflow whose time is up) must not outlive it in its own session."""
    import subprocess
    import sys

    pids = _napping_child(tmp_path)
    if where == "node":
        text = f"nodes:\n  - id: nap\n    shell: \"echo $$ >> '{pids}'; sleep 30\"\n"
        text += "    config: {timeout: 300ms}\n"
    else:
        text = "context: {nap: 30}\nnodes:\n  - id: start\n    uses: tests.nodes.ident\n"
        text += "    inputs: nap\n  - id: sub\n    subflow: {blueprint: nap.yaml}\n"
        text += "    config: {timeout: 300ms}\nedges:\n  - {source: start, target: sub}\n"
    (tmp_path / "p.yaml").write_text(text)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "flowrun", "run", "p.yaml", "--no-progress", "--state-dir", "s"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "AttemptTimeout" in proc.stderr
    (pid,) = _pids(pids)
    deadline = time.monotonic() + 5
    while not _ended(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _ended(pid), "the timed-out command outlived flowrun"
