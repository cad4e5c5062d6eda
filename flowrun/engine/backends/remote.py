"""Running chunks of calls away from the driver: shared by the process and Dask backends.

A chunk travels as a `Job`: plain data (dotted paths, arguments, the run id, the blueprint's
directories), plus a snapshot of the run context only when some call's function takes `ctx`.
A node is never shipped as a pickled function: the worker imports each `uses` itself, once
per process, and runs the calls with `run_attempt`, which turns the node's own exceptions into
failed `Outcome`s (type, message, traceback text). `ctx.set` values come back in
`Outcome.updates`; the driver applies them to the run context (`shared_context = False`).

A chunk of `async def` calls runs on the worker process's one event loop (`aio.shared_loop`,
started with the first of them), however many threads the worker has (a Dask worker's pool):
one after another, or all at once when it was submitted `together`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowrun.blueprint.resolve import Target, describe, load_callable, use_search_path
from flowrun.engine import capture
from flowrun.engine.invoke import Call, CancelScope, Outcome, crashed, run_attempt
from flowrun.expr.template import Params
from flowrun.node import SharedContext
from flowrun.std.shell import kill_all


@dataclass(frozen=True, slots=True)
class Job:
    """One chunk of calls and what a worker needs to run them."""

    calls: list[Call]
    run_id: str
    dirs: tuple[str, ...]
    context: bytes | None = None  # pickled context snapshot; None when no call takes `ctx`
    together: bool = False  # async calls that run at once (see `Backend.together`)
    budget_s: float | None = None  # start no call past it (`invoke.CHUNK_BUDGET_MS`)


class ContextPacker:
    """Parent side: decides whether a chunk needs the run context, and packs it.

    The snapshot is pickled once per version of the context, not once per chunk: a batch of a
    million items whose worker takes `ctx` would otherwise pickle the whole context (often
    holding the batch's own input list) thousands of times on the driver's thread.
    """

    def __init__(self, targets: Mapping[str, Target], context: SharedContext) -> None:
        self._targets = targets
        self._context = context
        self._version: tuple[tuple[str, int], ...] = ()
        self._held: dict[str, Any] = {}
        self._packed: bytes | None = None

    def pack(self, calls: Sequence[Call]) -> bytes | None:
        """The pickled snapshot when some call's function takes `ctx`, else None."""
        # A call whose params hold `${{ }}` reads the context too (node ids, `context`).
        if not any(self._wants_ctx(c.uses) or isinstance(c.kwargs, Params) for c in calls):
            return None
        own = calls[0].context  # a chunk comes from one run: the run's, or one child run's
        snapshot = (self._context if own is None else own).snapshot()
        # The driver replaces values (`context.set`), it never mutates them in place, so the
        # identities of the values name a version. Holding the snapshot keeps those objects
        # alive, so an id cannot be reused by a new value while it is cached.
        version = tuple((k, id(v)) for k, v in snapshot.items())
        if self._packed is None or version != self._version:
            self._packed = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
            self._version, self._held = version, snapshot
        return self._packed

    def together(self, uses: str) -> bool:
        target = self._targets.get(uses)
        return target is not None and target.is_async

    def _wants_ctx(self, uses: str) -> bool:
        target = self._targets.get(uses)
        return target is None or target.wants_ctx  # unknown: ship it rather than guess


# -- worker side -----------------------------------------------------------------------------

_targets: dict[str, Target] = {}
_paths: set[tuple[str, ...]] = set()
_lock = threading.Lock()
# A worker never sees the parent's cancel event: a cancelled run stops its workers from the
# parent (process workers are terminated, Dask futures cancelled), and on a cluster reached
# with `--address`, which flowrun cannot stop, the parent calls `cancel_run` on every worker.
# Per-attempt timeouts set `ctx.cancelled` through the run's `CancelScope` in this process.
_scopes: dict[str, CancelScope] = {}
MAX_SCOPES = 64  # runs remembered by a long-lived worker (the oldest is forgotten first)


def run_job(job: Job) -> list[Outcome]:
    """Run a chunk's calls one after another; the one function both backends submit."""
    _ensure_path(job.dirs)
    data = pickle.loads(job.context) if job.context is not None else {}
    context = SharedContext(data)
    scope = _scope_of(job.run_id)
    targets = _async_targets(job.calls)
    if targets is not None:
        from flowrun.engine.aio import run_chunk, run_together, shared_loop

        run = run_together if job.together else run_chunk
        return shared_loop().submit(run, job.calls, targets, job.run_id, context, scope).result()
    if job.budget_s is None:
        return [_run_call(call, job.run_id, context, scope) for call in job.calls]
    out: list[Outcome] = []
    until = time.perf_counter() + job.budget_s
    for call in job.calls:
        if out and time.perf_counter() > until:
            break  # the driver queues the calls not run again
        out.append(_run_call(call, job.run_id, context, scope))
    return out


def _scope_of(run_id: str) -> CancelScope:
    with _lock:
        scope = _scopes.get(run_id)
        if scope is None:
            while len(_scopes) >= MAX_SCOPES:
                del _scopes[next(iter(_scopes))]
            scope = _scopes[run_id] = CancelScope()
        return scope


def cancel_run(run_id: str) -> None:
    """Run `run_id` was cancelled: its attempts running here see `ctx.cancelled` now (a shell
    node then ends its command's process group), and later ones start cancelled."""
    _scope_of(run_id).cancel()


def _async_targets(calls: Sequence[Call]) -> dict[str, Target] | None:
    """The targets of `calls` when every one is an importable coroutine function, else None
    (then each call runs here, on this thread: an unimportable one fails on its own)."""
    out: dict[str, Target] = {}
    for call in calls:
        target = out.get(call.uses)
        if target is None:
            try:
                target = out[call.uses] = _target(call.uses)
            except Exception:
                return None
        if not target.is_async:
            return None
    return out


def _ensure_path(dirs: tuple[str, ...]) -> None:
    """Make the blueprint's modules importable here (once per process and set of dirs).

    The blueprint's directory and the driver's current directory come first (they exist on
    this machine, or on a shared file system); then the worker's own current directory, so
    that `cd blueprints && dask worker ...` works as it reads (a console script does not put
    the current directory on `sys.path` by itself).
    """
    if dirs in _paths:
        return
    with _lock:
        use_search_path(list(dict.fromkeys([*dirs, os.getcwd()])))
        capture.install()  # this worker's nodes' prints travel back in their outcomes
        _paths.add(dirs)


def _target(uses: str) -> Target:
    target = _targets.get(uses)
    if target is None:
        target = _targets[uses] = describe(uses, load_callable(uses))
    return target


def _run_call(call: Call, run_id: str, context: SharedContext, scope: CancelScope) -> Outcome:
    try:
        target = _target(call.uses)
    except Exception as exc:  # not importable here: the node fails, the worker carries on
        return _unresolved(call, exc)
    try:
        return run_attempt(
            call,
            target.fn,
            wants_ctx=target.wants_ctx,
            is_async=target.is_async,
            run_id=run_id,
            context=context,
            cancel=scope,
        )
    except BaseException as exc:  # SystemExit, KeyboardInterrupt from the node: only it fails
        return crashed(call, exc)


def _unresolved(call: Call, exc: Exception) -> Outcome:
    hint = (
        f" (on worker {socket.gethostname()}: make the blueprint's modules importable there, "
        "e.g. start the worker from the blueprint's directory or set PYTHONPATH)"
    )
    return Outcome(
        call.node,
        False,
        time.time(),
        0.0,
        error_type=type(exc).__name__,
        message=str(exc) + hint,
        traceback="".join(traceback.format_exception(exc)),
    )


def init_process() -> None:
    """Initializer of every worker process flowrun starts itself (process pool, local Dask).

    Ctrl-C reaches the whole foreground process group; the parent decides what it means
    (finish running nodes, or cancel and stop the workers), so workers ignore it. A worker
    also exits when its parent dies (kill -9, a second Ctrl-C), rather than finishing a long
    node for nobody.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # an in-process Dask worker: signals belong to the host program
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Cancel terminates this process; commands it started run in sessions of their own, so
    # they would outlive it: end their process groups first.
    signal.signal(signal.SIGTERM, _terminated)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent,), daemon=True, name="flowrun-parent-watch"
        ).start()
    # Called by the interpreter's exit just before it waits for the non-daemon threads.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(_leave_stray_threads)


def _terminated(signum: int, frame: object) -> None:
    kill_all()
    os._exit(1)


def _leave_stray_threads() -> None:
    """A thread a node started and left running must not keep its worker alive once the pool
    has let the worker go (the run would wait for that worker at its end): every result has
    been sent by then, so the worker ends without waiting for it."""
    me = threading.current_thread()
    if any(t is not me and not t.daemon and t.is_alive() for t in threading.enumerate()):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()
    kill_all()
    os._exit(1)


def dask_setup(worker: object) -> None:
    """Dask preload hook (`preload=["flowrun.engine.backends.remote"]`) for local workers."""
    init_process()
