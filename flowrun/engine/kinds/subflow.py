"""A subflow: the node runs another blueprint (SPEC §6).

At load time the child file is read, checked and expanded with the parent (its problems name
its own `file:line:column`; a missing file names the parent's line; a blueprint that reaches
itself through subflows is a cycle). At run time a `ChildRun` drives the child's own scheduler
and context inside the parent's loop: its calls go to the same backend under the same
`--concurrency`, its events carry ids `parent/child`, and its nodes are recorded like any node,
so `--resume` re-runs only the unfinished nodes of an unfinished child.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from flowrun import events as ev
from flowrun.engine.invoke import AttemptTimeout, Call, Outcome, json_text, retryable
from flowrun.engine.kinds.base import NodeKind, Runtime, Stored, Verbs, Work, group
from flowrun.engine.kinds.task import Task, reused
from flowrun.engine.routing import InputError, Router, resolve_source
from flowrun.engine.scheduler import Scheduler, Status
from flowrun.errors import BlueprintError, PathT, Problem
from flowrun.model import Blueprint, Graph, GraphNode, Kind, NodeSpec, SubflowSpec
from flowrun.node import SharedContext


class Subflow(NodeKind):
    name: ClassVar[str] = "subflow"
    can_stand_in: ClassVar[bool] = False
    fills: ClassVar[bool] = True

    # -- load time ---------------------------------------------------------------------------
    @classmethod
    def claims(cls, spec: NodeSpec) -> bool:
        return spec.subflow is not None

    @classmethod
    def graph_nodes(cls, spec: NodeSpec) -> list[GraphNode]:
        return [GraphNode(spec.id, Kind.SUBFLOW, spec, None, cls.name)]

    @classmethod
    def reads(cls, spec: NodeSpec) -> Sequence[tuple[PathT, str]]:
        sub = _spec(spec)
        extra = [((*spec.path, "subflow", "inputs", k), v) for k, v in sub.inputs.items()]
        return [*Task.reads(spec), *extra]

    @classmethod
    def child(
        cls, spec: NodeSpec, bp: Blueprint, chain: tuple[str, ...]
    ) -> tuple[Graph | None, list[Problem]]:
        return load_child(spec, _spec(spec), bp, chain, (*spec.path, "subflow"))

    # -- run time ----------------------------------------------------------------------------
    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self.children: dict[str, ChildRun] = {}
        self.calls: dict[str, Work] = {}  # node -> its input, as a call that a fallback takes

    def start(self, node: GraphNode) -> None:
        rt = self.rt
        if reused(rt, node):
            return
        sub = _spec(node.spec)
        try:
            args, kwargs = rt.router.input(node)
            values = {k: rt.router.read(v) for k, v in sub.inputs.items()}
        except InputError as exc:
            rt.fail_inline(node.id, "InputError", str(exc), node.id)
            return
        graph = rt.graph.children[node.id]
        context = dict(graph.blueprint.context)
        context["input"] = args[0] if args else (kwargs or None)
        context.update(values)
        call = Call(node.id, "", args, kwargs, 1, None, node.spec.config.timeout)
        self.calls[node.id] = Work(call, node.id, self, input_kwargs=kwargs)
        self._launch(node, context, 1)

    def _launch(self, node: GraphNode, context: dict[str, Any], attempt: int) -> None:
        """Start attempt `attempt` of the child run (a retry runs the whole child again)."""
        self.calls[node.id].call.attempt = attempt
        self.rt.emit(ev.NodeStarted(time.time(), node.id, attempt))
        graph = self.rt.graph.children[node.id]
        child = ChildRun(self.rt, node.id, graph, dict(context), fails_run=False)
        child.start_context = context
        if node.spec.config.timeout is not None:
            child.limit(node.spec.config.timeout)
        self.children[node.id] = child

    def fill(self) -> None:
        if not self.children:
            return
        for name, child in list(self.children.items()):
            child.pump()
            if child.deadline is not None and child.expired():
                del self.children[name]
                work = self.calls[name]
                out = timed_out(work, self.rt.graph.nodes[name], child)
                retry_child(self, work, out, functools.partial(self._again, child.start_context))
            elif child.done():
                del self.children[name]
                self._settle(self.rt.graph.nodes[name], child)
                child.close()

    def _again(self, context: dict[str, Any], node: GraphNode, attempt: int) -> None:
        self._launch(node, context, attempt)

    def _settle(self, node: GraphNode, child: ChildRun) -> None:
        rt = self.rt
        ms = (time.monotonic() - child.t0) * 1000
        work = self.calls[node.id]
        attempt = work.call.attempt
        if child.failed:
            out = child_failed(work, child, _spec(node.spec))
            retry_child(self, work, out, functools.partial(self._again, child.start_context))
            return
        del self.calls[node.id]
        output = child.output(_spec(node.spec))
        taken = rt.taken_or_fail(node.id, output, None, attempt)
        if taken is None:
            return
        text = json_text(output)
        rt.emit(ev.NodeSucceeded(time.time(), node.id, attempt, ms, None, None, None, output, text))
        rt.sched.finish(node.id, Status.SUCCEEDED, taken)

    def succeeded(self, work: Work, out: Outcome) -> None:  # a subflow node makes no calls
        raise AssertionError(work.call.node)

    def failed(self, work: Work, out: Outcome) -> None:
        """The child run failed for good (its retries used; the fallback, if any, failed)."""
        self.calls.pop(work.node, None)
        self.rt.run_failed()
        self.rt.sched.finish(work.node, Status.FAILED)

    def recovered(self, work: Work, out: Outcome, fallback: str) -> None:
        self.calls.pop(work.node, None)
        taken = self.rt.taken_or_fail(work.node, out.output, out.action, work.call.attempt)
        if taken is not None:
            self.rt.emit(ev.NodeRecovered(time.time(), work.node, fallback, out.output))
            self.rt.sched.finish(work.node, Status.RECOVERED, taken)


class ChildRun(Verbs):
    """One run of a child blueprint inside its parent's loop: the `Runtime` of its kinds."""

    #: with `config.timeout` on the child run as a whole (`limit`): when its time is up
    #: (`time.monotonic()`), else None
    deadline: float | None = None
    _held: list[Work] | None = None  # calls waiting for room, while a deadline is set
    #: called before the child run forwards an event (a batch announces the children that
    #: ended before it first: events keep their order)
    before_emit: Callable[[], None] | None = None
    #: where the child run puts itself (under `key`) when something happens in it (an
    #: event): a batch then pumps only those of its children (`Batch._pump_children`)
    woken: dict[int, ChildRun] | None = None
    key: int = 0

    def __init__(
        self,
        parent: Runtime,
        node: str,
        graph: Graph,
        context: dict[str, Any],
        *,
        fails_run: bool = True,
    ) -> None:
        # Ids are named in full where they start (`outer/inner/node`); parents pass them on.
        self.parent, self.graph = parent, graph
        self.prefix: str = getattr(parent, "prefix", "") + node + "/"
        self.context = SharedContext(context)
        self.sched = Scheduler(graph, reuse_start=True)
        self.router = Router(graph, self.context.data, self.sched)
        stored = parent.stored
        self.stored = _strip(stored, self.prefix) if stored.nodes or stored.items else stored
        self.concurrency, self.dispatch_ms = parent.concurrency, parent.dispatch_ms
        self.pools = parent.pools
        shape = _SHAPES.get(id(graph))
        if shape is None or shape[0] is not graph:
            shape = _SHAPES[id(graph)] = _shape(graph)
        self.entries, self._filling, self.finals = shape[1], shape[2], shape[4]
        self.failed, self.first_error, self.fails_run = False, "", fails_run
        self.start_context: dict[str, Any] = context
        self.t0 = time.monotonic()
        # Only the kinds the child's graph uses: a batch starts one child run per item.
        self._kinds = {name: kind(self) for name, kind in shape[3]}
        #: has anything happened in the child since it was last pumped (an event)?
        self.touched = True

    @property
    def kinds(self) -> Mapping[str, NodeKind]:
        return self._kinds

    @property
    def stopping(self) -> bool:
        return self.parent.stopping

    def pump(self) -> bool:
        """Start what the child has ready and let its kinds hand out work; False when there
        was nothing to look at (then `done()` has not changed either)."""
        if self.parent.stopping or not (self.touched or self._filling or self._held):
            return False  # nothing settled in it since the last pump: nothing new can be ready
        self.touched = False
        if self.sched.has_ready():
            self.start_ready()
        for name in self._filling:  # most children have no kind that hands out work itself
            self._kinds[name].fill()
        if self._held:
            self._release()
        return True

    def emit(self, event: ev.Event) -> None:
        """Forward `event` to the parent with the child's ids as `parent/child`."""
        if self.deadline is not None and self.expired():
            return  # timed out: what its cancelled calls report is not recorded
        if self.before_emit is not None:
            self.before_emit()
        self.touched = True
        if self.woken is not None:
            self.woken[self.key] = self
        p = self.prefix
        if isinstance(event, ev.NodeFailed) and event.final and not self.first_error:
            name = event.node if event.node.startswith(p) else p + event.node
            self.first_error = f"{name}: {event.error_type}: {event.message}"
        self.parent.emit(_renamed(event, p))

    def free(self) -> int:
        return self.parent.free()

    def together(self, uses: str) -> bool:
        return self.parent.together(uses)

    def _own(self, work: Work) -> Work:
        """Name the call `parent/child` (ids hold no '/', so a named call is never renamed)."""
        if not work.call.node.startswith(self.prefix):
            work.call.node = self.prefix + work.call.node
        if work.call.context is None:  # `ctx.get`/`ctx.set` see the child's own context
            work.call.context = self.context
        return work

    def queue(self, work: Work) -> None:
        if self._held is not None:
            self._held.append(self._own(work))  # handed on when there is room (`_release`)
            return
        self.parent.queue(self._own(work))

    def submit(self, works: list[Work]) -> None:
        if self.deadline is not None:
            works = [w for w in works if self._cut(w)]
            if not works:
                return
        self.parent.submit([self._own(w) for w in works])

    def retry_later(self, work: Work, delay: float) -> None:
        if self.deadline is not None:
            self.later(delay, lambda: self.queue(work))  # `queue` holds and cuts it
            return
        self.parent.retry_later(work, delay)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        if self.deadline is not None:
            # Due no later than the deadline, so the parent's loop wakes to see the time is up.
            left = max(0.0, self.deadline - time.monotonic())
            self.parent.later(min(delay, left), lambda: None if self.expired() else fn())
            return
        self.parent.later(delay, fn)

    # -- `config.timeout` on the child run as a whole ------------------------------------------
    def limit(self, seconds: float) -> None:
        """End this child run after `seconds`: each call it makes has its own timeout cut to
        the time left, so when the time is up its running calls end as any timed-out attempt
        does (`ctx.cancelled` set, a shell node's process group killed), and they wake the
        parent's loop, whose kind sees `expired()`. From then on nothing the child does reaches
        the parent: no event, no call, no timer."""
        self.deadline = time.monotonic() + seconds
        self._held = []

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _cut(self, work: Work) -> bool:
        """Cut `work`'s timeout to the time left; False when there is none left."""
        assert self.deadline is not None
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        call = work.call
        if call.timeout is None or call.timeout > left:
            call.timeout = left
        return True

    def _release(self) -> None:
        """Hand held calls on while the parent has room: their timeouts are cut just before
        they are submitted, not while they wait."""
        held = self._held
        assert held is not None
        room = self.parent.free()
        while held and room > 0:
            work = held.pop(0)
            if self._cut(work):
                self.parent.queue(work)
                room -= 1

    def run_failed(self) -> None:
        self.failed = True
        if self.fails_run:  # a batch item's child fails only its item (maxFailures decides)
            self.parent.run_failed()

    def done(self) -> bool:
        return not self.sched.is_active() and not self.parent.stopping

    def close(self) -> None:
        """The child run has ended (`done()`: nothing of it is in flight) and was settled: drop
        its kinds, whose `rt` is this run, so that refcounting frees it at once instead of the
        garbage collector's passes (a batch over a subflow ends thousands)."""
        self._kinds = {}

    def output(self, sub: SubflowSpec) -> Any:
        return _output(sub, self)


def load_child(
    spec: NodeSpec, sub: SubflowSpec, bp: Blueprint, chain: tuple[str, ...], at: PathT
) -> tuple[Graph | None, list[Problem]]:
    """Read, check and expand the blueprint `sub` names (its problems name its own file);
    problems of the reference itself are located at `at` (the `subflow` stanza) in `bp`."""
    from flowrun.blueprint import loader, schema
    from flowrun.engine.expand import expand

    doc = bp.document
    if doc is None:
        return None, []
    here = str(Path(doc.path).resolve())
    target = (Path(doc.path).parent / sub.blueprint).resolve()

    def problem(code: str, message: str) -> tuple[None, list[Problem]]:
        return None, [doc.problem((*at, "blueprint"), code, message)]

    files = (*chain, here)
    if str(target) in files:
        loop = (*files[files.index(str(target)) :], str(target))
        shown = " -> ".join(Path(f).name for f in loop)
        return problem("subflow-cycle", f"subflow '{spec.id}' reaches itself: {shown}")
    if not target.is_file():
        return problem(
            "subflow-missing",
            f"subflow '{spec.id}': no blueprint file {sub.blueprint!r} (looked for {target})",
        )
    try:
        child = expand(schema.check(loader.load(target)), chain=files)
    except BlueprintError as exc:
        return None, list(exc.problems)
    return child, _check_ends(spec, sub, child, doc, at)


def child_context(graph: Graph, value: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """A child run's context: its declared keys, `input` (the node's input, an item, the
    previous iteration's output) and what `inputs` sets."""
    return {**graph.blueprint.context, "input": value, **values}


def replay(rt: Runtime, heads: Collection[str]) -> None:
    """On `--resume`, announce what the child runs in `heads` (a batch's finished items, a
    loop's finished iterations) recorded as reused, without running them again: the run's
    report lists their nodes as an uninterrupted run's does."""
    if not heads:
        return
    for name, (status, output, _action, attempts) in rt.stored.nodes.items():
        head, sep, _ = name.partition("/")
        if sep and head in heads:
            rt.emit(ev.NodeSucceeded(time.time(), name, attempts, output=output, reused=True,
                                     status=status))  # fmt: skip


def child_failed(work: Work, child: ChildRun, sub: SubflowSpec) -> Outcome:
    """The failed outcome of an attempt (`work`) whose child run failed."""
    message = f"subflow '{work.call.node}' ({sub.blueprint}) failed"
    message += f": {child.first_error}" if child.first_error else ""
    ms = (time.monotonic() - child.t0) * 1000
    return Outcome(work.call.node, False, time.time(), ms, error_type="SubflowError",
                   message=message)  # fmt: skip


def timed_out(work: Work, node: GraphNode, child: ChildRun) -> Outcome:
    """The failed outcome of an attempt whose child run ran past `config.timeout`: a timeout
    as any node's (`AttemptTimeout`, retried unless `config.retryOn` leaves it out)."""
    limit = node.spec.config.timeout or 0.0
    message = f"subflow '{work.call.node}' timed out after {limit:g} s"
    ms = (time.monotonic() - child.t0) * 1000
    retry_on = node.spec.config.retry_on
    can_retry = retryable(AttemptTimeout(message), retry_on)
    return Outcome(work.call.node, False, time.time(), ms, error_type="AttemptTimeout",
                   message=message, retryable=can_retry)  # fmt: skip


def retry_child(
    kind: NodeKind, work: Work, out: Outcome, relaunch: Callable[[GraphNode, int], None]
) -> None:
    """An attempt run as a child run failed with `out`: start attempt k+1 after
    `config.retryDelay` (`relaunch(node, k + 1)`) while attempts are left, else the shared
    policy (`config.fallback`, else fail for good)."""
    rt, call = kind.rt, work.call
    node = rt.graph.nodes[work.node]
    cfg = node.spec.config
    attempt = call.attempt
    if attempt <= cfg.max_retries and out.retryable and not rt.stopping:
        delay = cfg.delay_before(attempt + 1)
        rt.emit(ev.NodeRetry(time.time(), call.node, attempt, delay, out.error_type, out.message,
                             "", group(work), call.index, "", cfg.max_retries + 1))  # fmt: skip
        rt.later(delay, lambda: relaunch(node, attempt + 1))
        return
    kind.attempt_failed(work, out)


#: id(child graph) -> (the graph, its entries, the kinds in it that fill, the kinds it uses):
#: computed once per child blueprint, not once per child run (a batch over a subflow starts
#: thousands)
#: and its final nodes (what a child run outputs when its `outputs` says nothing)
_Shape = tuple[
    Graph, dict[str, str], tuple[str, ...], tuple[tuple[str, type[NodeKind]], ...], list[str]
]
_SHAPES: dict[int, _Shape] = {}


def _shape(graph: Graph) -> _Shape:
    from flowrun.engine.kinds import BY_NAME, entries_of

    kinds = {graph.nodes[s.id].node_kind for s in graph.blueprint.nodes}
    filling = tuple(k for k in kinds if BY_NAME[k].fills)
    used = {n.node_kind for n in graph.nodes.values()}  # fallbacks included
    finals = [s.id for s in graph.blueprint.nodes if graph.is_final(s.id)]
    return graph, entries_of(graph), filling, tuple((k, BY_NAME[k]) for k in used), finals


_IDS = ("node", "batch", "fallback", "fallback_for")  # the fields of an event that name nodes
#: event type -> (its fields in order, the positions of those among them that name nodes)
_RENAMES: dict[type[ev.Event], tuple[tuple[str, ...], tuple[int, ...]]] = {}


def _renamed(event: ev.Event, prefix: str) -> ev.Event:
    """`event` with each node id it names under `prefix` (ids already under it are kept): what
    `dataclasses.replace` does, without its per-call cost (a child run forwards every event)."""
    cls = type(event)
    shape = _RENAMES.get(cls)
    if shape is None:
        names = tuple(f.name for f in dataclasses.fields(event) if f.init)
        shape = _RENAMES[cls] = (names, tuple(i for i, n in enumerate(names) if n in _IDS))
    names, ids = shape
    for i in ids:  # most events a child run forwards name their node in full already
        value = getattr(event, names[i])
        if isinstance(value, str) and not value.startswith(prefix):
            break
    else:
        return event
    values = [getattr(event, n) for n in names]
    for i in ids:
        value = values[i]
        if isinstance(value, str) and not value.startswith(prefix):
            values[i] = prefix + value
    return cls(*values)


def _spec(spec: NodeSpec) -> SubflowSpec:
    if spec.subflow is None:
        raise TypeError(f"node {spec.id!r} is not a subflow")
    return spec.subflow


def _strip(stored: Stored, prefix: str) -> Stored:
    """What an earlier run recorded inside this child, under the child's own ids."""
    n = len(prefix)
    nodes = {k[n:]: v for k, v in stored.nodes.items() if k.startswith(prefix)}
    items = {k[n:]: v for k, v in stored.items.items() if k.startswith(prefix)}
    return Stored(nodes, items)


def _output(sub: SubflowSpec, child: ChildRun) -> Any:
    """SPEC §6: a mapping of `outputs`, the one source `outputs` names, or the final node(s)."""
    outputs = sub.outputs
    if isinstance(outputs, str):
        return _read(child, outputs)
    if outputs is not None and isinstance(outputs, Mapping):  # (None: no ABC check per child)
        return {name: _read(child, src) for name, src in outputs.items()}
    graph = child.graph
    finals = child.finals
    if len(finals) == 1:
        return _read(child, graph.output_keys[finals[0]])
    return {f: _read(child, graph.output_keys[f]) for f in finals}


def _read(child: ChildRun, source: str) -> Any:
    try:
        return child.router.read(source)
    except InputError:
        return None  # a skipped node gave nothing


def _check_ends(
    spec: NodeSpec, sub: SubflowSpec, child: Graph, doc: Any, at: PathT
) -> list[Problem]:
    """`inputs` must set keys the child declares; `outputs` must name something in it."""
    problems = []
    declared = child.blueprint.context
    for key in sub.inputs:
        if key not in declared:
            problems.append(
                doc.problem(
                    (*at, "inputs", key),
                    "subflow-input",
                    f"subflow '{spec.id}' sets '{key}', which {child.blueprint.file} does not "
                    "declare under `context:` (null is fine)",
                    key=True,
                )
            )
    known = {*child.output_keys, *child.output_keys.values(), *declared}
    outs = sub.outputs
    named = outs.items() if isinstance(outs, Mapping) else [(None, outs)] if outs else []
    for name, source in named:
        if resolve_source(source, known) is None:
            where = (*at, "outputs", *([name] if name else []))
            problems.append(
                doc.problem(
                    where,
                    "subflow-output",
                    f"subflow '{spec.id}' outputs '{source}', which is not a node or context "
                    f"key of {child.blueprint.file}",
                )
            )
    return problems
