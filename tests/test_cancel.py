"""Cancellation belongs to one run: the first Ctrl-C reaches every running attempt at once,
timed or not, and never an attempt of another run in the same process."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from flowrun import api
from flowrun.engine.invoke import CancelScope
from flowrun.report import RunReport
from tests import nodes


def blueprint(tmp_path: Path, name: str, uses: str, timeout: str | None) -> Path:
    config = f"\n    config: {{timeout: {timeout}}}" if timeout else ""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"id: {name}\nnodes:\n  - id: wait\n    uses: {uses}{config}\n")
    return path


class Started:
    """A run on its own thread, with the report once it ends."""

    def __init__(self, path: Path, state: Path) -> None:
        self.run = api.Run(path, api.RunOptions(concurrency=2, state_dir=state))
        nodes.started[self.run.run_id] = threading.Event()
        self.report: RunReport | None = None
        self.thread = threading.Thread(target=self._go, daemon=True)
        self.thread.start()
        assert nodes.started[self.run.run_id].wait(10), "the node never started"

    def _go(self) -> None:
        self.report = self.run.start()

    def join(self) -> RunReport:
        self.thread.join(15)
        assert self.report is not None, "the run did not end"
        return self.report


@pytest.mark.parametrize("timeout", [None, "30s"])
def test_first_cancel_reaches_a_running_attempt_timed_or_not(tmp_path: Path, timeout: str) -> None:
    path = blueprint(tmp_path, "one", "tests.nodes.until_cancelled", timeout)
    run = Started(path, tmp_path / "state")
    run.run.cancel()
    report = run.join()
    assert report.status == "cancelled"
    # The node saw ctx.cancelled while the grace period ran, returned, and was recorded.
    assert report.nodes["wait"].status == "succeeded"
    assert report.context["wait"] == "cancelled"


def test_cancelling_one_run_never_cancels_another(tmp_path: Path) -> None:
    nodes.gate.clear()
    other = Started(
        blueprint(tmp_path, "other", "tests.nodes.gated", "30s"), tmp_path / "other-state"
    )
    mine = Started(
        blueprint(tmp_path, "mine", "tests.nodes.until_cancelled", "30s"), tmp_path / "state"
    )
    mine.run.cancel()
    assert mine.join().status == "cancelled"
    nodes.gate.set()
    report = other.join()
    assert report.status == "completed"
    assert report.context["wait"] is False  # its attempt's ctx.cancelled was never set


def test_a_scope_sets_live_attempts_and_later_ones() -> None:
    scope = CancelScope()
    live = scope.open()
    closed = scope.open()
    scope.close(closed)
    scope.cancel()
    assert live.is_set() and scope.run_cancelled.is_set()
    assert not closed.is_set()  # a finished attempt is forgotten
    assert scope.open().is_set()  # one that opens after the cancel starts cancelled


def test_a_resumed_loop_continues_after_its_last_finished_iteration(tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    stop.write_text("")
    path = tmp_path / "loop.yaml"
    path.write_text(
        "nodes:\n  - id: poll\n    loop:\n      uses: tests.nodes.poll_or_stop\n"
        f"      params: {{stop_file: '{stop}'}}\n"
        "      while: \"output.state != 'done'\"\n      maxIterations: 9\n"
    )
    nodes.reset()
    first = api.run(path, state_dir=tmp_path / "state")
    assert first.status == "failed" and first.errors[0]["node"] == "poll#3"
    assert nodes.calls == {"poll#1": 1, "poll#2": 1}
    stop.unlink()
    again = api.run(path, state_dir=tmp_path / "state", resume="latest")
    assert again.status == "completed"
    assert again.context["poll"] == {"checks": 4, "state": "done"}
    assert nodes.calls == {"poll#1": 1, "poll#2": 1, "poll#3": 1, "poll#4": 1}  # none twice
