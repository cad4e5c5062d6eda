"""Lanes: workers that take a batch's next items themselves.

A batch of slow items (a millisecond or more each: a sleep, a request, a subprocess) handed out
one chunk per worker trip costs the driver a round trip per item: with a thousand threads
contending for the GIL, the driver thread gets it rarely, and workers sit idle waiting for their
next item. A lane is a worker that holds one concurrency slot and, each time it finishes a
chunk, claims the next one itself from the batch's `Feed`: a window of items the driver took
from the scheduler, shared under a lock. It leaves what it did (the chunk and its outcome) and
what it claimed in the feed, and wakes the driver only when the feed had nothing waiting, so
the driver settles everything that came back since it last looked in one go, however many
items that is: one `ItemsStarted` for the items claimed, one chunk outcome for the items done.

The driver starts one lane, and the lanes start the others (two each): every start wakes a
thread, and under that contention the driver thread would wait its turn after each one. The
window holds about a second of work per lane, so a driver starved of the GIL leaves no lane
idle; when other calls wait for a slot, that many lanes leave at their next claim.

When a batch runs a hundred or more at once, a lane claims several slow items at a time (about
`LANE_CLAIM_MS` of work): one trip through the feed for them all. Its chunk then carries a
`Progress` that `run_items` fills as each item ends, and the driver, looking every `PEEK_S`,
settles what ended in a claim running long and takes back what it has not started (another
lane runs those), so an item that runs long holds back nothing of its claim; when the run
stops it settles everything that ended. A claim's first item is announced when it is claimed,
the others when they settle: no item is announced that never ran.

What stays the driver's: the window (it tops it up from the scheduler, and takes back what no
lane claimed once the batch goes over its failure budget or the run stops), the slots (one
per lane), the events, the store's records, retries and failures (every outcome settles as a
chunk's does). Items claimed since the driver last looked are announced when it looks, so the
display's running count is exact as of each look.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from flowrun import events as ev
from flowrun.engine.invoke import (
    Items,
    ItemsOutcome,
    Progress,
    crashed_items,
    each_json,
    finished_part,
    rest_of,
)

#: a chunk run, as the backend runs one (`ThreadBackend.run_items`)
Run = Callable[[Items], ItemsOutcome]


def indices_of(idx: list[int]) -> Sequence[int]:
    """`idx` (ascending) as a `range` when consecutive (the common case: records and events
    keep it so)."""
    if idx and idx[-1] - idx[0] == len(idx) - 1:
        return range(idx[0], idx[-1] + 1)
    return idx


class Feed:
    """One batch's items waiting for a lane, and what its lanes left since the driver looked.

    Everything but `lock` is shared with the lanes and read or changed under it, except
    `lanes`, the driver's own count of the lanes it started and has not seen leave."""

    __slots__ = (
        "batch",
        "claimed",
        "claimed_at",
        "fails",
        "fresh",
        "halted",
        "kwargs",
        "lanes",
        "leaving",
        "left",
        "lock",
        "long_s",
        "peek_at",
        "reports",
        "running",
        "seen",
        "start",
        "starting",
        "stopped",
        "take",
        "timeout",
        "uses",
        "values",
        "wake",
        "window",
    )  # fmt: skip

    def __init__(
        self,
        batch: str,
        uses: str,
        values: Sequence[Any],
        kwargs: Any,
        timeout: float | None,
        wake: Callable[[], None],
        stopped: Callable[[], bool],
    ) -> None:
        self.batch, self.uses, self.values = batch, uses, values
        self.kwargs, self.timeout = kwargs, timeout
        self.wake = wake  # thread-safe: makes the driver call `collect` soon
        self.stopped = stopped  # the run was cancelled: claim nothing more
        self.lock = threading.Lock()
        self.window: deque[int] = deque()  # taken from the scheduler, claimed by no lane yet
        self.take = 1  # items a lane claims at a time
        self.reports: list[tuple[Items, ItemsOutcome]] = []
        #: claimed since the driver looked: the first item of each claim (it starts at once;
        #: a claim's later items are announced when the driver sees them end, in `fresh`)
        self.claimed: list[int] = []
        self.claimed_at = 0.0  # when the first of them was
        self.fresh: list[int] = []  # items that ran since the driver looked, not announced
        #: the claims of several items running, by id: the driver settles the items each has
        #: finished when it runs long (`Lanes.peek`), from its `Progress`
        self.running: dict[int, Items] = {}
        self.peek_at = 0.0  # the driver's: when it next looks into `running`
        self.long_s = LONG_S  # a claim running this long (s) runs long (`LONG_S`)
        self.left = 0  # lanes that left since the driver looked
        #: an item failed since the driver looked: no lane claims more until it has settled
        #: the failure (the batch may be past its failure budget, the run may stop), as no
        #: item started while a failure waited for the driver before lanes
        self.halted = False
        self.fails = 0  # reports with a failure, ever
        self.seen = 0  # `fails` when the driver last looked
        self.lanes = 0
        self.leaving = 0  # lanes asked to leave at their next claim (others want their slots)
        #: lanes the driver counted in (their slots held) that no lane has started yet: the
        #: lanes start them, two each, so the driver starts one however many there are
        self.starting = 0
        self.start: Callable[[Callable[[Run], None]], None] | None = None

    def chunk(self, idx: list[int]) -> Items:
        values = self.values
        seq = indices_of(idx)
        vals = values[seq.start : seq.stop] if type(seq) is range else [values[i] for i in idx]
        return Items(self.batch, self.uses, vals, seq, self.kwargs, self.timeout)

    def _claim(self) -> Items:
        """Under the lock, with items waiting: the next claim (several items get a `Progress`
        the driver can read while they run)."""
        window = self.window
        idx = [window.popleft() for _ in range(min(self.take, len(window)))]
        chunk = self.chunk(idx)
        if len(idx) > 1:
            now = time.time()
            chunk.progress = Progress(since=now, due=now + self.long_s)  # (`_run` sets it again)
            self.running[id(chunk)] = chunk
        return chunk

    def first(self) -> Items | None:
        """The chunk a new lane starts with (the driver announces its first item), from the
        window."""
        with self.lock:
            return self._claim() if self.window else None

    def _ended(self, chunk: Items, res: ItemsOutcome) -> None:
        """Under the lock: leave what a lane's chunk came to for the driver, less what the
        driver settled of it while it ran; the items it ran that were not announced go to
        `fresh`."""
        prog = chunk.progress
        if prog is not None:
            del self.running[id(chunk)]
            m = prog.settled
            self.fresh += chunk.indices[prog.announced : res.ran]  # (`announced` >= `settled`)
            if m:
                rest = rest_of(chunk, res, m)
                if rest is None:
                    return
                chunk, res = rest
        self.reports.append((chunk, res))

    def report(self, chunk: Items, res: ItemsOutcome) -> Items | None:
        """On the lane: `chunk` came to `res`; the next chunk to run, or None (the lane
        leaves: nothing waits, or the run was cancelled)."""
        nxt = None
        failed = bool(res.others) and any(not o.ok for _, o in res.others)
        prog, n = chunk.progress, len(chunk.values)
        full = res.ran == (n if prog is None else min(n, prog.until))  # (the rest taken back)
        with self.lock:
            wake = not self.reports and not self.left
            if chunk.progress is None:
                self.reports.append((chunk, res))
            else:
                self._ended(chunk, res)
            if failed:
                self.halted = True
                self.fails += 1
            if self.leaving:
                self.leaving -= 1
                self.left += 1
            elif self.window and full and not self.halted and not self.stopped():
                nxt = self._claim()
                if not self.claimed:
                    self.claimed_at = time.time()
                self.claimed.append(nxt.indices[0])
            else:
                self.left += 1
        if wake:
            self.wake()
        return nxt

    def spread(self) -> list[Items]:
        """On a lane that just started: start two of the lanes still to start (each of them
        starts two more...), each with a chunk it claims; one that finds nothing to claim
        leaves at once. The chunks of lanes that could not be started (no thread to be had)
        are this lane's to run."""
        if not self.starting:
            return []
        window, chunks = self.window, []
        with self.lock:
            wake = not self.reports and not self.left
            k = min(2, self.starting)
            self.starting -= k
            for _ in range(k):
                if not window or self.halted or self.stopped() or self.start is None:
                    self.left += 1
                    continue
                chunk = self._claim()
                if not self.claimed:
                    self.claimed_at = time.time()
                self.claimed.append(chunk.indices[0])
                chunks.append(chunk)
            wake = wake and len(chunks) < k
        if wake:
            self.wake()
        mine: list[Items] = []
        for chunk in chunks:
            assert self.start is not None
            try:
                self.start(functools.partial(lane, self, chunk=chunk))
            except Exception:  # e.g. RuntimeError: can't start new thread
                mine.append(chunk)
                with self.lock:
                    wake = not self.reports and not self.left
                    self.left += 1  # that lane left before it started
                if wake:
                    self.wake()
        if len(mine) == len(chunks):
            self._none_started()
        return mine

    def _none_started(self) -> None:
        """This lane started no other (nothing to claim, halted, no thread), so none of the
        lanes still to start would be started by it: they leave now, as those it could not
        start did. Otherwise their slots would stay taken when no other lane is left to start
        them, and a driver waiting for them would wait for ever. (The driver starts lanes again
        when there is more to claim.)"""
        with self.lock:
            if not self.starting:
                return
            wake = not self.reports and not self.left
            self.left += self.starting
            self.starting = 0
        if wake:
            self.wake()

    def done(self, chunk: Items, res: ItemsOutcome) -> None:
        """On a lane: `chunk` (one another lane was to run) came to `res`."""
        with self.lock:
            wake = not self.reports and not self.left
            self._ended(chunk, res)
        if wake:
            self.wake()

    def leave(self) -> None:
        """On the lane: it leaves without a report (it failed outside any node)."""
        with self.lock:
            wake = not self.reports and not self.left
            self.left += 1
        if wake:
            self.wake()

    def resume(self) -> None:
        """On the driver, once it settled what the lanes left: lanes may claim again, unless
        another failure came in since it looked."""
        with self.lock:
            if self.fails == self.seen:
                self.halted = False

    def swap(self) -> tuple[list[tuple[Items, ItemsOutcome]], list[int], float, int, list[int]]:
        """On the driver: what the lanes left since it last looked (and forget it)."""
        with self.lock:
            out = (self.reports, self.claimed, self.claimed_at, self.left, self.fresh)
            self.seen = self.fails
            self.reports, self.claimed, self.left = [], [], 0
            if self.fresh:
                self.fresh = []
        return out

    def finished(self, every: bool) -> tuple[list[tuple[Items, ItemsOutcome]], list[int]]:
        """On the driver: the items that ended in the claims running long (`every` claim,
        when the run stops), less those it settled before (it settles them now), and those of
        them never announced. The items of those claims not started yet go back to the
        window's front: a lane free now runs them, not the one busy with a long item."""
        now = time.time()
        parts: list[tuple[Items, int, int]] = []
        fresh: list[int] = []
        with self.lock:
            for chunk in self.running.values():
                prog = chunk.progress
                assert prog is not None
                if now < prog.due and not every:
                    continue
                with prog.lock:
                    done = prog.done
                    if done + 1 < min(prog.until, len(chunk.values)):
                        back = chunk.indices[done + 1 : prog.until]
                        self.window.extendleft(reversed(back))
                        prog.until = done + 1
                settled = prog.settled
                if done > settled:
                    parts.append((chunk, settled, done))
                    if done > prog.announced:  # (never below `settled`)
                        fresh += chunk.indices[prog.announced : done]
                        prog.announced = done
                    prog.settled = done
        # Outside the lock: the items of a `Progress` up to its `done` never change.
        return [finished_part(c, c.progress, a, b) for c, a, b in parts], fresh  # type: ignore[arg-type]

    def top_up(self, idx: list[int]) -> None:
        with self.lock:
            self.window.extend(idx)

    def withdraw(self) -> int:
        """Take back the items no lane claimed; how many."""
        with self.lock:
            n = len(self.window)
            self.window.clear()
        return n

    def waiting(self) -> int:
        return len(self.window)


def lane(feed: Feed, run: Run, chunk: Items | None) -> None:
    """A worker's loop: start the lanes it is to start, run a chunk, report it, run the next
    one it claimed."""
    try:
        for other in feed.spread():
            feed.done(other, _run(run, other, feed.long_s))
        while chunk is not None:
            chunk = feed.report(chunk, _run(run, chunk, feed.long_s))
    except BaseException:
        feed.leave()  # never strand the driver waiting for this lane
        raise


def _run(run: Run, chunk: Items, long_s: float) -> ItemsOutcome:
    prog = chunk.progress
    if prog is not None:  # it runs long counting from now, not from its claim (a lane that
        prog.due = time.time() + long_s  # claimed it for another may not have started yet)
    try:
        return run(chunk)
    except BaseException as exc:  # the backend itself failed: the chunk's items fail
        return crashed_items(chunk, exc)


def merged(reports: list[tuple[Items, ItemsOutcome]]) -> tuple[Items, ItemsOutcome]:
    """The chunks that came back as one (in the order they came, each in item order), only
    their items that ran: the batch settles them as it settles one chunk."""
    if len(reports) == 1:
        chunk, res = reports[0]
        if res.ran == len(chunk.values):
            return chunk, res
    first = reports[0][0]
    if not any([r.others or r.ran != len(c.values) for c, r in reports]):
        return _all_ran_ok(reports)
    values: list[Any] = []
    indices: list[int] = []
    ok: list[int] = []
    outputs: list[Any] = []
    durations: list[float] = []
    others: list[tuple[int, Any]] = []
    parts: list[str] = []
    texts: list[str] | None = None
    if any(r.others or r.ran < len(c.values) for c, r in reports):
        texts = []  # the successes are settled in parts: each one's text is needed
    ascending = True
    for chunk, res in reports:
        at, ran = len(indices), res.ran
        if indices and ran and chunk.indices[0] <= indices[-1]:
            ascending = False
        values += chunk.values[:ran]
        indices += chunk.indices[:ran]
        if res.ok:
            ok += [at + p for p in res.ok]
            outputs += res.outputs
            durations += res.durations_ms
            parts.append(res.outputs_json[1:-1])
            if texts is not None:
                texts += res.texts if res.texts is not None else each_json(res.outputs)
        others += [(at + p, o) for p, o in res.others]
    seq = indices_of(indices) if ascending else indices
    chunk = Items(first.batch, first.uses, values, seq, first.kwargs,
                  first.timeout)  # fmt: skip
    started = min(r.started for _, r in reports)
    text = "[" + ",".join(parts) + "]"
    return chunk, ItemsOutcome(started, len(indices), ok, outputs, text, durations, others, texts)


def _all_ran_ok(reports: list[tuple[Items, ItemsOutcome]]) -> tuple[Items, ItemsOutcome]:
    """`merged` of chunks whose items all ran and succeeded plainly (the common case: one
    column each, joined at C speed)."""
    chunks = [c for c, _ in reports]
    outs = [r for _, r in reports]
    flat = itertools.chain.from_iterable
    indices = list(flat([c.indices for c in chunks]))
    n = len(indices)
    lo = indices[0]
    seq: Sequence[int] = indices
    if indices[-1] - lo == n - 1 and indices == list(range(lo, lo + n)):
        seq = range(lo, lo + n)
    first = chunks[0]
    chunk = Items(first.batch, first.uses, list(flat([c.values for c in chunks])), seq,
                  first.kwargs, first.timeout)  # fmt: skip
    text = "[" + ",".join([r.outputs_json[1:-1] for r in outs]) + "]"
    return chunk, ItemsOutcome(min([r.started for r in outs]), n, list(range(n)),
                               list(flat([r.outputs for r in outs])), text,
                               list(flat([r.durations_ms for r in outs])))  # fmt: skip


#: items slower than this (ms, the batch's moving average) go to lanes; faster ones come back
#: in chunks of many items, a trip each being cheap next to the items it carries
LANE_MIN_MS = 0.5
#: a lane claims this much expected work at a time (ms; at most `MAX_CLAIM` items): each claim
#: costs the lane and the driver a trip through the feed, which under a thousand threads
#: contending for the GIL costs more than the item's own bookkeeping...
LANE_CLAIM_MS = 100.0
MAX_CLAIM = 8
#: ...when the batch may run this many at once; with fewer, the driver keeps up, and one item
#: at a time keeps each item's events in the order they happened (a claim's come together)
CLAIM_MIN_LANES = 100
#: ...and an item that runs long holds back no item of its claim: once the claim has run four
#: times its expected time, and this long (s) at least, the driver settles what of it ended and
#: takes back what it has not started (not sooner: on a busy host every claim runs slow, and
#: taking them apart would only add trips)...
LONG_S = 0.5
#: ...looking for such claims this often (s)
PEEK_S = 0.1
#: the work the window holds per lane (ms): under a thousand threads contending for the GIL,
#: the driver thread may take a good part of a second to look again (starting the lanes alone
#: can take that long), and no lane should run out of items meanwhile...
WINDOW_MS = 1000.0
#: ...in this many chunks per lane at least, and at most
WINDOW_PER_LANE = 3
MAX_PER_LANE = 64


class Lanes:
    """The driver's side: the batch kind's feeds, topped up and settled on the driver's
    thread. Only on a runtime and backend that offer lanes (`post`, `hold`, `start_lane`)."""

    def __init__(self, rt: Any, kind: Any) -> None:
        self.rt, self.kind = rt, kind
        self.feeds: dict[str, Feed] = {}
        self.start: Callable[[Callable[[Run], None]], None] | None = getattr(
            getattr(rt, "backend", None), "start_lane", None
        )
        if any(getattr(rt, name, None) is None for name in ("post", "hold", "tick")):
            self.start = None

    def fits(self, batch: str) -> bool:
        """Do `batch`'s items go to lanes (now that one of them was timed)? Not a streamed
        batch's, nor one in a pool (each item takes its pool's room and tokens as it starts)."""
        if batch in self.feeds:
            return True
        kind = self.kind
        if self.start is None or batch not in kind.items or batch in kind.sources:
            return False
        if batch in kind.writers or self.rt.pools.pool_of(batch) is not None:
            return False
        ms = kind.item_ms.get(batch)
        return ms is not None and ms >= LANE_MIN_MS

    def fill(self, batch: str, cap: int) -> None:
        """Top up `batch`'s window and start lanes while there is room (`cap`: the batch's
        concurrency)."""
        rt, kind = self.rt, self.kind
        feed = self.feeds.get(batch)
        if feed is None:
            node = rt.graph.nodes[batch]
            spec = node.batch_spec
            feed = Feed(batch, spec.uses, kind.items[batch], spec.params,
                        node.spec.config.timeout, lambda: None, rt.cancelled.is_set)  # fmt: skip
            post = rt.post
            collect = self.collect
            feed.wake = lambda: post(lambda: collect(feed))
            feed.start = self.start
            self.feeds[batch] = feed
        inflight = kind.inflight
        new = max(0, min(rt.free(), cap - inflight.get(batch, 0)))
        item_ms = max(kind.item_ms.get(batch, 1.0), 1e-3)
        claim = 1
        if cap >= CLAIM_MIN_LANES:  # claims of several slow items, as long as every lane gets one
            state = rt.sched.batches[batch]
            rest = state.remaining - state.handed + feed.waiting()
            claim = min(MAX_CLAIM, int(LANE_CLAIM_MS / item_ms), rest // max(1, feed.lanes + new))
        feed.take = take = max(kind._chunk_size(batch), claim)
        feed.long_s = max(LONG_S, 4 * take * item_ms / 1000)
        # Others waiting for a slot come first: as many lanes leave at their next claim.
        waiting = 0 if new or not rt.queued else self._waiting()
        if feed.leaving != min(waiting, feed.lanes):
            with feed.lock:
                feed.leaving = min(waiting, feed.lanes)
        chunk_ms = item_ms * take
        per_lane = min(MAX_PER_LANE, max(WINDOW_PER_LANE, math.ceil(WINDOW_MS / chunk_ms)))
        want = (feed.lanes + new) * per_lane * take - feed.waiting()
        if want > 0:
            feed.top_up(rt.sched.take_items(batch, want))
        # Start one lane, which starts the others: every start wakes a thread, and under a
        # thousand threads contending for the GIL, the driver thread waits its turn after each.
        new = min(new, -(-feed.waiting() // take))
        chunk = feed.first() if new else None
        if chunk is not None:
            rt.emit(ev.ItemsStarted(time.time(), batch, chunk.indices[:1]))
            inflight[batch] = inflight.get(batch, 0) + new
            feed.lanes += new
            rt.hold(new)
            if new > 1:
                with feed.lock:
                    feed.starting += new - 1
            self.start(functools.partial(lane, feed, chunk=chunk))  # type: ignore[misc]
            if take > 1:
                self._look_again(feed)
        if not feed.lanes and not feed.waiting():
            del self.feeds[batch]

    def collect(self, feed: Feed) -> None:
        """On the driver's thread: settle what the lanes left (one event for the items they
        started, one chunk for those they ran), count out the lanes that left; and, every
        `PEEK_S`, the items that ended in claims running long."""
        rt, kind, batch = self.rt, self.kind, feed.batch
        reports, claimed, at, left, fresh = feed.swap()
        if reports:
            if claimed:
                # Claims made since the driver last looked that already ended: their first
                # items are announced with the others never announced, before they settle.
                since = set(claimed)
                ended = {c.indices[0] for c, _ in reports if c.indices[0] in since}
                if ended:
                    fresh = [i for i in claimed if i in ended] + fresh
                    claimed = [i for i in claimed if i not in ended]
            if fresh:  # (when each started is not known: they are announced as they settle)
                rt.emit(ev.ItemsStarted(time.time(), batch, fresh))
            self._settle(reports)
        if claimed:
            rt.emit(ev.ItemsStarted(at, batch, indices_of(claimed)))
        if left:
            feed.lanes -= left
            kind.inflight[batch] -= left
            rt.hold(-left)
        if feed.running:
            self.peek(feed)
        self.stop_if_over(feed)
        if feed.halted:
            feed.resume()
        if not feed.lanes and not feed.waiting() and self.feeds.get(batch) is feed:
            del self.feeds[batch]

    def peek(self, feed: Feed) -> None:
        """Settle the items that ended in claims running long, and take back what those have
        not started (in every claim, once the run is stopping: the grace period may end before
        the claims do)."""
        stopping = self.rt.stopping
        now = time.time()
        if now < feed.peek_at and not stopping:
            return
        feed.peek_at = now + PEEK_S
        parts, fresh = feed.finished(stopping)
        if fresh:
            self.rt.emit(ev.ItemsStarted(now, feed.batch, fresh))
        if parts:
            self._settle(parts)
        if feed.running:
            self._look_again(feed)

    def _look_again(self, feed: Feed) -> None:
        """Collect `feed` in `PEEK_S` even if no lane reports meanwhile (all may be stuck)."""
        self.rt.tick(feed, PEEK_S, functools.partial(self.collect, feed))

    def _waiting(self) -> int:
        """Calls queued for a slot (not for their pool's room), up to a hundred."""
        pool_of = self.rt.pools.pool_of
        return sum(1 for w in itertools.islice(self.rt.queued, 100) if pool_of(w.node) is None)

    def _settle(self, reports: list[tuple[Items, ItemsOutcome]]) -> None:
        chunk, res = merged(reports)
        self.kind.inflight[chunk.batch] += 1  # settled as one chunk: it takes one off
        self.kind.items_returned(chunk, res)

    def stop_if_over(self, feed: Feed) -> None:
        """The batch failed past its budget, or the run is stopping: no lane starts what is
        left in the window (those items go back, never started)."""
        if not feed.waiting():
            return
        if self.rt.stopping or self.rt.sched.batches[feed.batch].over_budget:
            self.rt.sched.give_back(feed.batch, feed.withdraw())
            # With none of its items left in flight, that closed the batch: it settles now
            # (no later item will come back to settle it).
            self.kind._after_item(feed.batch)

    def sweep(self) -> None:
        """Before the batch kind fills its open batches: take back the windows of batches
        that stopped; start lanes on the windows of those that have handed out their last
        items (the batch kind fills only batches with items to take)."""
        sched = self.rt.sched
        for batch, feed in list(self.feeds.items()):
            self.stop_if_over(feed)
            if feed.waiting() and sched.batches[batch].exhausted:
                cap = self.rt.graph.nodes[batch].batch_spec.concurrency or self.rt.concurrency
                self.fill(batch, cap)
