"""`--executor process`: a pool of worker processes, for CPU-bound Python nodes.

Each chunk of calls is sent to a worker as a `remote.Job` (dotted paths and arguments, never a
pickled closure) and runs there with `run_attempt`. Workers are started with `spawn`: a forked
child of a process that runs threads (the driver's, rich's, the pool's own) can inherit a lock
held at the moment of the fork and hang.

Cancel: `ProcessPoolExecutor` has no public way to stop a worker that is running a node
(Python 3.14 adds `terminate_workers()`). The pool is given a spawn context that remembers the
`Process` objects it creates, a documented seam (`mp_context`), and `close(cancel=True)`
terminates those that are still alive; the pool then fails whatever was in flight with
`BrokenProcessPool`, which the driver reports as failures of those calls.

A worker that dies (a segfault, `os._exit`, the OOM killer) breaks the whole pool: every chunk
in flight fails with `BrokenProcessPool`, not only the one that held the guilty call. So a
chunk that breaks (outside a cancel) is run again one call at a time on a fresh one-worker
pool of its own, with the same attempt numbers (no retry is used), and its outcomes are
composed into the future the driver holds. A call that kills that worker while running alone
is the guilty one: it fails with `BrokenProcessPool`, and the calls after it go on in a new
worker. The guilty call has then run twice (in its chunk, then alone), and the calls of the
chunk that had finished before the crash run again.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any

from flowrun.blueprint.resolve import Target
from flowrun.engine.backends.remote import ContextPacker, Job, init_process, run_job
from flowrun.engine.invoke import Call, Outcome, chunk_budget_s, crashed
from flowrun.node import SharedContext


class _TrackingSpawn(SpawnContext):
    """The spawn context, remembering the worker processes it starts (for cancel)."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[SpawnProcess] = []

    def Process(self, *args: Any, **kwargs: Any) -> SpawnProcess:  # type: ignore[override]
        proc = SpawnProcess(*args, **kwargs)
        self.started.append(proc)
        return proc


class ProcessBackend:
    """Runs chunks in `workers` spawned processes; `ctx` sees a snapshot of the context."""

    shared_context = False
    dispatch_ms = 0.5  # pickling a chunk to a worker process and back

    def __init__(
        self,
        targets: Mapping[str, Target],
        *,
        workers: int,
        run_id: str,
        context: SharedContext,
        cancelled: threading.Event,
        dirs: Sequence[str],
    ) -> None:
        self._workers = workers
        self._cancelled = cancelled
        self._closing = False
        self._run_id = run_id
        self._dirs = tuple(dirs)
        self._packer = ContextPacker(targets, context)
        self._budget_s = chunk_budget_s(self.dispatch_ms)
        self._spawn = _TrackingSpawn()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # Processes start on demand, one per chunk in flight, up to `workers`.
        return ProcessPoolExecutor(
            max_workers=self._workers, mp_context=self._spawn, initializer=init_process
        )

    def together(self, uses: str) -> bool:
        return self._packer.together(uses)

    def submit(
        self, calls: list[Call], together: bool = False, budget: bool = False
    ) -> Future[list[Outcome]]:
        try:
            job = Job(calls, self._run_id, self._dirs, self._packer.pack(calls), together,
                      self._budget_s if budget and not together else None)  # fmt: skip
        except Exception as exc:  # the context could not be pickled: fail these calls
            return _failed(exc)
        try:
            fut = self._pool.submit(run_job, job)
        except BrokenProcessPool:
            # A worker died: the chunks that were in flight are being run again alone (see
            # the module docstring); later ones get a fresh pool.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            fut = self._pool.submit(run_job, job)
        return self._isolating(job, fut)

    def _isolating(self, job: Job, fut: Future[list[Outcome]]) -> Future[list[Outcome]]:
        """`fut`'s result; if its pool broke, the outcomes of running its calls one by one."""
        out: Future[list[Outcome]] = Future()

        def done(f: Future[list[Outcome]]) -> None:
            exc = f.exception()
            if exc is None:
                out.set_result(f.result())
            elif isinstance(exc, BrokenProcessPool) and not self._stopped():
                # Never block the pool's own thread, which runs this callback.
                threading.Thread(
                    target=self._isolate, args=(job, out), daemon=True, name="flowrun-isolate"
                ).start()
            else:
                out.set_exception(exc)

        fut.add_done_callback(done)
        return out

    def _stopped(self) -> bool:
        return self._closing or self._cancelled.is_set()

    def _isolate(self, job: Job, out: Future[list[Outcome]]) -> None:
        outcomes: list[Outcome] = []
        pool = self._solo_pool()
        try:
            for call in job.calls:
                if self._stopped():
                    break  # the driver treats the calls not run as never started
                alone = Job([call], job.run_id, job.dirs, job.context)
                try:
                    outcomes += pool.submit(run_job, alone).result()
                except BrokenProcessPool:
                    if self._stopped():  # terminated by a cancel, not by the call
                        raise
                    # It died alone: it is the guilty one.
                    died = BrokenProcessPool(
                        "the worker process died while running this call (a crash in native "
                        "code, os._exit, a signal or the OOM killer)"
                    )
                    outcomes.append(crashed(call, died))
                    pool.shutdown(wait=False)
                    pool = self._solo_pool()
        except BaseException as exc:
            out.set_exception(exc)
            return
        finally:
            pool.shutdown(wait=False)
        out.set_result(outcomes)

    def _solo_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=self._spawn, initializer=init_process)

    def cancel(self) -> None:
        """Workers elsewhere never see the run's event: `close(cancel=True)` stops them."""

    def close(self, *, cancel: bool = False) -> None:
        # Never wait here: a stuck node must not hold up the end of the run.
        self._closing = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        if cancel:
            for proc in self._spawn.started:
                if proc.is_alive():
                    proc.terminate()


def _failed(exc: BaseException) -> Future[list[Outcome]]:
    fut: Future[list[Outcome]] = Future()
    fut.set_exception(exc)
    return fut
