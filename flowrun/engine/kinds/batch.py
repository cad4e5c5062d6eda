"""A batch: `B_scatter` reads a list, the worker `B` runs once per item (`B[i]`), `B_gather`
writes the results in item order to the batch's `outputKey`.

Items are handed out in chunks sized so one chunk takes about `CHUNK_TARGET_MS` (which amortises
the hand-off between threads for fast items, as dask.bag does), never more than the concurrency
and `batch.concurrency` allow, so a million-item batch keeps a few futures alive.

An `async def` worker's items are handed out in chunks that run together on the backend's
event loop (`_fill_together`): each item holds a concurrency slot, and a chunk has about
sqrt(concurrency) items, so a thousand coroutines in flight cost the driver some thirty hand-offs
rather than a thousand. On the thread backend such a chunk is one `Items` too (its coroutines
gathered on the loop, `aio.run_items_async`), settled and announced by the chunk.

A streamed batch reads its items from a file (`itemsFrom`, `engine.itemsources`) as it hands
them out, and with `outputTo` writes the results to a file in item order
(`engine.outputfile`) instead of gathering them: its memory is bounded by what is in flight.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

from flowrun import events as ev
from flowrun.engine.invoke import Call, Items, ItemsOutcome, Outcome, json_text
from flowrun.engine.itemsources import ItemSource, Malformed, input_problem, open_source
from flowrun.engine.itemsources import output_problem as output_file_problem
from flowrun.engine.kinds.base import NodeKind, Runtime, Work
from flowrun.engine.kinds.subflow import (
    ChildRun,
    child_context,
    child_failed,
    load_child,
    replay,
    retry_child,
    timed_out,
)
from flowrun.engine.lanes import Lanes, indices_of
from flowrun.engine.outputfile import MAX_AHEAD, OrderedWriter
from flowrun.engine.routing import InputError
from flowrun.engine.scheduler import Status
from flowrun.errors import PathT, Problem
from flowrun.expr.compiler import ExprEvalError
from flowrun.expr.template import template_scope
from flowrun.model import (
    Blueprint,
    Graph,
    GraphEdge,
    GraphNode,
    Kind,
    NodeSpec,
    gather_id,
    item_id,
    scatter_id,
)


def _why(exc: OSError | ValueError) -> str:
    """An item file that cannot be opened, named as it was looked for."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"itemsFrom: cannot open {exc.filename}: {exc.strerror or exc}"
    return str(exc)


CHUNK_TARGET_MS = 2.0
MAX_CHUNK = 256
# Child runs open at once per unit of --concurrency, for a batch over a subflow without its own
# `concurrency`: enough queued child calls for the driver to put several in one chunk (a chunk
# runs its calls one after another, so --concurrency still bounds what runs at once), while
# memory stays bounded by the concurrency, not the number of items.
CHILDREN_PER_SLOT = 32
_SETTLED = object()  # an item that failed while it was read: nothing to call


class Batch(NodeKind):
    name: ClassVar[str] = "batch"
    can_stand_in: ClassVar[bool] = False
    fills: ClassVar[bool] = True

    # -- load time ---------------------------------------------------------------------------
    @classmethod
    def claims(cls, spec: NodeSpec) -> bool:
        return spec.batch is not None

    @classmethod
    def graph_nodes(cls, spec: NodeSpec) -> list[GraphNode]:
        b = spec.id
        return [
            GraphNode(scatter_id(b), Kind.SCATTER, spec, b, cls.name),
            GraphNode(b, Kind.WORKER, spec, b, cls.name),
            GraphNode(gather_id(b), Kind.GATHER, spec, b, cls.name),
        ]

    @classmethod
    def internal_edges(cls, spec: NodeSpec) -> list[GraphEdge]:
        b = spec.id
        return [GraphEdge(scatter_id(b), b), GraphEdge(b, gather_id(b))]

    @classmethod
    def entry(cls, spec: NodeSpec) -> str:
        return scatter_id(spec.id)

    @classmethod
    def exit(cls, spec: NodeSpec) -> str:
        return gather_id(spec.id)

    @classmethod
    def output_key(cls, spec: NodeSpec) -> str:
        return spec.batch.output_key if spec.batch is not None else spec.id

    @classmethod
    def reads(cls, spec: NodeSpec) -> Sequence[tuple[PathT, str]]:
        batch = spec.batch
        if batch is None:
            return []
        out = []
        if batch.input_key is not None:
            out.append(((*spec.path, "batch", "inputKey"), batch.input_key))
        if batch.subflow is not None:
            at = (*spec.path, "batch", "subflow", "inputs")
            out += [((*at, k), v) for k, v in batch.subflow.inputs.items()]
        return out

    @classmethod
    def child(
        cls, spec: NodeSpec, bp: Blueprint, chain: tuple[str, ...]
    ) -> tuple[Graph | None, list[Problem]]:
        if spec.batch is None or spec.batch.subflow is None:
            return None, []
        at = (*spec.path, "batch", "subflow")
        return load_child(spec, spec.batch.subflow, bp, chain, at)

    @classmethod
    def problems(cls, spec: NodeSpec, base: Path | None) -> Sequence[tuple[PathT, str, str]]:
        b = spec.batch
        assert b is not None
        out: list[tuple[PathT, str, str]] = []
        if b.items_from is not None and base is not None and "${{" not in b.items_from:
            why = input_problem(b.items_from, base)
            if why is not None:
                out.append(((*spec.path, "batch", "itemsFrom"), "items-from", why))
        if b.output_to is not None and base is not None and "${{" not in b.output_to:
            why = output_file_problem(b.output_to, base)
            if why is not None:
                out.append(((*spec.path, "batch", "outputTo"), "output-to", why))
        return out

    # -- run time ----------------------------------------------------------------------------
    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self.items: dict[str, list[Any]] = {}  # batch -> its list
        self.sources: dict[str, ItemSource] = {}  # streamed batch -> its item file
        self.writers: dict[str, OrderedWriter] = {}  # batch with outputTo -> its file
        self.inflight: dict[str, int] = {}  # batch -> chunks in flight
        self.item_ms: dict[str, float] = {}  # batch -> moving average of an item's time
        self.over: set[str] = set()  # batches that failed past their budget (announced once)
        #: batch -> item index -> its open child run (a batch over a subflow)
        self.kids: dict[str, dict[int, ChildRun]] = {}
        self.together: set[str] = set()  # batches whose chunks run together (inflight: items)
        #: batch -> item index -> the attempt after the first one its child run is, if any
        self.again: dict[str, dict[int, int]] = {}
        #: batches of slow items: their workers take the next items themselves
        self.lanes = Lanes(rt, self)
        #: batch -> its open child runs that something happened in since they were last
        #: pumped (`ChildRun.woken`), when only those need pumping (`_pumps_all`)
        self.woken: dict[str, dict[int, ChildRun]] = {}
        #: child runs that succeeded at their first attempt, not yet announced (`_flush_ok`):
        #: (batch, index, ms, output, its JSON text)
        self._ok: list[tuple[str, int, float, Any, str]] = []

    def start(self, node: GraphNode) -> None:
        if node.kind is Kind.SCATTER:
            self._scatter(node)
        elif node.kind is Kind.GATHER:
            self._gather(node)

    def _scatter(self, node: GraphNode) -> None:
        rt, batch = self.rt, node.owner
        key = node.batch_spec.input_key
        if key is None:
            self._stream(node)
            return
        try:
            value = rt.router.read(key)
        except InputError as exc:
            rt.fail_inline(batch, "InputError", f"batch '{batch}': {exc}", node.id)
            return
        if not isinstance(value, list):
            found = "null" if value is None else type(value).__name__
            msg = f"batch '{batch}': inputKey '{key}' holds {found}, expected a list"
            rt.fail_inline(batch, "TypeError", msg, node.id)
            return
        self.items[batch] = value
        done = rt.stored.items.get(batch, {})
        done = {i: v for i, v in done.items() if i < len(value)}
        rt.emit(ev.BatchStarted(time.time(), batch, len(value), len(done)))
        if done and node.batch_spec.subflow is not None:
            replay(rt, {item_id(batch, i) for i in done})
        rt.sched.bind(batch, len(value), done)

    def _base(self) -> Path:
        doc = self.rt.graph.blueprint.document
        return doc.path.parent if doc is not None else Path.cwd()

    def _stream(self, node: GraphNode) -> None:
        """Open the item file (and the output file), count the items, bind the batch."""
        rt, batch, spec = self.rt, node.owner, node.batch_spec
        assert spec.items_from is not None
        done = rt.stored.items.get(batch, {})
        try:
            items_from = self._path(node, "itemsFrom", spec.items_from)
            output_to = self._path(node, "outputTo", spec.output_to)
        except (InputError, ExprEvalError, TypeError) as exc:
            rt.fail_inline(batch, type(exc).__name__, f"batch '{batch}': {exc}", node.id)
            return
        try:
            source = open_source(items_from, self._base())
        except (OSError, ValueError) as exc:
            rt.fail_inline(batch, type(exc).__name__, f"batch '{batch}': {_why(exc)}", node.id)
            return
        first = 0
        if output_to is not None:
            path = self._base() / output_to
            try:
                if batch in rt.stored.items or rt.stored.nodes:
                    writer = OrderedWriter.resume(path, done)
                else:
                    writer = OrderedWriter.create(path)
            except OSError as exc:
                source.close()
                rt.fail_inline(
                    batch, type(exc).__name__, f"batch '{batch}': outputTo: {exc}", node.id
                )
                return
            self.writers[batch] = writer
            first = min(writer.next, source.total)
        self.sources[batch] = source
        keep = spec.output_to is None
        rt.emit(
            ev.BatchStarted(
                time.time(),
                batch,
                source.total,
                first + sum(1 for i in done if first <= i < source.total),
            )
        )
        rt.sched.bind(batch, source.total, done, keep_results=keep, first=first)

    def _path(self, node: GraphNode, key: str, text: str | None) -> Any:
        """`itemsFrom` / `outputTo` as this run has it: a `${{ }}` rendered now (with the
        names params see: input, context, env, node ids), and it must give a string."""
        template = node.batch_spec.paths.get(key)
        if template is None:
            return text
        if isinstance(template, str):
            return template  # only `$${{` escapes: a literal after all
        args, _ = self.rt.router.input(node)
        value = template.render(template_scope(args[0] if args else None, self.rt.router.ctx))
        if not isinstance(value, str) or not value:
            found = f"{type(value).__name__} {json.dumps(value, default=str)[:80]}"
            raise TypeError(f"{key} {text!r} gave {found}, expected a path (a string)")
        return value

    def _gather(self, node: GraphNode) -> None:
        rt, batch = self.rt, node.owner
        state = rt.sched.batches[batch]
        source = self.sources.pop(batch, None)
        if source is not None:
            source.close()
        writer = self.writers.pop(batch, None)
        if writer is None:
            # Handed over, not copied: every item has settled, and a copy of a million-item
            # list is what the run's peak memory would hold on top at its end.
            results: Any = state.results
            state.results = []
        else:
            try:
                writer.close()
            except OSError as exc:
                self._write_failed(batch, exc, node.id)
                return
            results = {"path": str(writer.path), "count": writer.next, "failed": state.failed}
        rt.context.set(node.batch_spec.output_key, results)
        try:
            taken = rt.router.edges(node.id, results, None)
        except ExprEvalError as exc:
            rt.fail_inline(batch, "ExprEvalError", str(exc), node.id)
            self._finished(batch, "failed")
            return
        self._finished(batch, "succeeded", results)
        rt.sched.finish(node.id, Status.SUCCEEDED, taken)

    def _finished(self, batch: str, status: str, output: Any = None) -> None:
        if status == "failed":
            self._release(batch)
        state = self.rt.sched.batches[batch]
        spec = self.rt.graph.nodes[batch].batch_spec
        self.rt.emit(
            ev.BatchFinished(
                time.time(), batch, status, state.total, state.succeeded, state.failed,
                spec.output_key, output,
            )
        )  # fmt: skip

    def _release(self, batch: str) -> None:
        """Close a failed streamed batch's files (writing what is in order, if the disk lets)."""
        source, writer = self.sources.pop(batch, None), self.writers.pop(batch, None)
        if source is not None:
            source.close()
        if writer is not None:
            with contextlib.suppress(OSError):  # the store holds every recorded item, and
                writer.close()  # `--resume` rewrites the file from there

    def fill(self) -> None:
        rt = self.rt
        if self.lanes.feeds:
            self.lanes.sweep()
        if not rt.sched.batches:
            return  # no batch has started: nothing to hand out or pump
        for batch in rt.sched.open_batches():
            node = rt.graph.nodes[batch]
            spec = node.batch_spec
            cap = spec.concurrency or rt.concurrency
            if spec.subflow is not None:
                continue  # opened below, with the children already running
            if batch in self.together or rt.together(spec.uses):
                self._fill_together(node, cap)
                continue
            if self.lanes.fits(batch):
                self.lanes.fill(batch, cap)
                continue
            uses, params, timeout = spec.uses, spec.params, node.spec.config.timeout
            source, writer = self.sources.get(batch), self.writers.get(batch)
            items = self.items[batch] if source is None else None
            emit, inflight = rt.emit, self.inflight
            submit_items = (
                getattr(rt, "submit_items", None) if getattr(rt, "runs_items", False) else None
            )
            # A `.jsonl` file's lines go to the worker as read, parsed there: not in this
            # thread, which every item passes through (not with a fallback, which a line that
            # is no JSON value must never reach).
            read_raw = (
                getattr(source, "read_raw", None)
                if submit_items is not None and node.spec.config.fallback is None
                else None
            )
            name = source.name if source is not None else ""
            while rt.free() > 0 and inflight.get(batch, 0) < cap:
                if writer is not None and writer.ahead >= MAX_AHEAD:
                    break  # the first unfinished item holds the file back: wait for it
                room = rt.pools.room(batch)
                if room <= 0:
                    break  # its pool is full, or out of tokens (the loop wakes for the next)
                idx = rt.sched.take_items(batch, min(room, self._chunk_size(batch)))
                if not idx:
                    break
                seq: list[int] | range = idx
                lines: list[bytes] | None = None
                if items is not None:
                    if idx[-1] - idx[0] == len(idx) - 1:  # consecutive: the common case
                        seq = range(idx[0], idx[-1] + 1)
                        values = items[seq.start : seq.stop]
                    else:
                        values = [items[i] for i in idx]
                elif read_raw is not None and (lines := read_raw(idx)) is not None:
                    values, seq = lines, range(idx[0], idx[-1] + 1)
                else:
                    assert source is not None
                    values, bad = source.read_many(idx)
                    if bad:  # some lines could not be read: those items fail here
                        values = self._settle_malformed(batch, idx, values)
                        idx = [i for i, v in zip(idx, values, strict=True) if v is not _SETTLED]
                        values = [v for v in values if v is not _SETTLED]
                        if not idx:
                            continue
                    seq = idx
                if submit_items is not None:  # one `Items` for the chunk, one event
                    inflight[batch] = inflight.get(batch, 0) + 1
                    emit(ev.ItemsStarted(time.time(), batch, seq))
                    submit_items(Items(batch, uses, values, seq, params, timeout,
                                       texts=writer is not None,
                                       lines=None if lines is None else name))  # fmt: skip
                    continue
                # The per-item path is the hot one: no lookups or helper calls inside it.
                works = [
                    Work(Call(item_id(batch, i), uses, (v,), params, 1, i, timeout), batch,
                         self, i)
                    for i, v in zip(idx, values, strict=True)
                ]  # fmt: skip
                inflight[batch] = inflight.get(batch, 0) + 1
                now = time.time()
                for w in works:
                    emit(ev.NodeStarted(now, w.call.node, 1, batch, w.index))
                rt.submit(works)
        while self._fill_children():
            pass  # children that ended made room for more

    def _fill_together(self, node: GraphNode, cap: int) -> None:
        """Hand out items of an async worker in chunks run together: `inflight` and `cap`
        count items here, as the driver's slots do."""
        rt, batch, spec = self.rt, node.owner, node.batch_spec
        self.together.add(batch)
        uses, params, timeout = spec.uses, spec.params, node.spec.config.timeout
        source, writer = self.sources.get(batch), self.writers.get(batch)
        items = self.items[batch] if source is None else None
        size = min(MAX_CHUNK, math.isqrt(max(1, rt.concurrency - 1)) + 1)
        submit_items = (
            getattr(rt, "submit_items", None) if getattr(rt, "runs_items", False) else None
        )
        while (free := min(rt.free(), cap - self.inflight.get(batch, 0))) > 0:
            if writer is not None and writer.ahead >= MAX_AHEAD:
                break
            room = rt.pools.room(batch)
            if room <= 0:
                break
            idx = rt.sched.take_items(batch, min(room, free, size))
            if not idx:
                break
            if items is not None:
                values = [items[i] for i in idx]
            else:
                assert source is not None
                values = self._read(batch, source, idx)
                idx = [i for i, v in zip(idx, values, strict=True) if v is not _SETTLED]
                values = [v for v in values if v is not _SETTLED]
                if not idx:
                    continue
            self.inflight[batch] = self.inflight.get(batch, 0) + len(idx)
            if submit_items is not None:  # one `Items` for the chunk, one event; a slot each
                seq = indices_of(idx)
                rt.emit(ev.ItemsStarted(time.time(), batch, seq))
                submit_items(Items(batch, uses, values, seq, params, timeout,
                                   texts=writer is not None), len(idx))  # fmt: skip
                continue
            works = [
                Work(Call(item_id(batch, i), uses, (v,), params, 1, i, timeout), batch, self, i)
                for i, v in zip(idx, values, strict=True)
            ]
            now = time.time()
            for w in works:
                rt.emit(ev.NodeStarted(now, w.call.node, 1, batch, w.index))
            rt.submit(works)

    # -- a batch over a subflow: one child run per item ------------------------------------------
    def _open_children(self, node: GraphNode, cap: int) -> None:
        """Start child runs for the next items, at most `cap` open at once (memory stays
        bounded by the concurrency, not the number of items)."""
        rt, batch, sub = self.rt, node.owner, node.batch_spec.subflow
        assert sub is not None
        kids = self.kids.setdefault(batch, {})
        graph = rt.graph.children[batch]
        try:
            values = {k: rt.router.read(v) for k, v in sub.inputs.items()}
        except InputError as exc:
            rt.fail_inline(batch, "InputError", f"batch '{batch}': {exc}", batch)
            return
        items, source = self.items.get(batch), self.sources.get(batch)
        declared, timeout = graph.blueprint.context, node.spec.config.timeout
        flush, woken = self._flush_ok, None
        while len(kids) < cap:
            idx = rt.sched.take_items(batch, cap - len(kids))
            if not idx:
                break
            if items is not None:
                values_at = [items[i] for i in idx]
            else:  # streamed (`itemsFrom`): an unreadable item fails at once
                assert source is not None
                values_at = self._read(batch, source, idx)
            opened: list[int] = []
            for i, item in zip(idx, values_at, strict=True):
                if item is _SETTLED:
                    continue
                context = {**declared, "input": item, **values}
                kids[i] = kid = ChildRun(rt, item_id(batch, i), graph, context, fails_run=False)
                kid.before_emit = flush  # (what `_watch` does, for each child opened here)
                if woken is None and not self._pumps_all(batch, kid):
                    woken = self.woken.setdefault(batch, {})
                if woken is not None:
                    kid.woken, kid.key = woken, i
                    woken[i] = kid
                if timeout is not None:
                    kid.limit(timeout)
                opened.append(i)
            if opened:  # one event for the children opened together, as for a chunk of items
                rt.emit(ev.ItemsStarted(time.time(), batch, indices_of(opened)))

    def _fill_children(self) -> int:
        """Open child runs where there is room, pump every open one; how many ended."""
        rt = self.rt
        for batch in rt.sched.open_batches():
            spec = rt.graph.nodes[batch].batch_spec
            if spec.subflow is not None:
                cap = spec.concurrency or rt.concurrency * CHILDREN_PER_SLOT
                self._open_children(rt.graph.nodes[batch], cap)
        return self._pump_children() if self.kids else 0

    def _watch(self, batch: str, i: int, kid: ChildRun) -> None:
        """Hook a new child run of item `i` up to the batch: the children that ended before it
        are announced before its first event, and it is pumped when something happens in it
        (and now, to start it)."""
        kid.before_emit = self._flush_ok
        if not self._pumps_all(batch, kid):
            kid.woken, kid.key = self.woken.setdefault(batch, {}), i
            kid.woken[i] = kid

    def _pumps_all(self, batch: str, kid: ChildRun) -> bool:
        """Must every open child run of `batch` be pumped each time? Yes when something in
        them hands out work of its own (a nested batch, subflow or loop) or they have a time
        limit (each pump checks it): else only those that something happened in."""
        return bool(kid._filling) or self.rt.graph.nodes[batch].spec.config.timeout is not None

    def _pump_children(self) -> int:
        ended = 0
        for batch, kids in list(self.kids.items()):
            sub = self.rt.graph.nodes[batch].batch_spec.subflow
            assert sub is not None
            woken = self.woken.get(batch)
            if woken is None:
                todo = list(kids.items())
            else:
                todo = [(i, kids[i]) for i in sorted(woken) if i in kids]
                woken.clear()
            for i, kid in todo:
                looked = kid.pump()  # False: nothing changed in it, so it has not ended
                if kid.deadline is not None and kid.expired():
                    del kids[i]
                    ended += 1
                    self._flush_ok()
                    self._child_failed(batch, i, kid, timed_out)
                elif looked and kid.done():
                    del kids[i]
                    ended += 1
                    self._child_done(batch, i, kid, kid.output(sub) if not kid.failed else None)
                    kid.close()
            self._flush_ok()
        return ended

    def _child_failed(
        self, batch: str, i: int, kid: ChildRun, why: Callable[[Work, GraphNode, ChildRun], Outcome]
    ) -> None:
        """Item `i`'s child run failed (`why` says how): run it again while attempts are left,
        else the shared policy (`config.fallback`, else the item fails; `maxFailures`)."""
        node = self.rt.graph.nodes[batch]
        attempt = self.again.get(batch, {}).pop(i, 1)
        item = kid.start_context.get("input")  # a streamed item cannot be read again
        call = Call(item_id(batch, i), "", (item,), {}, attempt, i)
        work = Work(call, batch, self, i)
        retry_child(self, work, why(work, node, kid), functools.partial(self._relaunch, i, item))

    def _relaunch(self, i: int, item: Any, node: GraphNode, attempt: int) -> None:
        """Attempt `attempt` of item `i`'s child run (its retry is due)."""
        rt, batch, sub = self.rt, node.owner, node.batch_spec.subflow
        assert sub is not None
        graph = rt.graph.children[batch]
        values = {k: rt.router.read(v) for k, v in sub.inputs.items()}  # read once already
        context = child_context(graph, item, values)
        kid = ChildRun(rt, item_id(batch, i), graph, context, fails_run=False)
        self._watch(batch, i, kid)
        if node.spec.config.timeout is not None:
            kid.limit(node.spec.config.timeout)
        self.kids.setdefault(batch, {})[i] = kid
        self.again.setdefault(batch, {})[i] = attempt
        rt.emit(ev.NodeStarted(time.time(), item_id(batch, i), attempt, batch, i))

    def _child_done(self, batch: str, i: int, kid: ChildRun, output: Any) -> None:
        rt = self.rt
        ms = (time.monotonic() - kid.t0) * 1000
        if kid.failed:
            sub = rt.graph.nodes[batch].batch_spec.subflow
            assert sub is not None
            self._flush_ok()
            self._child_failed(batch, i, kid, lambda w, _n, k: child_failed(w, k, sub))
            return
        attempt = self.again[batch].pop(i, 1) if batch in self.again else 1
        text = json_text(output)
        if attempt == 1:  # announced and settled with the others that ended with it
            self._ok.append((batch, i, ms, output, text))
            return
        self._flush_ok()
        name = item_id(batch, i)
        rt.emit(ev.NodeSucceeded(time.time(), name, attempt, ms, batch, i, None, output, text))
        self._settle_item(batch, i, True, text, output)  # (and into `outputTo`, if any)

    def _flush_ok(self) -> None:
        """Announce the child runs that succeeded at their first attempt since the last
        flush, one `ItemsSucceeded` per run of them of one batch (as a chunk of items is), and
        settle them. Called before any other event is emitted (`ChildRun.before_emit`), so
        events keep their order."""
        ok = self._ok
        if not ok:
            return
        self._ok = []
        start = 0
        while start < len(ok):
            batch = ok[start][0]
            end = start + 1
            while end < len(ok) and ok[end][0] == batch:
                end += 1
            run = ok[start:end]
            indices = [i for _, i, _, _, _ in run]
            outputs = [out for _, _, _, out, _ in run]
            text = "[" + ",".join([t for _, _, _, _, t in run]) + "]"
            durations = [ms for _, _, ms, _, _ in run]
            self.rt.emit(ev.ItemsSucceeded(time.time(), batch, indices, durations, outputs, text))
            for _, i, _, output, t in run:
                self._settle_item(batch, i, True, t, output)  # (and into `outputTo`, if any)
            start = end

    def _read(self, batch: str, source: ItemSource, idx: list[int]) -> list[Any]:
        """The items at `idx`; an unreadable one fails at once (`_settle_malformed`)."""
        values, bad = source.read_many(idx)
        return self._settle_malformed(batch, idx, values) if bad else values

    def _settle_malformed(self, batch: str, idx: list[int], values: list[Any]) -> list[Any]:
        """`values` read at `idx`; an unreadable one fails at once (it is never called), and
        its place in the result is `_SETTLED`."""
        for n, (i, value) in enumerate(zip(idx, values, strict=True)):
            if isinstance(value, Malformed):
                values[n] = _SETTLED
                node = item_id(batch, i)
                self.rt.emit(ev.NodeStarted(time.time(), node, 1, batch, i))
                self.rt.emit(
                    ev.NodeFailed(time.time(), node, 1, 0.0, "ItemError", value.message, "",
                                  batch, i)
                )  # fmt: skip
                self._settle_item(batch, i, False, "null")
        return values

    def _chunk_size(self, batch: str) -> int:
        ms = self.item_ms.get(batch)
        if ms is None:
            return 1
        state = self.rt.sched.batches[batch]
        per_item = max(ms, 1e-3)
        dispatch = self.rt.dispatch_ms
        # Few enough items per chunk to spread the rest over the workers, but never so few
        # that the round trip to the backend costs more than the items themselves.
        worth_a_trip = int(dispatch / per_item)
        spread = max(1, worth_a_trip, (state.remaining - state.handed) // (2 * self.rt.concurrency))
        return max(1, min(MAX_CHUNK, int(max(CHUNK_TARGET_MS, dispatch) / per_item), spread))

    def queued(self, work: Work) -> None:
        """A single item (a retry) is about to be submitted on its own."""
        self.inflight[work.node] = self.inflight.get(work.node, 0) + 1

    def returned(self, works: list[Work], outcomes: list[Outcome]) -> None:
        batch = works[0].node
        self.inflight[batch] -= len(works) if batch in self.together else 1
        if outcomes:
            ms = sum(o.duration_ms for o in outcomes) / len(outcomes)
            old = self.item_ms.get(batch)
            self.item_ms[batch] = ms if old is None else 0.7 * old + 0.3 * ms

    def items_returned(self, chunk: Items, res: ItemsOutcome) -> None:
        """A chunk came back: its plain successes settle together (one event, one scheduler
        call); any other item goes the way of a single call (retries, fallbacks, failures).
        Events keep item order."""
        batch = chunk.batch
        self.inflight[batch] -= len(chunk.values) if batch in self.together else 1
        others = res.others
        if res.ran:
            ms = sum(res.durations_ms) + sum(o.duration_ms for _, o in others)
            ms /= len(res.durations_ms) + len(others)
            old = self.item_ms.get(batch)
            self.item_ms[batch] = ms if old is None else 0.7 * old + 0.3 * ms
        if not others:
            if res.ok:
                self._settle_ok(chunk, res, 0, len(res.ok))
            return
        start = 0
        ok = res.ok
        for pos, out in others:  # the successes before each other item, then it
            end = start
            while end < len(ok) and ok[end] < pos:
                end += 1
            if end > start:
                self._settle_ok(chunk, res, start, end)
            start = end
            work = Work(chunk.call(pos), batch, self, chunk.indices[pos])
            if out.ok:
                self.succeeded(work, out)
            else:
                self.settle(work, out)
        if start < len(ok):
            self._settle_ok(chunk, res, start, len(ok))

    def _settle_ok(self, chunk: Items, res: ItemsOutcome, a: int, b: int) -> None:
        """Successes `a:b` of the chunk's plain successes."""
        batch, rt = chunk.batch, self.rt
        whole = a == 0 and b == len(res.ok)
        if whole and len(res.ok) == len(chunk.indices):
            indices: Sequence[int] = chunk.indices
        else:
            indices = [chunk.indices[p] for p in res.ok[a:b]]
        if whole:
            outputs, durations, text = res.outputs, res.durations_ms, res.outputs_json
        else:
            assert res.texts is not None
            outputs, durations = res.outputs[a:b], res.durations_ms[a:b]
            text = "[" + ",".join(res.texts[a:b]) + "]"
        rt.emit(ev.ItemsSucceeded(time.time(), batch, indices, durations, outputs, text))
        writer = self.writers.get(batch)
        if writer is not None:
            assert res.texts is not None
            try:
                if isinstance(indices, range):
                    writer.put_many(indices.start, res.texts[a:b])
                else:
                    for i, t in zip(indices, res.texts[a:b], strict=True):
                        writer.put(i, t)
            except OSError as exc:
                self._write_failed(batch, exc, scatter_id(batch))
        rt.sched.items_done(batch, indices, outputs)
        self._after_item(batch)

    def succeeded(self, work: Work, out: Outcome) -> None:
        call = work.call
        self.rt.emit(
            ev.NodeSucceeded(
                time.time(), call.node, call.attempt, out.duration_ms, work.node, call.index,
                out.action, out.output, out.output_json, False, out.updates, "succeeded",
                out.logs,
            )
        )  # fmt: skip
        self._settle_item(work.node, cast(int, call.index), True, out.output_json, out.output)

    def failed(self, work: Work, out: Outcome) -> None:
        self._settle_item(work.node, cast(int, work.index), False, "null")

    def recovered(self, work: Work, out: Outcome, fallback: str) -> None:
        rt = self.rt
        rt.emit(ev.NodeRecovered(time.time(), work.call.node, fallback, out.output))
        text = json.dumps(out.output, allow_nan=False)
        self._settle_item(work.node, cast(int, work.index), True, text, out.output)

    def _settle_item(self, batch: str, index: int, ok: bool, text: str, output: Any = None) -> None:
        writer = self.writers.get(batch)
        if writer is not None:
            try:
                writer.put(index, text)
            except OSError as exc:
                self._write_failed(batch, exc, scatter_id(batch))
        self.rt.sched.item_done(batch, index, ok, output)
        self._after_item(batch)

    def _write_failed(self, batch: str, exc: OSError, graph_node: str) -> None:
        """The output file could not be written (a full disk...): the batch fails; what the
        store recorded stays, and `--resume` writes the file from there."""
        rt = self.rt
        writer = self.writers.pop(batch, None)
        if writer is not None:
            writer.abandon()
        message = (
            f"batch '{batch}': cannot write outputTo {exc.filename or ''}: {exc.strerror or exc}"
        )
        rt.emit(ev.NodeFailed(time.time(), batch, 0, 0.0, type(exc).__name__, message, ""))
        rt.run_failed()
        if rt.sched.status[batch] is Status.RUNNING:
            rt.sched.break_batch(batch)
        else:
            rt.sched.finish(graph_node, Status.FAILED)
        if batch not in self.over:
            self.over.add(batch)
            self._finished(batch, "failed")

    def _after_item(self, batch: str) -> None:
        state = self.rt.sched.batches[batch]
        if state.over_budget and self.rt.sched.status[batch] is Status.FAILED:
            if batch in self.over:
                return
            self.over.add(batch)
            self.rt.run_failed()
            self._finished(batch, "failed")
