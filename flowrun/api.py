"""The composition root: load -> check -> expand -> resolve -> drive, with the sinks attached.

The CLI is a thin layer over these functions; they are also the Python API
(`flowrun.run`, `flowrun.validate`, `flowrun.load`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowrun import events as ev
from flowrun.blueprint import loader, schema, select
from flowrun.blueprint.resolve import Target, allowed_modules, disallowed, resolve, search_path
from flowrun.blueprint.signature import check_calls
from flowrun.engine import capture
from flowrun.engine.expand import expand
from flowrun.errors import BlueprintError, Problem, StateError, UsageError
from flowrun.errors import did_you_mean as suggest
from flowrun.frozen import Frozen, Mutable, fast_frozen, fast_mutable
from flowrun.model import Blueprint, Graph, is_item_id
from flowrun.node import SharedContext
from flowrun.report import NodeReport, RunReport

if TYPE_CHECKING:
    from flowrun.engine.driver import Driver
    from flowrun.engine.kinds import Stored
    from flowrun.store import RunStore, StoredRun


def load(path: str | os.PathLike[str]) -> Graph:
    """Read, check and expand a blueprint (without importing its functions)."""
    return expand(schema.check(loader.load(path)))


def validate_file(
    path: str | os.PathLike[str], *, imports: bool = True, allow: Sequence[str] = ()
) -> list[Problem]:
    """Every problem in one blueprint file (empty when it is valid). With `imports=False` the
    node modules are not imported (a static check: `uses` and call signatures are not checked).
    `allow` (else `FLOWRUN_ALLOW_MODULES`) limits the modules a `uses` may name."""
    return _check(path, imports=imports, allow=allow).problems


@fast_frozen
class FileCheck(Frozen):
    """What `validate` shows of one file: its problems and, when the schema check passed,
    its pools as `pool_lines` describes them; with the document and the expanded graph when
    they could be built."""

    problems: list[Problem]
    pools: list[str]
    document: loader.Document | None = None
    graph: Graph | None = None


def check_file(
    path: str | os.PathLike[str], *, imports: bool = True, allow: Sequence[str] = ()
) -> FileCheck:
    """`validate_file` and `pool_lines` from one reading of the file.

    The result holds on to the document and the graph: a caller that exits right after
    (the CLI) leaves their memory to the operating system instead of freeing a large
    blueprint's objects one by one, a tenth of the check of 10,000 nodes."""
    checked = _check(path, imports=imports, allow=allow)
    return FileCheck(checked.problems, checked.pools, checked.doc, checked.graph)


@fast_mutable
class _Checked(Mutable):
    """What checking one file found so far: its problems and what was built."""

    problems: list[Problem]
    doc: loader.Document | None = None
    graph: Graph | None = None
    targets: dict[str, Target] | None = None
    dirs: list[str] = field(default_factory=list)
    pools: list[str] = field(default_factory=list)  # of a blueprint that passed the schema


def _check(
    path: str | os.PathLike[str], *, imports: bool = True, allow: Sequence[str] = ()
) -> _Checked:
    """Every stage that can run: load, schema, expansion, import, call signatures.

    Schema problems do not stop the check: what can be salvaged of the blueprint still goes
    through expansion and import, and later problems at a location that already has one are
    dropped (they would repeat the same root cause)."""
    # Each stage builds objects per node (specs, graph nodes, edges) that all stay alive, so
    # the cyclic collector would only rescan them, the whole document again each time
    # (a tenth of a 10,000-node check); whatever garbage there is waits for the end.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _check_stages(path, imports=imports, allow=allow)
    finally:
        if enabled:
            gc.enable()


def _check_stages(path: str | os.PathLike[str], *, imports: bool, allow: Sequence[str]) -> _Checked:
    try:
        doc = loader.load(path)
    except BlueprintError as exc:
        return _Checked(list(exc.problems))
    pools: list[str] = []
    try:
        bp = schema.check(doc)
        problems: list[Problem] = []
        pools = _pool_lines(bp)
    except BlueprintError as exc:
        problems = list(exc.problems)
        salvaged = schema.salvage(doc)
        if salvaged is None:
            return _Checked(problems, doc)
        bp = salvaged
    seen = {p.path for p in problems}
    out = _Checked(problems, doc, pools=pools)

    def keep(found: Sequence[Problem]) -> None:
        out.problems += [p for p in found if not _covered(p.path, seen)]

    try:
        out.graph = expand(bp)
    except BlueprintError as exc:
        keep(exc.problems)
    out.dirs = list(search_path(doc.path))
    blocked = _disallowed(bp, out.graph, allowed_modules(allow))
    keep(blocked)
    if not imports or blocked:  # nothing is imported from a blueprint naming disallowed code
        out.problems = _in_order(out.problems, doc.name)
        return out
    try:
        out.targets = resolve(bp, out.dirs)
    except BlueprintError as exc:
        keep(exc.problems)
    if out.graph is not None and out.targets is not None:
        if not seen:  # a salvaged blueprint's calls are not the ones its author wrote
            keep(check_calls(out.graph, out.targets))
        children, found = _resolve_children(out.graph, dict(out.targets), out.dirs)
        out.problems += found
        out.targets = children
    out.problems = _in_order(out.problems, doc.name)
    return out


def _disallowed(bp: Blueprint, graph: Graph | None, allow: Sequence[str]) -> list[Problem]:
    """`uses` outside `allow`, in the blueprint and in every child blueprint it runs."""
    found = disallowed(bp, allow)
    for child in graph.children.values() if graph is not None and allow else ():
        found += _disallowed(child.blueprint, child, allow)
    return found


def _in_order(problems: list[Problem], file: str) -> list[Problem]:
    """The blueprint's own problems by position, then each child file's (once each, however
    many subflows run that file)."""
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.file != file, p.file, p.line, p.column))


def _resolve_children(
    graph: Graph, targets: dict[str, Target], dirs: list[str]
) -> tuple[dict[str, Target], list[Problem]]:
    """Import and check the `uses` of every subflow's blueprint, at any depth, into
    `targets`; the directories they import from are added to `dirs`."""
    problems: list[Problem] = []
    for child in graph.children.values():
        doc = child.blueprint.document
        child_dirs = search_path(doc.path if doc is not None else None)
        dirs += [d for d in child_dirs if d not in dirs]
        try:
            found = resolve(child.blueprint, child_dirs)
            targets.update(found)
            problems += check_calls(child, found)
        except BlueprintError as exc:
            problems += exc.problems
        problems += _resolve_children(child, targets, dirs)[1]
    return targets, problems


def pool_lines(path: str | os.PathLike[str]) -> list[str]:
    """`api: 4 at once, 10/s` for each pool of a valid blueprint (what `validate` shows)."""
    return _pool_lines(schema.check(loader.load(path)))


def _pool_lines(bp: Blueprint) -> list[str]:
    return [p.describe() for p in bp.pools.values()]


def _covered(path: str, seen: set[str]) -> bool:
    """Is `path` at or inside a location that already has a problem?"""
    return any(path == s or path.startswith((s + ".", s + "[")) for s in seen)


def validate(
    paths: Iterable[str | os.PathLike[str]], *, imports: bool = True, allow: Sequence[str] = ()
) -> list[Problem]:
    """Every problem in every file, in file order."""
    return [p for path in paths for p in validate_file(path, imports=imports, allow=allow)]


@fast_frozen
class Prepared(Frozen):
    """A checked graph with its resolved functions, ready to run."""

    graph: Graph
    targets: Mapping[str, Target]
    dirs: tuple[str, ...]
    sha256: str


def prepare(path: str | os.PathLike[str], allow: Sequence[str] = ()) -> Prepared:
    """Everything `run` needs before it starts: the graph and the imported callables. Any
    problem raises, with every problem `validate` reports."""
    checked = _check(path, allow=allow)
    errors = [p for p in checked.problems if p.severity == "error"]
    doc, graph, targets = checked.doc, checked.graph, checked.targets
    if errors or doc is None or graph is None or targets is None:
        raise BlueprintError(errors or checked.problems)
    sha = hashlib.sha256(doc.text.encode()).hexdigest()
    return Prepared(graph, targets, tuple(checked.dirs), sha)


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
            codes = {p.code for p in exc.problems}
            shown = text if len(text) <= 40 else text[:37] + "..."
            if "non-finite-number" in codes:
                why = f"{shown!r} is not a finite number (JSON has no NaN or infinity)"
            elif "bad-number" in codes:
                why = f"{shown!r} is a number too large to keep"
            else:
                raise UsageError(f"--set {key}: cannot parse {text!r} as a YAML value") from exc
            raise UsageError(f"--set {key}: {why}; quote it to pass it as text") from exc
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


@dataclass(eq=False, repr=False)
class RunOptions(Mutable):
    """The options of `flowrun.run`, one for each `flowrun run` flag."""

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
    targets: Sequence[str] = ()  # --target: only these nodes and what they need
    rerun_from: Sequence[str] = ()  # --from (with --resume): re-run these and what follows
    dry_run: bool = False  # plan only: nothing called, nothing written
    allow_modules: Sequence[str] = ()  # --allow-module: prefixes a `uses` must start with


def check_usage(options: RunOptions) -> None:
    """Flags that have no effect together are usage errors (exit 2), before anything is read."""
    wrong = []
    if options.address is not None and options.executor != "dask":
        wrong.append("--address needs --executor dask (it names a Dask scheduler)")
    if options.allow_changed and options.resume is None:
        wrong.append("--allow-changed needs --resume (it allows resuming a changed blueprint)")
    if options.rerun_from and options.resume is None:
        wrong.append("--from needs --resume RUN_ID|latest (it re-runs part of an earlier run)")
    if options.concurrency < 1:
        wrong.append("--concurrency must be at least 1")
    if wrong:
        raise UsageError("; ".join(wrong))


class Run:
    """A prepared run. Lifecycle: building it checks everything and opens (and locks) the run's
    state; `start()` drives it to the end and closes the state; `close()` (or leaving a
    `with Run(...) as run:` block) closes the state of a run that was never started.
    `cancel()` is safe from a signal handler and from another thread.

    Everything that can be wrong with the input (blueprint, `--set`, `--context`, the state
    directory, a changed blueprint on `--resume`) raises here, before any node runs.
    """

    def __init__(self, path: str | os.PathLike[str], options: RunOptions) -> None:

        check_usage(options)
        self.options = options
        self.path = str(path)
        # Before the node modules are imported: a logging handler made at import time then
        # writes through the proxy, so what a node logs is captured with its output.
        self._capture = capture.install()
        try:
            self._setup(path, options)
        except BaseException:
            capture.uninstall(self._capture)
            raise

    def _setup(self, path: str | os.PathLike[str], options: RunOptions) -> None:
        from flowrun import store

        self.prepared = prepare(path, options.allow_modules)
        self.full_graph = self.prepared.graph
        self.skipped: tuple[str, ...] = ()
        if options.targets:
            keep = select.selected(self.full_graph, options.targets)
            self.prepared = dataclasses.replace(
                self.prepared, graph=select.targeted(self.full_graph, keep)
            )
            self.skipped = tuple(s.id for s in self.full_graph.blueprint.nodes if s.id not in keep)
        self.rerun = select.downstream(self.full_graph, options.rerun_from)
        self.cancelled = options.cancelled or threading.Event()
        self.stored: StoredRun | None = None
        self.store: RunStore | None = None  # none for a dry run: nothing is written
        state_dir = Path(options.state_dir)
        if options.resume is not None:
            self.store = reopened = self._reopen(state_dir, options.resume)
            assert self.stored is not None
            ctx = dict(self.stored.meta.context)
            ctx.update(self.stored.context_updates)
            if options.dry_run:
                reopened.close()
        elif options.dry_run:
            ctx = initial_context(self.prepared.graph, options.sets, options.context_file)
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
            self.store = store.RunStore.create(state_dir, meta, on_failure=self._store_failed)
            ctx = dict(ctx)
        self.run_id: str = self.store.run_id if self.store is not None else ""
        self.context = SharedContext(ctx)
        self._driver: Driver | None = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the run's state (committing what was recorded); safe to call twice."""
        if self.store is not None:
            self.store.close()

    def _reopen(self, state_dir: Path, run_id: str) -> RunStore:
        from flowrun import store

        if self.options.sets or self.options.context_file:
            raise UsageError(
                "--resume reuses the run's initial context; drop --set/--context "
                "(or start a new run)"
            )
        bp_id = self.prepared.graph.blueprint.id
        opened = store.RunStore.open(
            state_dir, run_id, blueprint_id=bp_id, on_failure=self._store_failed
        )
        try:
            # Batches writing to a file: the file holds their results, the store only
            # needs to say which items finished (a 10M-item batch stays out of memory).
            lean = [s.id for s in self.prepared.graph.blueprint.nodes
                    if s.batch is not None and s.batch.output_to is not None]  # fmt: skip
            self.stored = opened.load(lean)
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

    def _store_failed(self, exc: Exception) -> None:
        """The store cannot record any more (a full disk...): stop starting work, as a cancel
        does, since whatever ran from now on would be lost to `--resume`."""
        self.cancel()

    def _resume_state(self) -> Stored | None:
        from flowrun.engine.kinds import Stored

        if self.stored is None:
            return None
        ok = ("succeeded", "recovered")
        # --from: what follows those nodes runs again, whatever it did before (a subflow's,
        # a batch item's or a loop iteration's child nodes `sub/x`, `b[3]/x`, `poll#2/x` too).
        rerun = self.rerun
        nodes = {
            k: (n.status, n.output, n.action, n.attempts or 1)
            for k, n in self.stored.nodes.items()
            if n.status in ok
            and not is_item_id(k)
            and k not in rerun
            and not (rerun and "/" in k and re.split(_CHILD_OWNER, k, maxsplit=1)[0] in rerun)
        }
        items: dict[str, Mapping[int, Any]] = {
            b: {i: n.output for i, n in its.items() if n.status in ok}
            for b, its in self.stored.items.items()
            if b not in self.rerun
        }
        items.update((b, lean) for b, lean in self.stored.lean.items() if b not in self.rerun)
        return Stored(nodes, items)

    def _reused(self, node: str, stored: Any) -> bool:
        if node in stored.nodes:
            return True
        # A batch whose every item is stored: only its scatter and gather run again.
        batch = self.stored.batches.get(node) if self.stored is not None else None
        done = stored.items.get(node, {})
        return batch is not None and batch.status == "succeeded" and len(done) == batch.total

    def plan(self) -> dict[str, Any]:
        """What a run would do, per node: `run`, `reuse` (from the resumed run) or `skip`
        (not selected by --target). Nothing is called and nothing is written."""
        stored = self._resume_state()
        nodes: dict[str, dict[str, Any]] = {}
        for spec in self.full_graph.blueprint.nodes:
            entry: dict[str, Any] = {"plan": "run"}
            if spec.id in self.skipped:
                entry = {"plan": "skip", "reason": "not needed by --target"}
            elif stored is not None and self._reused(spec.id, stored):
                entry = {"plan": "reuse"}
            elif stored is not None and spec.batch is not None and stored.items.get(spec.id):
                entry["itemsReused"] = len(stored.items[spec.id])
            if spec.id in self.rerun:
                entry["reason"] = "--from"
            nodes[spec.id] = entry
        return {
            "blueprint": self.full_graph.blueprint.id,
            "runId": self.run_id or None,
            "dryRun": True,
            "nodes": nodes,
        }

    def start(self) -> RunReport:
        """Drive the run to its end; the store is closed (everything committed) on return."""
        try:
            return self._drive(self.options)
        finally:
            capture.uninstall(self._capture)

    def _drive(self, opts: RunOptions) -> RunReport:
        from flowrun.engine.backends import make_backend
        from flowrun.engine.driver import Driver, Options

        if self.store is None:
            raise UsageError("a dry run has no run to start; call plan()")
        store = self.store
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
                retry_on={
                    spec.id: spec.config.retry_on
                    for spec in self.prepared.graph.blueprint.nodes
                    if spec.config.retry_on is not None
                },
            )
        except BaseException:
            store.close()
            raise
        bus = ev.Bus([store, *opts.sinks])
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
            with _heap_frozen():
                report: RunReport = self._driver.run()
        except BaseException:
            backend.close(cancel=self.cancelled.is_set())
            store.close()
            raise
        backend.close(cancel=self.cancelled.is_set())
        with contextlib.suppress(StateError):
            store.close()  # a failure is the store's `failure`, reported below
        if self.skipped:  # --target: the nodes left out are in the report, as skipped
            reports = {s.id: report.nodes.get(s.id) for s in self.full_graph.blueprint.nodes}
            report.nodes = {k: v or NodeReport("skipped") for k, v in reports.items()}
        return _unrecorded(report, store.failure, self.path, self.run_id)


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """While the run goes, the garbage collector's full passes skip what existed when it
    started (the modules, the graph: none of it is the run's garbage). A run that makes many
    short-lived objects (a batch over a subflow makes a child run per item) triggers such
    passes, and each one walked the whole heap."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _unrecorded(report: RunReport, failure: StateError | None, path: str, run_id: str) -> RunReport:
    """A run whose state could not be recorded is `failed` (exit 1), whatever its nodes did,
    with the cause as a run-level error (`node` empty): what ran after the failure is lost to
    `--resume`, which re-runs it once the cause (the full disk) is dealt with."""
    if failure is None:
        return report
    report.status = "failed"
    message = f"{failure}; the run stopped; free space, then: flowrun run {path} --resume {run_id}"
    report.errors.append({"node": "", "type": "StateError", "message": message})
    return report


#: where a child node's id (`sub/x`, `b[3]/x`, `poll#2/x`) stops naming its top-level node
_CHILD_OWNER = r"[\[#/]"  # compiled on first use (by `re`): only --from needs it


def run(path: str | os.PathLike[str], **kwargs: Any) -> RunReport:
    """Run a blueprint and return its report (see `RunOptions` for the keyword arguments)."""
    return Run(path, RunOptions(**kwargs)).start()


__all__ = ["Run", "RunOptions", "load", "prepare", "run", "validate", "validate_file"]
