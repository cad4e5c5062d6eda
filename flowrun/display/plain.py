"""The plain-line progress sink, and the `Reporter` base every display builds on.

`Reporter` feeds each event to a `RunRecord` (`display.record`) and prints the summary once;
`PlainReporter` adds timestamped lines without ANSI codes, with batch items shown only as
throttled progress lines. The live rich view is in `display.live`.

Nothing here imports rich: plain, quiet and `--no-progress` runs write through `PlainConsole`
(what rich's `Console.out` writes, without rich's import cost), and `quick_mode` picks those
modes without asking rich whenever the answer does not depend on rich's terminal detection.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any, ClassVar, Literal, Protocol, Self

from flowrun.display.record import (
    MAX_ITEM_TRACEBACKS,
    BatchRecord,
    Clock,
    Handler,
    NodeRecord,
    RunRecord,
    SummaryRow,
    error_line,
    fmt_ms,
    fmt_seconds,
    is_item_child,
    pool_text,
)
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
    PoolWaiting,
    RunCancelling,
    RunStarted,
)
from flowrun.frozen import Mutable, fast_mutable

__all__ = [
    "MAX_ITEM_TRACEBACKS",
    "PROGRESS_EVERY_S",
    "BatchRecord",
    "Clock",
    "Mode",
    "NodeRecord",
    "NullReporter",
    "Out",
    "PlainConsole",
    "PlainReporter",
    "QuietReporter",
    "Reporter",
    "RunRecord",
    "SummaryRow",
    "cancelling_text",
    "failure_text",
    "fmt_ms",
    "fmt_rate",
    "fmt_seconds",
    "logs_text",
    "make_line_reporter",
    "progress_text",
    "quick_mode",
    "retry_text",
]

#: a batch's plain progress line comes at each 10% or after this many seconds without one
PROGRESS_EVERY_S = 5.0

Mode = Literal["live", "plain", "quiet", "off"]


class Out(Protocol):
    """What a line-based display writes to: rich's `Console`, or `PlainConsole`."""

    @property
    def file(self) -> IO[str]: ...

    def out(self, *objects: Any, highlight: bool | None = None) -> None: ...


#: what rich's `Text` drops from printed text (BEL, BS, VT, FF, CR)
_CONTROL = dict.fromkeys(map(ord, "\x07\x08\x0b\x0c\r"))


class PlainConsole:
    """Writes exactly what rich's `Console.out(text, highlight=False)` writes to a file that is
    not a terminal: the text with rich's control characters removed and tabs expanded to
    8-cell stops, then a newline, flushed at once (plain lines are read live from logs)."""

    def __init__(self, file: IO[str] | None = None) -> None:
        self._file = file

    @property
    def file(self) -> IO[str]:
        return self._file if self._file is not None else sys.stderr

    def out(self, *objects: Any, highlight: bool | None = None) -> None:
        text = " ".join(str(o) for o in objects).translate(_CONTROL)
        if "\t" in text:
            text = "\n".join(_expand_tabs(line) for line in text.split("\n"))
        stream = self.file
        stream.write(text + "\n")
        stream.flush()


def _expand_tabs(line: str) -> str:
    out: list[str] = []
    cells = 0
    for char in line:
        if char == "\t":
            pad = 8 - cells % 8
            out.append(" " * pad)
            cells += pad
        else:
            out.append(char)
            cells += _cell_width(char)
    return "".join(out)


def _cell_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def quick_mode(
    stream: IO[str], *, quiet: bool, no_progress: bool, env: Mapping[str, str]
) -> Mode | None:
    """The display mode when it can be told without rich, else None (ask `live.choose_mode`).

    Agrees with `choose_mode`: `off` and `quiet` come from the flags, and a stream that is not
    a terminal is `plain` unless an environment variable makes rich call it a terminal
    (`TTY_COMPATIBLE=1`, `TTY_INTERACTIVE`, or FORCE_COLOR, which `choose_mode` also handles)."""
    if no_progress:
        return "off"
    if quiet:
        return "quiet"
    if env.get("TTY_COMPATIBLE") == "1" or "TTY_INTERACTIVE" in env:
        return None
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return None if tty else "plain"


class Reporter:
    """A display sink: call it with every event, between `start()` and `stop()`.

    `summary()` stops the display and prints, once, what the recorded events say. The base
    class only records; the subclasses decide what to show.
    """

    mode: ClassVar[Mode] = "off"

    def __init__(self, console: Out, record: RunRecord) -> None:
        self.console = console
        self.record = record
        self._dispatch: dict[type[Event], Handler] = record.handlers
        self._summarized = False

    @property
    def handlers(self) -> Mapping[type[Event], Handler]:
        """Event type -> handler: the bus calls these directly and skips the other types."""
        return self._dispatch

    def __call__(self, event: Event) -> None:
        try:  # a subscript is cheaper than .get() on the per-item hot path
            handler = self._dispatch[type(event)]
        except KeyError:  # an event type this display does not show
            return
        handler(event)

    def start(self) -> None:
        """Begin showing progress (line-based modes have nothing to set up)."""

    def stop(self) -> None:
        """Stop showing progress; safe to call any number of times."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def summary(self) -> None:
        """Stop, then print the summary of the run (only the first call prints)."""
        self.stop()
        if not self._summarized:
            self._summarized = True
            self.print_summary()

    def print_summary(self) -> None:
        """Print what the subclass shows at the end of a run."""

    def print_failures(self, *, include_recovered: bool = True) -> None:
        """Each failure's header and traceback (once), as plain text."""
        for rec in self.record.reported_failures(include_recovered=include_recovered):
            self.console.out(failure_text(rec), highlight=False)
        self.print_omitted()

    def print_omitted(self) -> None:
        for batch, count in self.record.omitted_tracebacks():
            text = f"{batch}: {count} more failed items (tracebacks not shown)"
            self.console.out(text, highlight=False)


@fast_mutable
class _Throttle(Mutable):
    """When a batch's next plain progress line is due."""

    step: int  # items per progress line (10%)
    next_mark: int
    last: float  # clock time of the last progress line


class PlainReporter(Reporter):
    """Timestamped lines without ANSI codes; batch items only as throttled progress lines."""

    mode: ClassVar[Mode] = "plain"

    def __init__(self, console: Out, record: RunRecord, wall_clock: Clock) -> None:
        super().__init__(console, record)
        self.wall_clock = wall_clock
        self._width = 16
        self._throttles: dict[str, _Throttle] = {}
        self._dispatch = record.handlers | {
            RunStarted: self._run_started,
            RunCancelling: self._cancelling,
            NodeStarted: self._started,
            NodeSucceeded: self._succeeded,
            ItemsSucceeded: self._items_succeeded,
            NodeFailed: self._failed,
            NodeRetry: self._retry,
            NodeSkipped: self._skipped,
            NodeRecovered: self._recovered,
            BatchStarted: self._batch_started,
            BatchFinished: self._batch_finished,
            PoolWaiting: self._pool_waiting,
        }

    def _line(self, node: str, status: str, detail: str = "") -> None:
        stamp = datetime.fromtimestamp(self.wall_clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"{stamp}  {node:<{self._width}}  {status:<10} {detail}"
        self.console.out(text.rstrip(), highlight=False)

    def _run_started(self, e: RunStarted) -> None:
        self.record.on_run_started(e)
        self._width = min(max([16, *map(len, e.node_ids)]), 40)
        resumed = ", resumed" if e.resumed else ""
        self._line(e.blueprint or "run", "started", f"{e.nodes} nodes, run {e.run_id}{resumed}")

    def _started(self, e: NodeStarted) -> None:
        self.record.on_started(e)
        if e.batch is None and not is_item_child(e.node):
            self._line(e.node, "started", f"attempt {e.attempt}" if e.attempt > 1 else "")

    def _succeeded(self, e: NodeSucceeded) -> None:
        self.record.on_succeeded(e)
        if is_item_child(e.node):
            return  # a batch item's subflow: the batch's progress lines count it
        if e.batch is None:
            took = "reused from an earlier run" if e.reused else fmt_ms(e.duration_ms)
            self._line(e.node, "succeeded", took)
        else:
            self._progress(e.batch)

    def _items_succeeded(self, e: ItemsSucceeded) -> None:
        self.record.on_items_succeeded(e)
        self._progress(e.batch)

    def _failed(self, e: NodeFailed) -> None:
        self.record.on_failed(e)
        error = error_line(e.error_type, e.message)
        self._line(e.node, "failed", f"{fmt_ms(e.duration_ms)}  attempt {e.attempt}: {error}")
        if e.batch is not None:
            self._progress(e.batch)

    def _retry(self, e: NodeRetry) -> None:
        self.record.on_retry(e)
        self._line(e.node, "retry", retry_text(e))

    def _cancelling(self, e: RunCancelling) -> None:
        self.record.on_cancelling(e)
        name = self.record.started.blueprint if self.record.started else "run"
        self._line(name, "cancelling", cancelling_text(e.grace_s, e.running))

    def _skipped(self, e: NodeSkipped) -> None:
        self.record.on_skipped(e)
        if not is_item_child(e.node):
            self._line(e.node, "skipped")

    def _recovered(self, e: NodeRecovered) -> None:
        self.record.on_recovered(e)
        self._line(e.node, "recovered", f"fallback {e.fallback} stood in")

    def _batch_started(self, e: BatchStarted) -> None:
        self.record.on_batch_started(e)
        step = max(1, -(-e.total // 10))  # ceil(10%)
        self._throttles[e.node] = _Throttle(step, (e.done // step + 1) * step, self.record.now())
        resumed = f", {e.done} already done" if e.done else ""
        self._line(e.node, "batch", f"{e.total} items{resumed}")

    def _pool_waiting(self, e: PoolWaiting) -> None:
        self.record.on_pool_waiting(e)
        self._line(e.node, "waiting", pool_text(e).removeprefix("waiting "))

    def _batch_finished(self, e: BatchFinished) -> None:
        self.record.on_batch_finished(e)
        batch = self.record.batches[e.node]
        took = fmt_seconds((batch.finished_at or 0.0) - batch.started_at)
        self._line(e.node, e.status, f"{e.succeeded}/{e.total} items, {e.failed} failed, {took}")

    def _progress(self, name: str) -> None:
        """A progress line at each 10% of the batch, or after PROGRESS_EVERY_S without one."""
        batch = self.record.batches[name]
        throttle = self._throttles.get(name)
        if throttle is None:  # items without a BatchStarted: fall back to time only
            throttle = self._throttles[name] = _Throttle(1 << 62, 1 << 62, self.record.now())
        now = self.record.now()
        done = batch.done
        if done < throttle.next_mark and now - throttle.last < PROGRESS_EVERY_S:
            return
        throttle.next_mark = (done // throttle.step + 1) * throttle.step
        throttle.last = now
        if done < batch.total:  # the BatchFinished line reports 100%
            self._line(name, "progress", progress_text(batch, now))

    def print_summary(self) -> None:
        """Tracebacks of the failures, the table of nodes, then the final line."""
        self.print_failures()
        rows = self.record.summary_rows()
        width = min(max([16, *(len(r.node) for r in rows)]), 40)
        header = SummaryRow("node", "status", "attempts", "duration", "")
        for row in [header, *rows]:
            text = (
                f"{row.node:<{width}}  {row.status:<10}  {row.attempts:>8}  "
                f"{row.duration:>10}  {row.notes}"
            )
            self.console.out(text.rstrip(), highlight=False)
        self.console.out(self.record.final_line(rows), highlight=False)


#: lines of a failed node's captured output printed under its traceback (all are stored)
MAX_LOG_LINES = 40


class QuietReporter(Reporter):
    """`--quiet`: nothing while the run goes; at the end, the failures no fallback covered."""

    mode: ClassVar[Mode] = "quiet"

    def __init__(self, console: Out, record: RunRecord) -> None:
        super().__init__(console, record)
        # Nothing shows while the run goes: what starts and succeeds is not recorded (the
        # summary lists failures only), so items cost this sink nothing.
        self._dispatch = {k: v for k, v in record.handlers.items() if k not in _PROGRESS}

    def print_summary(self) -> None:
        """Each uncovered failure with its traceback, and nothing else."""
        self.print_failures(include_recovered=False)


#: the events only a display of progress needs
_PROGRESS = frozenset({NodeStarted, NodeSucceeded, ItemsStarted, ItemsSucceeded})


class NullReporter(Reporter):
    """`--no-progress`: a sink that ignores every event and prints nothing."""

    mode: ClassVar[Mode] = "off"

    def __init__(self, console: Out, record: RunRecord) -> None:
        super().__init__(console, record)
        self._dispatch = {}


def make_line_reporter(
    mode: Mode, console: Out, *, get_time: Clock, wall_clock: Clock
) -> Reporter | None:
    """The sink for a mode that writes lines (`plain`, `quiet`, `off`); None for `live`."""
    record = RunRecord(get_time)
    if mode == "plain":
        return PlainReporter(console, record, wall_clock)
    if mode == "quiet":
        return QuietReporter(console, record)
    if mode == "off":
        return NullReporter(console, record)
    return None


def failure_text(rec: NodeRecord) -> str:
    """The summary's block for one failure: a header line, the traceback as given, then the
    tail of what the node printed."""
    head = f"{rec.node} failed (attempt {rec.attempts}): {rec.error}"
    if rec.status == "recovered":
        head += f"; fallback {rec.fallback} stood in"
    text = f"{head}\n{rec.traceback.rstrip()}" if rec.traceback.strip() else head
    return text + logs_text(rec.node, rec.logs)


def logs_text(node: str, logs: str) -> str:
    """`--- output of B[3] ---` and the last MAX_LOG_LINES lines of it (empty without output)."""
    lines = logs.rstrip("\n").splitlines()
    if not lines:
        return ""
    shown = lines[-MAX_LOG_LINES:]
    more = len(lines) - len(shown)
    note = f" (last {len(shown)} of {len(lines)} lines: flowrun runs show --logs)" if more else ""
    return f"\n--- output of {node}{note} ---\n" + "\n".join(shown)


def retry_text(e: NodeRetry) -> str:
    """`attempt 2/4 failed: ValueError: boom; retry in 0.3 s`."""
    of = f"/{e.attempts}" if e.attempts else ""
    error = error_line(e.error_type, e.message)
    return f"attempt {e.attempt}{of} failed: {error}; retry in {fmt_delay(e.delay_s)}"


def cancelling_text(grace_s: float, running: int, left: float | None = None) -> str:
    """`cancelling: waiting up to 3 s for 4 nodes`."""
    nodes = f"{running} node{'s' * (running != 1)}"
    wait = f"up to {grace_s:g} s" if left is None else f"{max(left, 0.0):.1f} s more"
    return f"cancelling: waiting {wait} for {nodes}" if running else "cancelling"


def fmt_delay(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else fmt_seconds(seconds)


def progress_text(batch: BatchRecord, now: float) -> str:
    """`4000/10000 items (40%), 3 failed, 1,234/s`."""
    percent = 100 * batch.done // batch.total if batch.total else 0
    return (
        f"{batch.done}/{batch.total} items ({percent}%), {batch.failed} failed, "
        f"{fmt_rate(batch, now)}"
    )


def fmt_rate(batch: BatchRecord, now: float) -> str:
    """Items finished in this run per second since the batch started."""
    elapsed = now - batch.started_at
    rate = (batch.succeeded + batch.failed) / elapsed if elapsed > 0 else 0.0
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.1f}/s"
