"""The composition root: load -> check -> expand -> resolve -> drive, with the sinks attached.

The CLI is a thin layer over these functions; they are also the Python API
(`flowrun.run`, `flowrun.validate`, `flowrun.load`).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowrun import events as ev
from flowrun.blueprint import loader, schema
from flowrun.blueprint.resolve import Target, resolve, search_path
from flowrun.engine.expand import expand
from flowrun.errors import BlueprintError, Problem, StateError, UsageError
from flowrun.errors import did_you_mean as suggest
from flowrun.model import Graph, is_item_id
from flowrun.node import SharedContext
from flowrun.report import RunReport

if TYPE_CHECKING:
    from flowrun.engine.driver import Driver
    from flowrun.engine.kinds import Stored
    from flowrun.store import RunStore, StoredRun


def load(path: str | os.PathLike[str]) -> Graph:
    """Read, check and expand a blueprint (without importing its functions)."""
    return expand(schema.check(loader.load(path)))


def validate_file(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem in one blueprint file (empty when it is valid).

    Schema problems do not stop the check: what can be salvaged of the blueprint still goes
    through expansion and import, and later problems at a location that already has one are
    dropped (they would repeat the same root cause)."""
    try:
        doc = loader.load(path)
    except BlueprintError as exc:
        return list(exc.problems)
    try:
        bp = schema.check(doc)
        problems: list[Problem] = []
    except BlueprintError as exc:
        problems = list(exc.problems)
        salvaged = schema.salvage(doc)
        if salvaged is None:
            return problems
        bp = salvaged
    seen = {p.path for p in problems}
    for stage in (expand, lambda b: resolve(b, search_path(doc.path))):
        try:
            stage(bp)
        except BlueprintError as exc:
            problems += [p for p in exc.problems if not _covered(p.path, seen)]
    return sorted(problems, key=lambda p: (p.line, p.column))


def pool_lines(path: str | os.PathLike[str]) -> list[str]:
    """`api: 4 at once, 10/s` for each pool of a valid blueprint (what `validate` shows)."""
    return [p.describe() for p in schema.check(loader.load(path)).pools.values()]


def _covered(path: str, seen: set[str]) -> bool:
    """Is `path` at or inside a location that already has a problem?"""
    return any(path == s or path.startswith((s + ".", s + "[")) for s in seen)


def validate(paths: Iterable[str | os.PathLike[str]]) -> list[Problem]:
    """Every problem in every file, in file order."""
    return [p for path in paths for p in validate_file(path)]


@dataclass(frozen=True, slots=True)
class Prepared:
    graph: Graph
    targets: Mapping[str, Target]
    dirs: tuple[str, ...]
    sha256: str


def prepare(path: str | os.PathLike[str]) -> Prepared:
    """Everything `run` needs before it starts: the graph and the imported callables."""
    doc = loader.load(path)
    bp = schema.check(doc)
    dirs = search_path(doc.path)
    problems: list[Problem] = []
    graph = None
    try:
        graph = expand(bp)
    except BlueprintError as exc:
        problems += exc.problems
    try:
        targets = resolve(bp, dirs)
    except BlueprintError as exc:
        problems += exc.problems
    if problems or graph is None:
        raise BlueprintError(sorted(problems, key=lambda p: (p.line, p.column)))
    sha = hashlib.sha256(doc.text.encode()).hexdigest()
    return Prepared(graph, targets, dirs, sha)


def parse_set(items: Sequence[str], declared: Mapping[str, Any]) -> dict[str, Any]:
    """`--set key=value` pairs; values are YAML scalars (`3` an int, `true` a bool)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        if key not in declared:
            raise UsageError(
                f"--set {key}: '{key}' is not a context key of the blueprint"
                f"{suggest(key, declared)}; declare it under `context:` (null is fine)"
            )
        try:
            out[key] = loader.load_text(
                f"v: {text}" if text.strip() else "v: ''", "--set", "yaml"
            ).data["v"]
        except BlueprintError as exc:
            raise UsageError(f"--set {key}: cannot parse {text!r} as a YAML value") from exc
    return out


def initial_context(
    graph: Graph, sets: Sequence[str] = (), context_file: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """The blueprint's `context`, then `--context FILE`, then `--set` (each wins over the last)."""
    ctx = dict(graph.blueprint.context)
    if context_file is not None:
        try:
            doc = loader.load(context_file)
        except BlueprintError as exc:
            raise UsageError("--context: " + str(exc)) from exc
        declared = graph.blueprint.context
        for key in doc.data:
            if key not in declared:
                raise UsageError(
                    f"--context {context_file}: '{key}' is not a context key of the blueprint"
                    f"{suggest(key, declared)}; declare it under `context:` (null is fine)"
                )
        ctx.update(doc.data)
    ctx.update(parse_set(sets, graph.blueprint.context))
    return ctx


@dataclass
class RunOptions:
    concurrency: int = 8
    sets: Sequence[str] = ()
    context_file: str | None = None
    fail_fast: bool = False
    executor: str = "thread"
    address: str | None = None
    resume: str | None = None
    allow_changed: bool = False
    state_dir: str | os.PathLike[str] = ".flowrun"
    sinks: Sequence[ev.Sink] = field(default_factory=list)
    cancelled: threading.Event | None = None


class Run:
    """A prepared run. Lifecycle: building it checks everything and opens (and locks) the run's
    state; `start()` drives it to the end and closes the state; `close()` (or leaving a
    `with Run(...) as run:` block) closes the state of a run that was never started.
    `cancel()` is safe from a signal handler and from another thread.

    Everything that can be wrong with the input (blueprint, `--set`, `--context`, the state
    directory, a changed blueprint on `--resume`) raises here, before any node runs.
    """

    def __init__(self, path: str | os.PathLike[str], options: RunOptions) -> None:
        from flowrun import store

        if options.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        self.options = options
        self.path = str(path)
        self.prepared = prepare(path)
        self.cancelled = options.cancelled or threading.Event()
        self.stored: StoredRun | None = None
        state_dir = Path(options.state_dir)
        if options.resume is not None:
            self.store = self._reopen(state_dir, options.resume)
            assert self.stored is not None
            ctx = dict(self.stored.meta.context)
            ctx.update(self.stored.context_updates)
        else:
            ctx = initial_context(self.prepared.graph, options.sets, options.context_file)
            meta = store.RunMeta(
                store.new_run_id(),
                self.prepared.graph.blueprint.id,
                self.path,
                self.prepared.sha256,
                ctx,
                {"concurrency": options.concurrency, "executor": options.executor,
                 "failFast": options.fail_fast},
                time.time(),
            )  # fmt: skip
            self.store = store.RunStore.create(state_dir, meta)
            ctx = dict(ctx)
        self.run_id: str = self.store.run_id
        self.context = SharedContext(ctx)
        self._driver: Driver | None = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the run's state (committing what was recorded); safe to call twice."""
        self.store.close()

    def _reopen(self, state_dir: Path, run_id: str) -> RunStore:
        from flowrun import store

        if self.options.sets or self.options.context_file:
            raise UsageError(
                "--resume reuses the run's initial context; drop --set/--context "
                "(or start a new run)"
            )
        bp_id = self.prepared.graph.blueprint.id
        opened = store.RunStore.open(state_dir, run_id, blueprint_id=bp_id)
        try:
            self.stored = opened.load()
            meta = self.stored.meta
            if meta.blueprint_id != bp_id:
                raise StateError(
                    f"run {meta.run_id} is of blueprint '{meta.blueprint_id}', not '{bp_id}' "
                    f"({self.path})"
                )
            if meta.blueprint_sha256 != self.prepared.sha256 and not self.options.allow_changed:
                raise StateError(
                    f"{self.path} changed since run {meta.run_id} started; resuming could mix "
                    "results of two different blueprints. Start a new run, or pass "
                    "--allow-changed to resume anyway"
                )
        except BaseException:
            opened.close()
            raise
        return opened

    def cancel(self) -> None:
        self.cancelled.set()
        if self._driver is not None:
            self._driver.wake()

    def _resume_state(self) -> Stored | None:
        from flowrun.engine.kinds import Stored

        if self.stored is None:
            return None
        ok = ("succeeded", "recovered")
        nodes = {
            k: (n.status, n.output, n.action, n.attempts or 1)
            for k, n in self.stored.nodes.items()
            if n.status in ok and not is_item_id(k)
        }
        items = {
            b: {i: n.output for i, n in its.items() if n.status in ok}
            for b, its in self.stored.items.items()
        }
        return Stored(nodes, items)

    def start(self) -> RunReport:
        """Drive the run to its end; the store is closed (everything committed) on return."""
        from flowrun.engine.backends import make_backend
        from flowrun.engine.driver import Driver, Options

        opts = self.options
        try:
            backend = make_backend(
                opts.executor,
                self.prepared.targets,
                workers=opts.concurrency,
                run_id=self.run_id,
                context=self.context,
                cancelled=self.cancelled,
                dirs=self.prepared.dirs,
                address=opts.address,
            )
        except BaseException:
            self.store.close()
            raise
        bus = ev.Bus([self.store, *opts.sinks])
        self._driver = Driver(
            self.prepared.graph,
            backend,
            run_id=self.run_id,
            context=self.context,
            emit=bus,
            options=Options(opts.concurrency, opts.fail_fast),
            cancelled=self.cancelled,
            stored=self._resume_state(),
            idle=bus.idle,
        )
        try:
            return self._driver.run()
        finally:
            backend.close(cancel=self.cancelled.is_set())
            self.store.close()


def run(path: str | os.PathLike[str], **kwargs: Any) -> RunReport:
    """Run a blueprint and return its report (see `RunOptions` for the keyword arguments)."""
    return Run(path, RunOptions(**kwargs)).start()


__all__ = ["Run", "RunOptions", "load", "prepare", "run", "validate", "validate_file"]
