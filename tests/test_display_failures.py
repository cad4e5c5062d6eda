"""The live display and plain lines show failures, retries and cancelling as they happen
(SPEC §7), at rich's seams: `Console(file=StringIO())` and a fake clock."""

from __future__ import annotations

import io

from rich.console import Console
from rich.segment import Segment

from flowrun.display.live import LiveReporter
from flowrun.events import (
    BatchStarted,
    NodeFailed,
    NodeRetry,
    NodeStarted,
    RunCancelling,
    RunFinished,
)

from .test_progress import (
    EPOCH,
    FakeClock,
    feed,
    item_started,
    output,
    plain_console,
    render,
    reporter,
    run_started,
    term_console,
)


def retry(node: str, attempt: int = 1, delay: float = 0.3) -> NodeRetry:
    return NodeRetry(ts=EPOCH, node=node, attempt=attempt, delay_s=delay, error_type="OSError",
                     message="flaky", attempts=4)  # fmt: skip


def test_a_retrying_plain_node_stays_visible_with_its_countdown() -> None:
    # before: a retrying node vanished from the display during its backoff
    clock = FakeClock()
    rep = reporter("live", term_console(), clock)
    feed(rep, run_started("fetch", "other"), NodeStarted(ts=EPOCH, node="fetch"))
    feed(rep, retry("fetch"))
    shown = render(rep)
    assert "retry: fetch  attempt 2/4, retry in 0.3 s  (OSError: flaky)" in shown
    clock.advance(0.2)
    assert "retry in 0.1 s" in render(rep)
    feed(rep, NodeStarted(ts=EPOCH, node="fetch", attempt=2))
    assert "retry: fetch" not in render(rep)
    assert "running: fetch" in render(rep)


def test_a_failed_plain_node_shows_at_once_and_turns_the_bar_red() -> None:
    # before: every frame said 0 failed and the overall bar ended green
    rep = reporter("live", term_console(), FakeClock())
    assert isinstance(rep, LiveReporter)
    feed(rep, run_started("a", "b"), NodeStarted(ts=EPOCH, node="a"))
    colours_before = _bar_colours(rep)
    feed(rep, NodeFailed(ts=EPOCH, node="a", error_type="ValueError", message="boom"))
    assert "failed: a  ValueError: boom" in render(rep)
    assert "red" not in colours_before
    assert "red" in _bar_colours(rep)


def _bar_colours(rep: LiveReporter) -> set[str]:
    console = Console(file=io.StringIO(), width=80, height=40, color_system="truecolor")
    lines = console.render_lines(rep.view, console.options)
    return {
        str(seg.style.color.name)
        for line in lines
        for seg in line
        if isinstance(seg, Segment) and seg.style and seg.style.color and "━" in seg.text
    }


def test_the_header_names_the_run_id() -> None:
    rep = reporter("live", term_console(), FakeClock())
    feed(rep, run_started("a"))
    assert render(rep).splitlines()[0] == "run batch-workflow r1"


def test_cancelling_shows_the_grace_countdown_and_no_eta() -> None:
    clock = FakeClock()
    rep = reporter("live", term_console(), clock)
    feed(rep, run_started("B"), BatchStarted(ts=EPOCH, node="B", total=10))
    feed(rep, *(item_started("B", i) for i in range(4)))
    clock.advance(1)
    assert "ETA" in render(rep)
    feed(rep, RunCancelling(ts=EPOCH, grace_s=3.0, running=4))
    clock.advance(1)
    shown = render(rep)
    assert "cancelling: waiting 2.0 s more for 4 nodes" in shown.splitlines()[0]
    assert "ETA" not in shown
    feed(rep, RunFinished(ts=EPOCH, status="cancelled"))
    assert "cancelling" not in render(rep)


def test_plain_lines_say_cancelling_and_retries_with_attempts() -> None:
    console = plain_console()
    rep = reporter("plain", console, FakeClock())
    feed(rep, run_started("fetch"), NodeStarted(ts=EPOCH, node="fetch"), retry("fetch"))
    feed(rep, RunCancelling(ts=EPOCH, grace_s=3.0, running=4))
    text = output(console)
    assert "fetch             retry      attempt 1/4 failed: OSError: flaky; retry in 0.3 s" in text
    assert "batch-workflow    cancelling cancelling: waiting up to 3 s for 4 nodes" in text


def test_never_finished_nodes_are_pending_in_the_summary() -> None:
    # before: the summary said `unfinished` where --json said `pending`
    console = plain_console()
    rep = reporter("plain", console, FakeClock())
    feed(rep, run_started("a", "b"), NodeStarted(ts=EPOCH, node="a"), retry("a"))
    feed(rep, RunFinished(ts=EPOCH, status="cancelled"))
    rep.summary()
    text = output(console)
    assert "unfinished" not in text
    assert "2 pending" in text.splitlines()[-1]


def test_a_failure_prints_the_tail_of_its_output() -> None:
    console = plain_console()
    rep = reporter("plain", console, FakeClock())
    logs = "".join(f"line {i}\n" for i in range(100))
    feed(rep, run_started("a"), NodeFailed(ts=EPOCH, node="a", error_type="E", message="m",
                                           logs=logs))  # fmt: skip
    rep.summary()
    text = output(console)
    assert "--- output of a (last 40 of 100 lines: flowrun runs show --logs) ---" in text
    assert "line 99" in text and "line 59\n" not in text and "line 60" in text
