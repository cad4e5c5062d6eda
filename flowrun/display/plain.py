"""The plain-line progress sink, and the `Reporter` base every display builds on.

`Reporter` feeds each event to a `RunRecord` (`display.record`) and prints the summary once;
`PlainReporter` adds timestamped lines without ANSI codes, with batch items shown only as
throttled progress lines. The live rich view is in `progress.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, Literal, Self

from rich.console import Console

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
    pool_text,
)
from flowrun.events import (
    BatchFinished,
    BatchStarted,
    Event,
    NodeFailed,
    NodeRecovered,
    NodeRetry,
    NodeSkipped,
    NodeStarted,
    NodeSucceeded,
    PoolWaiting,
    RunStarted,
)

__all__ = [
    "MAX_ITEM_TRACEBACKS",
    "PROGRESS_EVERY_S",
    "BatchRecord",
    "Clock",
    "Mode",
    "NodeRecord",
    "PlainReporter",
    "Reporter",
    "RunRecord",
    "SummaryRow",
    "failure_text",
    "fmt_ms",
    "fmt_rate",
    "fmt_seconds",
    "progress_text",
]

#: a batch's plain progress line comes at each 10% or after this many seconds without one
PROGRESS_EVERY_S = 5.0

Mode = Literal["live", "plain", "quiet", "off"]


class Reporter:
    """A display sink: call it with every event, between `start()` and `stop()`.

    `summary()` stops the display and prints, once, what the recorded events say. The base
    class only records; the subclasses decide what to show.
    """

    mode: ClassVar[Mode] = "off"

    def __init__(self, console: Console, record: RunRecord) -> None:
        self.console = console
        self.record = record
        self._dispatch: dict[type[Event], Handler] = record.handlers
        self._summarized = False

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


@dataclass(slots=True)
class _Throttle:
    step: int  # items per progress line (10%)
    next_mark: int
    last: float  # clock time of the last progress line


class PlainReporter(Reporter):
    """Timestamped lines without ANSI codes; batch items only as throttled progress lines."""

    mode: ClassVar[Mode] = "plain"

    def __init__(self, console: Console, record: RunRecord, wall_clock: Clock) -> None:
        super().__init__(console, record)
        self.wall_clock = wall_clock
        self._width = 16
        self._throttles: dict[str, _Throttle] = {}
        self._dispatch = record.handlers | {
            RunStarted: self._run_started,
            NodeStarted: self._started,
            NodeSucceeded: self._succeeded,
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
        if e.batch is None:
            self._line(e.node, "started", f"attempt {e.attempt}" if e.attempt > 1 else "")

    def _succeeded(self, e: NodeSucceeded) -> None:
        self.record.on_succeeded(e)
        if e.batch is None:
            took = "reused from an earlier run" if e.reused else fmt_ms(e.duration_ms)
            self._line(e.node, "succeeded", took)
        else:
            self._progress(e.batch)

    def _failed(self, e: NodeFailed) -> None:
        self.record.on_failed(e)
        error = error_line(e.error_type, e.message)
        self._line(e.node, "failed", f"{fmt_ms(e.duration_ms)}  attempt {e.attempt}: {error}")
        if e.batch is not None:
            self._progress(e.batch)

    def _retry(self, e: NodeRetry) -> None:
        self.record.on_retry(e)
        error = error_line(e.error_type, e.message)
        detail = f"attempt {e.attempt} failed: {error}; retrying in {fmt_ms(e.delay_s * 1000)}"
        self._line(e.node, "retry", detail)

    def _skipped(self, e: NodeSkipped) -> None:
        self.record.on_skipped(e)
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


def failure_text(rec: NodeRecord) -> str:
    """The summary's block for one failure: a header line, then the traceback as given."""
    head = f"{rec.node} failed (attempt {rec.attempts}): {rec.error}"
    if rec.status == "recovered":
        head += f"; fallback {rec.fallback} stood in"
    return f"{head}\n{rec.traceback.rstrip()}" if rec.traceback.strip() else head


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
