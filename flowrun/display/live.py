"""Progress display: a sink of the event stream, live (rich) on a terminal, else plain lines.

    console = Console(stderr=True)
    mode = choose_mode(console, quiet=quiet, no_progress=no_progress, env=os.environ)
    reporter = make_reporter(mode, console)
    with reporter:                                  # start() ... stop(), also on Ctrl-C
        report = api.run(path, sinks=[reporter])    # one call per event, driver thread only
    reporter.summary()                              # tracebacks, table, final line

The sink itself only does plain-Python bookkeeping (`display.record.RunRecord`); in live mode
rich renders that record on its own refresh thread, `refresh_per_second` times a second, so
the cost of the display grows with the rows shown, never with the number of events. A frame
is laid out here line by line (no rich Table, no text wrapping), and only the rows shown are
formatted; rich itself is imported only for a live display.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain, islice
from typing import ClassVar

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.segment import Segment
from rich.text import Text

from flowrun.display.plain import (
    BatchRecord,
    Clock,
    Mode,
    NullReporter,
    QuietReporter,
    Reporter,
    RunRecord,
    SummaryRow,
    cancelling_text,
    failure_text,
    fmt_rate,
    fmt_seconds,
    make_line_reporter,
)
from flowrun.display.streams import FdRouter

__all__ = ["Mode", "NullReporter", "QuietReporter", "Reporter", "choose_mode", "make_reporter"]

#: running nodes shown before "+N more": render cost grows with rows, not with events
MAX_ROWS = 20
#: batch bars shown (two lines each) before "+N more batches"; unfinished ones come first
MAX_BATCHES = 8
#: retrying nodes and latest failures shown above the running nodes
MAX_EVENT_ROWS = 5
_BAR_WIDTH = 30
_LABEL_WIDTH = 22  # the label column: node names are cut with an ellipsis past this
_STATUS_STYLE = {"succeeded": "green", "failed": "red", "recovered": "yellow"}


def choose_mode(
    console: Console, *, quiet: bool, no_progress: bool, env: Mapping[str, str]
) -> Mode:
    """`off` with --no-progress, `quiet` with --quiet, `live` on an interactive terminal
    outside CI, otherwise `plain`."""
    if no_progress:
        return "off"
    if quiet:
        return "quiet"
    if not console.is_interactive or _is_set(env.get("CI")):
        return "plain"
    if env.get("TERM", "").lower() in ("dumb", "unknown"):
        return "plain"
    # FORCE_COLOR makes rich call a pipe a terminal; animating into a log file helps nobody
    if "FORCE_COLOR" in env and not _isatty(console):
        return "plain"
    return "live"


def _is_set(value: str | None) -> bool:
    return value is not None and value.strip().lower() not in ("", "0", "false", "no")


def _isatty(console: Console) -> bool:
    try:
        return console.file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def make_reporter(
    mode: Mode,
    console: Console,
    *,
    get_time: Clock = time.monotonic,
    wall_clock: Clock = time.time,
    refresh_per_second: float = 10,
) -> Reporter:
    """The sink for `mode`; `get_time` measures durations, `wall_clock` stamps plain lines."""
    if mode == "live":
        return LiveReporter(console, RunRecord(get_time), refresh_per_second)
    reporter = make_line_reporter(mode, console, get_time=get_time, wall_clock=wall_clock)
    if reporter is None:
        raise ValueError(f"unknown progress mode {mode!r}")
    return reporter


class LiveView:
    """The live display, built from the record each time rich refreshes it.

    Called on rich's refresh thread while the driver thread writes the record: it reads
    ints and copies the two small dicts (`dict.copy()` is atomic under the GIL, and takes
    the dict's lock on free-threaded builds), and never iterates a dict that is mutating.
    """

    def __init__(self, record: RunRecord, max_rows: int = MAX_ROWS) -> None:
        self.record = record
        self.max_rows = max_rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Each row is one line: cut it to the width and hand rich its segments, which skips
        # rich's wrapping machinery (most of a frame's cost) for text that never wraps.
        width, line = options.max_width, Segment.line()
        for row in self._rows(console, options):
            row.truncate(width, overflow="ellipsis")
            segments = row.render(console)
            if row.style:
                segments = Segment.apply_style(segments, console.get_style(row.style))
            yield from segments
            yield line

    def _rows(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        rec = self.record
        now = rec.now()
        running = rec.running.copy()
        batches = list(rec.batches.copy().values())
        shown = _visible_batches(batches, MAX_BATCHES)
        stopping = rec.cancelling is not None and rec.finished is None
        yield Text(_header(rec, now), style="bold yellow" if stopping else "bold", no_wrap=True)
        # one Text per line, laid out here: a rich Table would measure every cell each frame
        labels = [_run_label(rec), *(batch.node for batch in shown)]
        width = min(max(map(cell_len, labels)), _LABEL_WIDTH)
        colour = console.color_system is not None and not console.no_color
        yield _line(_cell(labels[0], width), self._overall(now, colour))
        active = Counter(owner for owner, _ in running.values()) if shown else Counter()
        items = [(b.node, b.chunks.copy(), b.running.copy()) for b in batches if b.active]
        for batch in shown:
            yield _line(_cell(batch.node, width), _batch_bar(batch, colour))
            count = active[batch.node] + batch.active
            detail = _batch_detail(batch, count, now, eta=not stopping)
            yield _line(Text(" " * width), detail)
        hidden = len(batches) - len(shown)
        if hidden:
            yield Text(f"+{hidden} more batches", style="dim")
        events = _event_rows(rec, now, MAX_EVENT_ROWS)
        yield from events
        # keep "+N more" on screen: rich cuts a live display taller than the terminal
        used = 2 + 2 * len(shown) + (1 if hidden else 0) + len(events) + 1
        room = (options.height or options.max_height) - used
        yield from _running_rows(running, items, now, max(1, min(self.max_rows, room)))

    def _overall(self, now: float, colour: bool) -> Text:
        rec = self.record
        if rec.started is None:
            return _bar_row(0, 1, "starting", None, colour)
        end = rec.finished_at if rec.finished_at is not None else now
        done = len(rec.settled)  # read before `total`, which is never less than it
        failed = rec.any_failed or (rec.finished is not None and rec.finished.status == "failed")
        label = f"{done}/{rec.total} nodes  {_clock(end - rec.started_at)}"
        return _bar_row(done, rec.total, label, "red" if failed else None, colour)


def _cell(text: str, width: int) -> Text:
    """`text` in a column `width` cells wide: padded, or cut with an ellipsis."""
    cell = Text(text)
    cell.truncate(width, overflow="ellipsis", pad=True)
    return cell


def _line(*parts: Text) -> Text:
    line = Text(" ").join(parts)
    line.no_wrap, line.overflow = True, "ellipsis"
    return line


def _run_label(rec: RunRecord) -> str:
    return f"run {rec.started.blueprint}" if rec.started else "run"


def _header(rec: RunRecord, now: float) -> str:
    """`run batch-workflow 20261201-101500-3f9a`, or the cancelling state with its countdown."""
    head = f"run {rec.started.blueprint} {rec.started.run_id}" if rec.started else "run"
    if rec.cancelling is not None and rec.finished is None:
        grace, _, since = rec.cancelling
        running = rec.running_count()
        return f"{head}  {cancelling_text(grace, running, grace - (now - since))}"
    return head


def _bar_row(
    done: int, total: int, label: str, colour: str | None = None, draw_back: bool = True
) -> Text:
    """A bar `_BAR_WIDTH` cells wide then `label`, drawn as rich's `ProgressBar` draws it."""
    return Text.assemble(_bar(done, total, colour, draw_back), " ", Text(label, style=colour or ""))


def _bar(done: int, total: int, colour: str | None, draw_back: bool) -> Text:
    total = max(total, 1)
    halves = int(_BAR_WIDTH * 2 * min(total, max(0, done)) / total)
    full, half = divmod(halves, 2)
    style = colour or ("bar.finished" if done >= total else "bar.complete")
    bar = Text.assemble(("━" * full, style), ("╸" * half, style))
    rest = _BAR_WIDTH - full - half
    if rest and draw_back:  # the unfinished part, in colour only (as rich draws it)
        if not half and full:
            bar.append("╺", "bar.back")
            rest -= 1
        bar.append("━" * rest, "bar.back")
    elif rest:
        bar.append(" " * rest)
    return bar


def _batch_bar(batch: BatchRecord, draw_back: bool = True) -> Text:
    colour = "red" if batch.status == "failed" else None
    label = f"{batch.done}/{batch.total} items"
    return _bar_row(batch.done, batch.total, label, colour, draw_back)


def _event_rows(rec: RunRecord, now: float, cap: int) -> list[Text]:
    """Task nodes waiting for a retry (`attempt 2/4, retry in 0.3 s`), then the latest
    failures, as they happen."""
    rows = []
    for node, (attempt, total, due) in list(rec.retrying.copy().items())[:cap]:
        of = f"/{total}" if total else ""
        error = rec.nodes[node].error if node in rec.nodes else ""
        text = f"retry: {node}  attempt {attempt + 1}{of}, retry in {max(due - now, 0.0):.1f} s"
        rows.append(Text(f"{text}  ({error})" if error else text, style="yellow", no_wrap=True,
                         overflow="ellipsis"))  # fmt: skip
    failures = rec.failures[-max(cap - len(rows), 0) :] if cap > len(rows) else []
    for failed in failures:
        rows.append(Text(f"failed: {failed.node}  {failed.error}", style="red", no_wrap=True,
                         overflow="ellipsis"))  # fmt: skip
    return rows


def _batch_detail(batch: BatchRecord, active: int, now: float, *, eta: bool = True) -> Text:
    """`2 failed · 4 running · 1,234/s · ETA 0:00:05` under the batch's bar (`active`: its
    running items)."""
    parts = [f"{batch.failed} failed", f"{active} running"]
    if batch.retries:
        parts.append(f"{batch.retries} retries")
    if batch.finished_at is None:
        if batch.waiting:
            parts.append(batch.waiting)
        parts.append(fmt_rate(batch, now))
        if eta:  # a cancelling run has no ETA: it will not finish the batch
            parts.append(f"ETA {_eta(batch, now)}")
    else:
        parts.append(batch.status)
    return Text(" · ".join(parts), style="red" if batch.failed else "dim")


def _eta(batch: BatchRecord, now: float) -> str:
    finished = batch.succeeded + batch.failed
    elapsed = now - batch.started_at
    if finished <= 0 or elapsed <= 0:
        return "-:--:--"
    return _clock((batch.total - batch.done) * elapsed / finished)


def _visible_batches(batches: list[BatchRecord], cap: int) -> list[BatchRecord]:
    """All batches if they fit, else the unfinished ones first."""
    if len(batches) <= cap:
        return batches
    unfinished = [b for b in batches if b.finished_at is None]
    return (unfinished + [b for b in batches if b.finished_at is not None])[:cap]


def _running_rows(
    running: dict[str, tuple[str | None, float]],
    items: list[tuple[str, dict[int, tuple[Sequence[int], float]], dict[int, float]]],
    now: float,
    cap: int,
) -> list[Text]:
    """`running: B[3]  0.42 s` for the longest-running nodes first, then `+N more`.

    `running` holds nodes (and items announced one by one), `items` each batch's running
    chunks and the items of chunks that settled in parts; only the `cap` oldest are
    formatted."""
    firsts = [(since, node) for node, (_, since) in islice(running.items(), cap)]
    total = len(running)
    for batch, chunks, started in items:
        in_chunks = ((since, i) for indices, since in chunks.values() for i in indices)
        for since, i in heapq.nsmallest(cap, chain(islice(in_chunks, cap), _swap(started))):
            firsts.append((since, f"{batch}[{i}]"))
        total += sum(len(indices) for indices, _ in chunks.values()) + len(started)
    rows = [
        Text(f"running: {node}  {fmt_seconds(now - since)}", no_wrap=True, overflow="ellipsis")
        for since, node in heapq.nsmallest(cap, firsts, key=_since)
    ]
    if total > cap:
        rows.append(Text(f"+{total - cap} more", style="dim"))
    return rows


def _swap(started: dict[int, float]) -> Iterator[tuple[float, int]]:
    return ((since, i) for i, since in started.items())


def _since(row: tuple[float, str]) -> float:
    return row[0]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(int(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class LiveReporter(Reporter):
    """A rich `Live` display refreshed on rich's own thread; the sink never calls rich."""

    mode: ClassVar[Mode] = "live"
    console: Console

    def __init__(self, console: Console, record: RunRecord, refresh_per_second: float) -> None:
        super().__init__(console, record)
        self.view = LiveView(record)
        self.refresh_per_second = refresh_per_second
        self._live: Live | None = None
        self._stopped = False
        self._router: FdRouter | None = None

    def start(self) -> None:
        """Show the display; a second call, or a call after `stop()`, does nothing."""
        if self._live is not None or self._stopped:
            return
        if FdRouter.usable(self.console):
            # fd-level writes (child processes, C code) would tear through the display
            self._router = FdRouter(self.console)
            self._router.start()
        self._live = Live(
            self.view,
            console=self.console,
            refresh_per_second=self.refresh_per_second,
            # stdout carries data (--json): leave it alone unless it is a terminal too, where
            # a node's print() would otherwise tear through the display
            redirect_stdout=_stdout_is_tty(),
            redirect_stderr=True,
        )
        self._live.start(refresh=True)

    def stop(self) -> None:
        """Stop the display and show the cursor again, whatever state it was left in."""
        self._stopped = True
        live, self._live = self._live, None
        if live is None:
            return
        try:
            live.stop()
        finally:
            self.console.show_cursor(True)
            router, self._router = self._router, None
            if router is not None:
                router.stop()

    def print_summary(self) -> None:
        """Tracebacks of the failures, a table of the nodes, then the final line."""
        failures = list(self.record.reported_failures())
        if failures:
            from rich.rule import Rule  # only a failed run draws rules

            for rec in failures:
                head, _, body = failure_text(rec).partition("\n")
                self.console.print(Rule(Text(head), style="red", align="left"))
                if body:
                    self.console.print(Text(body), soft_wrap=True)
        self.print_omitted()
        rows = self.record.summary_rows()
        for line in _summary_table(rows, self.console):
            self.console.print(line, soft_wrap=True)
        self.console.print(Text(self.record.final_line(rows), style="bold"), soft_wrap=True)


_HEADER = SummaryRow("node", "status", "attempts", "duration", "notes")
_RIGHT = (False, False, True, True, False)  # attempts and duration are right-aligned


def _summary_table(rows: list[SummaryRow], console: Console) -> list[Text]:
    """The summary's table, laid out as rich's `Table(box=None, pad_edge=False)` lays it out
    (two spaces between columns, a bold header), without rich's table machinery: ids and
    numbers stay whole, only the notes wrap, under their own column."""
    widths = [max(cell_len(row[c]) for row in (_HEADER, *rows)) for c in range(len(_HEADER))]
    lead = sum(widths[:-1]) + 2 * (len(widths) - 1)  # where the notes column starts
    notes_width = max(console.width - lead, 10)
    lines = []
    for n, row in enumerate((_HEADER, *rows)):
        line = Text(style="bold" if n == 0 else "")
        for c, (cell, w) in enumerate(zip(row[:-1], widths, strict=False)):
            pad = " " * (w - cell_len(cell))
            style = _STATUS_STYLE.get(cell, "dim") if c == 1 and n else ""
            if _RIGHT[c]:
                line.append(pad)
            line.append(cell, style)
            line.append("  " if _RIGHT[c] else pad + "  ")
        notes = Text(row.notes)
        parts = notes.wrap(console, notes_width, overflow="fold") if row.notes else [notes]
        line.append_text(parts[0])
        lines.append(line)
        for more in parts[1:]:
            lines.append(Text(" " * lead, style=line.style).append_text(more))
    for line in lines:
        line.rstrip()
    return lines


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
