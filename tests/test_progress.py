"""The progress sinks, fed synthetic event streams with a fake clock."""

from __future__ import annotations

import io
import re
import sys
import threading
from typing import Any

import pytest
from rich.console import Console, ConsoleOptions, RenderResult
from rich.file_proxy import FileProxy

from flowrun.display import live as progress
from flowrun.display.live import Reporter, choose_mode, make_reporter
from flowrun.display.plain import MAX_ITEM_TRACEBACKS
from flowrun.events import (
    BatchFinished,
    BatchStarted,
    Event,
    ItemsStarted,
    ItemsSucceeded,
    NodeFailed,
    NodeRecovered,
    NodeRetry,
    NodeSkipped,
    NodeStarted,
    NodeSucceeded,
    RunFinished,
    RunStarted,
)

EPOCH = 1_800_000_000.0  # 2027-01-15T08:00:00Z
TB = (
    "Traceback (most recent call last):\n"
    '  File "tasks.py", line 3, in double\n'
    "    raise ValueError({0!r})\n"
    "ValueError: {0}\n"
)


@pytest.fixture(autouse=True)
def ordinary_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich reads these when a Console is made; pin them whatever shell or CI runs the tests."""
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in (
        "NO_COLOR",
        "FORCE_COLOR",
        "TTY_COMPATIBLE",
        "TTY_INTERACTIVE",
        "COLUMNS",
        "LINES",
    ):
        monkeypatch.delenv(name, raising=False)


class FakeClock:
    def __init__(self, start: float = 100.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def term_console(*, color: bool = False, record: bool = False) -> Console:
    return Console(
        file=io.StringIO(),
        record=record,
        force_terminal=True,
        force_interactive=True,
        width=80,
        color_system="truecolor" if color else None,
        no_color=False,
    )


def plain_console(*, color: bool = False) -> Console:
    return Console(
        file=io.StringIO(),
        force_terminal=color,
        width=80,
        color_system="truecolor" if color else None,
    )


def output(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def reporter(mode: progress.Mode, console: Console, clock: FakeClock) -> Reporter:
    wall = FakeClock(EPOCH)
    return make_reporter(mode, console, get_time=clock, wall_clock=wall)


def render(rep: Reporter) -> str:
    """What the live display shows right now, as plain text."""
    assert isinstance(rep, progress.LiveReporter)
    console = Console(file=io.StringIO(), width=80, height=40, color_system=None)
    console.print(rep.view)
    return output(console)


def feed(rep: Reporter, *events: Event) -> None:
    for event in events:
        rep(event)


def run_started(*ids: str, blueprint: str = "batch-workflow") -> RunStarted:
    return RunStarted(ts=EPOCH, run_id="r1", blueprint=blueprint, nodes=len(ids), node_ids=ids)


def item_started(batch: str, i: int) -> NodeStarted:
    return NodeStarted(ts=EPOCH, node=f"{batch}[{i}]", batch=batch, index=i)


def item_done(batch: str, i: int) -> NodeSucceeded:
    return NodeSucceeded(ts=EPOCH, node=f"{batch}[{i}]", batch=batch, index=i)


def failed(node: str, message: str = "boom", **kw: Any) -> NodeFailed:
    return NodeFailed(
        ts=EPOCH,
        node=node,
        error_type="ValueError",
        message=message,
        traceback=TB.format(message),
        **kw,
    )


def batch_workflow(items: int = 3) -> list[Event]:
    """A whole successful run: start, a batch of `items`, sum-results."""
    events: list[Event] = [
        run_started("start", "double-items", "sum-results"),
        NodeStarted(ts=EPOCH, node="start"),
        NodeSucceeded(ts=EPOCH, node="start", duration_ms=0.4),
        BatchStarted(ts=EPOCH, node="double-items", total=items),
    ]
    for i in range(items):
        events += [item_started("double-items", i), item_done("double-items", i)]
    events += [
        BatchFinished(ts=EPOCH, node="double-items", total=items, succeeded=items),
        NodeStarted(ts=EPOCH, node="sum-results"),
        NodeSucceeded(ts=EPOCH, node="sum-results", duration_ms=0.1),
        RunFinished(ts=EPOCH, status="completed", duration_ms=1230),
    ]
    return events


# -- choose_mode -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("terminal", "quiet", "no_progress", "env", "expected"),
    [
        (True, True, True, {}, "off"),
        (False, False, True, {}, "off"),
        (True, True, False, {}, "quiet"),
        (False, True, False, {"CI": "true"}, "quiet"),
        (True, False, False, {"TERM": "xterm-256color"}, "live"),
        (True, False, False, {"CI": "true"}, "plain"),
        (True, False, False, {"CI": "1"}, "plain"),
        (True, False, False, {"CI": ""}, "live"),
        (True, False, False, {"CI": "false"}, "live"),
        (True, False, False, {"TERM": "dumb"}, "plain"),
        (False, False, False, {}, "plain"),
    ],
)
def test_choose_mode(
    terminal: bool, quiet: bool, no_progress: bool, env: dict[str, str], expected: str
) -> None:
    console = term_console() if terminal else plain_console()
    assert choose_mode(console, quiet=quiet, no_progress=no_progress, env=env) == expected


def test_choose_mode_force_color_into_a_pipe_is_plain() -> None:
    # what rich does with FORCE_COLOR: a StringIO "is a terminal" although it is no tty
    console = Console(file=io.StringIO(), force_terminal=True, force_interactive=True)
    env = {"FORCE_COLOR": "1"}
    assert choose_mode(console, quiet=False, no_progress=False, env=env) == "plain"


def test_choose_mode_uses_rich_interactivity() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, force_interactive=False)
    assert choose_mode(console, quiet=False, no_progress=False, env={}) == "plain"


# -- live view ---------------------------------------------------------------------------------


def test_live_view_shows_overall_progress_and_running_nodes() -> None:
    clock = FakeClock()
    rep = reporter("live", term_console(), clock)
    feed(rep, run_started("start", "double-items", "sum-results"))
    feed(rep, NodeStarted(ts=EPOCH, node="start"))
    assert "0/3 nodes" in render(rep)
    assert "running: start" in render(rep)
    clock.advance(1.5)
    feed(rep, NodeSucceeded(ts=EPOCH, node="start", duration_ms=1500))
    feed(rep, BatchStarted(ts=EPOCH, node="double-items", total=3))
    feed(rep, item_started("double-items", 0), item_started("double-items", 1))
    feed(rep, item_done("double-items", 0))
    shown = render(rep)
    assert "1/3 nodes" in shown
    assert "0:00:01" in shown  # elapsed by the fake clock
    assert "running: double-items[1]" in shown
    assert "double-items[0]" not in shown
    assert "1/3 items" in shown
    feed(rep, item_done("double-items", 1), item_started("double-items", 2))
    feed(rep, item_done("double-items", 2))
    feed(rep, BatchFinished(ts=EPOCH, node="double-items", total=3, succeeded=3))
    assert "2/3 nodes" in render(rep)
    assert "running:" not in render(rep)


def test_live_view_batch_bar_counts_rate_and_eta() -> None:
    clock = FakeClock()
    rep = reporter("live", term_console(), clock)
    feed(rep, run_started("B"), BatchStarted(ts=EPOCH, node="B", total=40))
    for i in range(36):
        feed(rep, item_started("B", i))
    for i in range(32):
        clock.advance(0.5)
        feed(rep, failed(f"B[{i}]", batch="B", index=i) if i in (3, 7) else item_done("B", i))
    shown = render(rep)
    assert "32/40 items" in shown
    assert "2 failed · 4 running" in shown
    assert "2.0/s" in shown  # 32 items in 16 s
    assert "ETA 0:00:04" in shown  # 8 left at 2 per second


def test_live_view_caps_running_rows() -> None:
    rep = reporter("live", term_console(), FakeClock())
    feed(rep, run_started("B"), BatchStarted(ts=EPOCH, node="B", total=100))
    for i in range(progress.MAX_ROWS + 5):
        feed(rep, item_started("B", i))
    shown = render(rep)
    assert shown.count("running: ") == progress.MAX_ROWS
    assert "+5 more" in shown
    assert f"running: B[{progress.MAX_ROWS - 1}]" in shown  # the oldest are shown


def test_live_view_caps_batches_showing_unfinished_ones_first() -> None:
    rep = reporter("live", term_console(), FakeClock())
    names = [f"batch-{n:02d}" for n in range(progress.MAX_BATCHES + 4)]
    feed(rep, run_started(*names))
    for name in names:
        feed(rep, BatchStarted(ts=EPOCH, node=name, total=1))
        if name not in ("batch-03", names[-1]):
            feed(rep, BatchFinished(ts=EPOCH, node=name, total=1, succeeded=1))
    shown = render(rep)
    assert "+4 more batches" in shown
    assert "batch-03" in shown
    assert names[-1] in shown
    assert sum(name in shown for name in names) == progress.MAX_BATCHES


def test_live_view_fits_80_columns() -> None:
    rep = reporter("live", term_console(), FakeClock())
    long = "a-rather-long-batch-node-identifier"
    feed(rep, run_started("start", long), BatchStarted(ts=EPOCH, node=long, total=50_000))
    feed(rep, item_started(long, 49_999))
    lines = render(rep).splitlines()
    assert lines and all(len(line) <= 80 for line in lines)
    assert any("0/50000 items" in line for line in lines)


def test_live_view_resumed_batch_counts_earlier_items() -> None:
    rep = reporter("live", term_console(), FakeClock())
    feed(rep, run_started("B"), BatchStarted(ts=EPOCH, node="B", total=100, done=50))
    feed(rep, item_started("B", 50), item_done("B", 50))
    assert "51/100 items" in render(rep)


def test_live_view_renders_before_any_event() -> None:
    rep = reporter("live", term_console(), FakeClock())
    assert "starting" in render(rep)


def test_live_sink_does_not_render_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    renders = 0
    original = progress.LiveView.__rich_console__

    def counting(
        self: progress.LiveView, console: Console, options: ConsoleOptions
    ) -> RenderResult:
        nonlocal renders
        renders += 1
        yield from original(self, console, options)

    monkeypatch.setattr(progress.LiveView, "__rich_console__", counting)
    console = term_console()
    # a refresh every ~3 hours: only start() and stop() render
    rep = make_reporter("live", console, get_time=FakeClock(), refresh_per_second=1e-4)
    with rep:
        for event in batch_workflow(items=5_000):
            rep(event)
    assert renders <= 3  # Live's construction, start and stop; none per event
    assert "3/3 nodes" in output(console)


def test_live_view_render_thread_is_safe_while_events_arrive() -> None:
    rep = reporter("live", term_console(), FakeClock())
    errors: list[BaseException] = []
    done = threading.Event()

    def render_loop() -> None:
        try:
            while not done.is_set():
                render(rep)
        except BaseException as exc:  # collected, asserted on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=render_loop)
    thread.start()
    try:
        for event in batch_workflow(items=20_000):
            rep(event)
    finally:
        done.set()
        thread.join()
    assert errors == []


# -- live start/stop -----------------------------------------------------------------------------


def test_live_stop_is_idempotent_and_shows_the_cursor() -> None:
    console = term_console()
    rep = reporter("live", console, FakeClock())
    rep.start()
    rep.start()
    feed(rep, *batch_workflow())
    rep.stop()
    rep.stop()
    text = output(console)
    assert text.count("\x1b[?25l") == 1
    assert text.rindex("\x1b[?25h") > text.index("\x1b[?25l")
    rep.start()  # after stop: nothing is built again
    assert output(console) == text


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_live_context_manager_cleans_up_on_exceptions(exc: type[BaseException]) -> None:
    console = term_console()
    rep = reporter("live", console, FakeClock())
    with pytest.raises(exc), rep:
        feed(rep, run_started("start"), NodeStarted(ts=EPOCH, node="start"))
        assert isinstance(sys.stderr, FileProxy)  # output goes above the display meanwhile
        raise exc
    assert not isinstance(sys.stderr, FileProxy)
    assert output(console).endswith("\x1b[?25h")
    rep.stop()
    rep.summary()  # still fine after the unwinding
    assert "run batch-workflow stopped in" in output(console)


# -- summary -----------------------------------------------------------------------------------


def test_live_summary_table_and_final_line() -> None:
    console = term_console(color=True, record=True)
    rep = reporter("live", console, FakeClock())
    feed(rep, *batch_workflow())
    rep.summary()
    assert "\x1b[" in output(console)  # styled on a colour terminal
    text = console.export_text()
    assert re.search(r"start\s+succeeded\s+1\s+0\.4 ms", text)
    assert re.search(r"double-items\s+succeeded\s+.*3/3 items", text)
    assert "sum-results" in text
    assert "run batch-workflow completed in 1.23 s — 3 succeeded, 0 failed, 0 skipped" in text


def test_summary_counts_failures_skips_recoveries_and_pending() -> None:
    console = plain_console()
    rep = reporter("plain", console, FakeClock())
    feed(
        rep,
        run_started("a", "b", "c", "fb", "B", "never"),
        NodeStarted(ts=EPOCH, node="a"),
        failed("a", attempt=3),
        NodeSkipped(ts=EPOCH, node="c"),
        NodeStarted(ts=EPOCH, node="b"),
        failed("b", "flaky"),
        NodeStarted(ts=EPOCH, node="fb"),
        NodeSucceeded(ts=EPOCH, node="fb", duration_ms=2.0),
        NodeRecovered(ts=EPOCH, node="b", fallback="fb"),
        BatchStarted(ts=EPOCH, node="B", total=40),
        failed("B[4]", batch="B", index=4),
        failed("B[9]", batch="B", index=9),
        BatchFinished(ts=EPOCH, node="B", status="failed", total=40, succeeded=38, failed=2),
        RunFinished(ts=EPOCH, status="failed", duration_ms=2500),
    )
    rep.summary()
    text = output(console)
    assert re.search(r"\na\s+failed\s+3\s+.*ValueError: boom", text)
    assert re.search(r"\nb\s+recovered\s+1\s+.*fallback fb", text)
    assert re.search(r"\nB\s+failed\s+.*2 failed of 40", text)
    assert re.search(r"\nnever\s+pending", text)
    assert text.rstrip().endswith(
        "run batch-workflow failed in 2.50 s — 1 succeeded, 2 failed, 1 skipped, "
        "1 recovered, 1 pending"
    )


@pytest.mark.parametrize("mode", ["live", "plain", "quiet"])
def test_each_failure_traceback_is_printed_once(mode: progress.Mode) -> None:
    console = term_console() if mode == "live" else plain_console()
    rep = reporter(mode, console, FakeClock())
    with rep:
        feed(rep, run_started("start", "B"), NodeStarted(ts=EPOCH, node="start"))
        feed(rep, failed("start", "start broke"), BatchStarted(ts=EPOCH, node="B", total=3))
        feed(rep, item_started("B", 1), failed("B[1]", "item one broke", batch="B", index=1))
        feed(rep, RunFinished(ts=EPOCH, status="failed", duration_ms=10))
    rep.summary()
    rep.summary()
    text = output(console)
    for message in ("start broke", "item one broke"):
        assert text.count(f"raise ValueError({message!r})") == 1
    assert text.count("Traceback (most recent call last)") == 2


def test_item_tracebacks_are_capped_per_batch() -> None:
    console = plain_console()
    rep = reporter("quiet", console, FakeClock())
    feed(rep, run_started("B"), BatchStarted(ts=EPOCH, node="B", total=100))
    for i in range(MAX_ITEM_TRACEBACKS + 10):
        feed(rep, failed(f"B[{i}]", batch="B", index=i))
    rep.summary()
    text = output(console)
    assert text.count("Traceback (most recent call last)") == MAX_ITEM_TRACEBACKS
    assert "B: 10 more failed items (tracebacks not shown)" in text


def test_summary_without_run_finished_says_stopped() -> None:
    clock = FakeClock()
    console = plain_console()
    rep = reporter("plain", console, clock)
    feed(rep, run_started("a"), NodeStarted(ts=EPOCH, node="a"))
    clock.advance(2)
    rep.summary()
    text = output(console)
    assert re.search(r"\na\s+pending", text)
    assert "run batch-workflow stopped in 2.00 s — 0 succeeded, 0 failed, 0 skipped" in text


def test_recovered_item_counts_as_succeeded_in_its_batch() -> None:
    events: list[Event] = [
        run_started("B", "fb"),
        BatchStarted(ts=EPOCH, node="B", total=3),
        item_started("B", 0),
        failed("B[0]", "item broke", batch="B", index=0),
        NodeStarted(ts=EPOCH, node="fb"),  # the engine runs the fallback as its own node
        NodeSucceeded(ts=EPOCH, node="fb", duration_ms=1.0),
        NodeRecovered(ts=EPOCH, node="B[0]", fallback="fb"),
        item_started("B", 1),
        item_done("B", 1),
    ]
    for mode in ("live", "plain", "quiet"):
        console = term_console() if mode == "live" else plain_console()
        rep = reporter(mode, console, FakeClock())
        feed(rep, *events)
        if isinstance(rep, progress.LiveReporter):
            shown = render(rep)
            assert "2/3 items" in shown
            assert "0 failed" in shown
            assert "1/2 nodes" in shown  # fb settled; the item is no node of its own
        feed(rep, item_started("B", 2), item_done("B", 2))
        feed(rep, BatchFinished(ts=EPOCH, node="B", total=3, succeeded=3))
        feed(rep, RunFinished(ts=EPOCH, status="completed", duration_ms=3))
        rep.summary()
        text = output(console)
        if mode == "quiet":
            assert text == ""  # covered by the fallback: no error
            continue
        assert "B[0] failed (attempt 1): ValueError: item broke; fallback fb stood in" in text
        assert "raise ValueError('item broke')" in text
        assert "3/3 items" in text
        assert "— 2 succeeded, 0 failed, 0 skipped" in text


def test_reused_node_is_shown_as_taken_from_an_earlier_run() -> None:
    console = plain_console()
    rep = reporter("plain", console, FakeClock())
    feed(
        rep,
        RunStarted(ts=EPOCH, run_id="r2", blueprint="bw", nodes=1, node_ids=("a",), resumed=True),
    )
    feed(rep, NodeSucceeded(ts=EPOCH, node="a", reused=True))
    feed(rep, RunFinished(ts=EPOCH, status="completed", duration_ms=1))
    rep.summary()
    text = output(console)
    assert "bw                started    1 nodes, run r2, resumed" in text
    assert re.search(r"Z  a\s+succeeded  reused from an earlier run\n", text)
    assert re.search(r"\na\s+succeeded\s+1\s+reused from an earlier run\n", text)


def test_batch_failing_before_its_items_has_a_header_without_traceback() -> None:
    console = plain_console()
    rep = reporter("plain", console, FakeClock())
    message = "batch 'B': inputKey 'xs' holds null, expected a list"
    feed(
        rep,
        run_started("B"),
        NodeFailed(ts=EPOCH, node="B", error_type="TypeError", message=message),
    )
    feed(rep, RunFinished(ts=EPOCH, status="failed", duration_ms=1))
    rep.summary()
    text = output(console)
    assert f"B failed (attempt 1): TypeError: {message}\nnode " in text
    assert re.search(r"\nB\s+failed\s+1\s+0\.0 ms  TypeError: batch 'B'", text)


# -- plain -------------------------------------------------------------------------------------


@pytest.mark.parametrize("color", [False, True])
def test_plain_lines_are_timestamped_and_free_of_ansi(color: bool) -> None:
    console = plain_console(color=color)
    rep = reporter("plain", console, FakeClock())
    feed(rep, *batch_workflow()[:-2])
    feed(
        rep,
        NodeRetry(
            ts=EPOCH, node="sum-results", delay_s=0.3, error_type="OSError", message="x", attempts=4
        ),
        NodeStarted(ts=EPOCH, node="sum-results", attempt=2),
        NodeSucceeded(ts=EPOCH, node="sum-results", attempt=2, duration_ms=0.1),
        NodeSkipped(ts=EPOCH, node="[bold]odd[/]"),
        RunFinished(ts=EPOCH, status="completed", duration_ms=1230),
    )
    rep.summary()
    text = output(console)
    assert "\x1b" not in text
    lines = text.splitlines()
    assert "2027-01-15T08:00:00Z  start             succeeded  0.4 ms" in lines
    assert "2027-01-15T08:00:00Z  double-items      batch      3 items" in lines
    retry = r"\S+Z  sum-results\s+retry\s+attempt 1/4 failed: OSError: x; retry in 0\.3 s"
    assert any(re.fullmatch(retry, line) for line in lines)
    assert any(re.fullmatch(r"\S+Z  sum-results\s+started\s+attempt 2", line) for line in lines)
    assert "[bold]odd[/]" in text  # markup-looking ids are printed as they are
    assert not any("double-items[" in line for line in lines)  # no per-item lines
    assert re.search(r"\nsum-results\s+succeeded\s+2\s+0\.1 ms\n", text)
    assert lines[-1] == "run batch-workflow completed in 1.23 s — 3 succeeded, 0 failed, 1 skipped"


def test_plain_batch_progress_is_throttled_to_every_tenth() -> None:
    clock = FakeClock()
    console = plain_console()
    rep = reporter("plain", console, clock)
    feed(rep, run_started("B"), BatchStarted(ts=EPOCH, node="B", total=100_000))
    for i in range(100_000):
        rep(item_started("B", i))
        clock.advance(0.00001)  # the whole batch takes 1 s
        rep(item_done("B", i))
    feed(rep, BatchFinished(ts=EPOCH, node="B", total=100_000, succeeded=100_000))
    lines = output(console).splitlines()
    progress_lines = [line for line in lines if "  progress  " in line]
    assert len(progress_lines) == 9  # 10% ... 90%; the finish line says 100%
    assert "10000/100000 items (10%), 0 failed, 100,000/s" in progress_lines[0]
    assert len(lines) < 40


def test_plain_batch_progress_every_5_seconds_on_a_slow_batch() -> None:
    clock = FakeClock()
    console = plain_console()
    rep = reporter("plain", console, clock)
    feed(rep, run_started("B"), BatchStarted(ts=EPOCH, node="B", total=1000))
    for i in range(30):
        clock.advance(1)
        feed(rep, item_started("B", i), item_done("B", i))
    progress_lines = [s for s in output(console).splitlines() if "  progress  " in s]
    assert [s.split("progress", 1)[1].split(" items")[0].strip() for s in progress_lines] == [
        "5/1000",
        "10/1000",
        "15/1000",
        "20/1000",
        "25/1000",
        "30/1000",
    ]


def test_plain_item_failures_and_retries_get_their_own_lines() -> None:
    console = plain_console()
    rep = reporter("plain", console, FakeClock())
    feed(rep, run_started("B"), BatchStarted(ts=EPOCH, node="B", total=1000))
    feed(rep, item_started("B", 7))
    feed(rep, NodeRetry(ts=EPOCH, node="B[7]", batch="B", index=7, error_type="E", message="m"))
    feed(rep, item_started("B", 7), failed("B[7]", "multi\nline", batch="B", index=7, attempt=2))
    lines = output(console).splitlines()
    assert any(re.search(r"B\[7\]\s+retry\s+attempt 1 failed: E: m", s) for s in lines)
    assert any(
        re.search(r"B\[7\]\s+failed\s+0\.0 ms  attempt 2: ValueError: multi …$", s) for s in lines
    )


# -- quiet and off -----------------------------------------------------------------------------


def test_quiet_prints_only_uncovered_failures() -> None:
    console = term_console(color=True)
    rep = reporter("quiet", console, FakeClock())
    with rep:
        feed(rep, *batch_workflow()[:-1])
        feed(rep, NodeStarted(ts=EPOCH, node="x"), failed("x", "covered"))
        feed(rep, NodeRecovered(ts=EPOCH, node="x", fallback="fb"))
        feed(rep, NodeStarted(ts=EPOCH, node="y"), failed("y", "real problem"))
        assert output(console) == ""  # nothing while the run goes
        feed(rep, RunFinished(ts=EPOCH, status="failed", duration_ms=5))
    rep.summary()
    text = output(console)
    assert text == "y failed (attempt 1): ValueError: real problem\n" + TB.format("real problem")


def test_off_mode_prints_nothing() -> None:
    console = term_console()
    rep = make_reporter("off", console)
    with rep:
        feed(rep, *batch_workflow()[:3], failed("sum-results"))
    rep.summary()
    assert rep.mode == "off"
    assert output(console) == ""


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown progress mode 'fancy'"):
        make_reporter("fancy", term_console())  # type: ignore[arg-type]


# -- items announced by the chunk -------------------------------------------------------------


def test_live_view_shows_items_announced_by_the_chunk() -> None:
    clock = FakeClock()
    rep = reporter("live", term_console(), clock)
    feed(rep, run_started("B"), BatchStarted(ts=EPOCH, node="B", total=10))
    feed(rep, ItemsStarted(ts=EPOCH, batch="B", indices=range(0, 4)))
    clock.advance(1.0)
    feed(rep, ItemsStarted(ts=EPOCH, batch="B", indices=range(4, 8)))
    shown = render(rep)
    assert "0 failed · 8 running" in shown
    assert "running: B[0]  1.00 s" in shown and "running: B[7]  0.00 s" in shown
    # the whole first chunk succeeds; of the second, one item fails and the rest succeed
    feed(rep, ItemsSucceeded(ts=EPOCH, batch="B", indices=range(0, 4)))
    feed(rep, failed("B[5]", batch="B", index=5))
    feed(rep, ItemsSucceeded(ts=EPOCH, batch="B", indices=[4, 6]))
    shown = render(rep)
    assert "7/10 items" in shown
    assert "1 failed · 1 running" in shown
    assert "running: B[7]" in shown
    assert not re.search(r"running: B\[[0-6]\]", shown)
    feed(rep, ItemsSucceeded(ts=EPOCH, batch="B", indices=[7]))
    assert "running:" not in render(rep)


def test_live_view_caps_chunked_rows_oldest_first() -> None:
    clock = FakeClock()
    rep = reporter("live", term_console(), clock)
    feed(rep, run_started("A", "B"), BatchStarted(ts=EPOCH, node="A", total=500))
    feed(rep, BatchStarted(ts=EPOCH, node="B", total=500))
    feed(rep, ItemsStarted(ts=EPOCH, batch="B", indices=range(0, 200)))
    clock.advance(1.0)
    feed(rep, ItemsStarted(ts=EPOCH, batch="A", indices=list(range(200))))
    shown = render(rep)
    assert shown.count("running: B[") == progress.MAX_ROWS  # B's items started first
    assert f"+{400 - progress.MAX_ROWS} more" in shown


def test_a_finished_batch_shows_no_running_chunk() -> None:
    rep = reporter("live", term_console(), FakeClock())
    feed(rep, run_started("B"), BatchStarted(ts=EPOCH, node="B", total=8))
    feed(rep, ItemsStarted(ts=EPOCH, batch="B", indices=range(0, 8)))
    feed(rep, BatchFinished(ts=EPOCH, node="B", status="cancelled", total=8))
    assert "running:" not in render(rep)
