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
from flowrun.engine.invoke import Call, Outcome
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
        self._run_id = run_id
        self._dirs = tuple(dirs)
        self._packer = ContextPacker(targets, context)
        self._spawn = _TrackingSpawn()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # Processes start on demand, one per chunk in flight, up to `workers`.
        return ProcessPoolExecutor(
            max_workers=self._workers, mp_context=self._spawn, initializer=init_process
        )

    def submit(self, calls: list[Call]) -> Future[list[Outcome]]:
        try:
            job = Job(calls, self._run_id, self._dirs, self._packer.pack(calls))
        except Exception as exc:  # the context could not be pickled: fail these calls
            return _failed(exc)
        try:
            return self._pool.submit(run_job, job)
        except BrokenProcessPool:
            # A worker died (a crash in a C extension, the OOM killer): the calls that were in
            # flight have failed already; later ones get a fresh pool, so retries still work.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(run_job, job)

    def cancel(self) -> None:
        """Workers elsewhere never see the run's event: `close(cancel=True)` stops them."""

    def close(self, *, cancel: bool = False) -> None:
        # Never wait here: a stuck node must not hold up the end of the run.
        self._pool.shutdown(wait=False, cancel_futures=True)
        if cancel:
            for proc in self._spawn.started:
                if proc.is_alive():
                    proc.terminate()


def _failed(exc: BaseException) -> Future[list[Outcome]]:
    fut: Future[list[Outcome]] = Future()
    fut.set_exception(exc)
    return fut
