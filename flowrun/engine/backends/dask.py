"""`--executor dask`: chunks of calls run on a Dask distributed cluster.

`--address tcp://host:8786` connects to a running scheduler; without it a local cluster is
started for the run and stopped after it. Each chunk is submitted as ONE fixed top-level
function, `remote.run_job`, with the `Job` as its only positional argument: a node's own
keyword arguments stay inside the job (a kwarg named `key` given to `Client.submit` would be
taken as the task key), and nothing but a dotted path names the node function.

Workers import the blueprint's modules themselves. `run_job` puts the blueprint's directories
and the worker's current directory on its `sys.path`: that is enough on this machine; on
others, flowrun must be installed and the worker started from the blueprint's directory, or
PYTHONPATH set. A worker keeps the modules it imported for its lifetime: restart the workers
after changing a node's code.

Cancel: every worker is told at once (`remote.cancel_run`), so the run's attempts running there
see `ctx.cancelled` (a shell node ends its command's whole process group); then outstanding
futures are cancelled and the client is closed; a cluster started here has its worker
processes killed, then is stopped. A Python node that never looks at `ctx.cancelled` cannot be
interrupted on a cluster reached with `--address`: it finishes there and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from flowrun.blueprint.resolve import Target
from flowrun.engine.backends.remote import ContextPacker, Job, cancel_run, run_job
from flowrun.engine.invoke import Call, Outcome, chunk_budget_s
from flowrun.errors import UsageError
from flowrun.node import SharedContext

# Imported by name on each worker (a wrong string fails only there): tests/test_layers.py checks
# that it names a module with the `dask_setup` hook.
WORKER_PRELOAD = "flowrun.engine.backends.remote"

CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 0.5
CANCEL_WAIT_S = 2.0
INSTALL_HINT = "--executor dask needs the optional dependency: pip install 'flowrun[dask]'"


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        why = "" if exc.name in ("distributed", "dask") else f" (importing it failed: {exc})"
        raise UsageError(INSTALL_HINT + why) from exc
    return distributed


def _connect(distributed: Any, address: str) -> Any:
    """A client of the scheduler at `address`, or a UsageError naming it."""
    # Built in two steps so a client that failed to connect can be closed here, while its
    # event loop still runs; left to its __del__ at interpreter exit (it is kept alive by the
    # traceback), it blocks for twice the timeout and prints a TimeoutError.
    client = distributed.Client.__new__(distributed.Client)
    try:
        client.__init__(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, ValueError, TimeoutError) as exc:
        with contextlib.suppress(Exception):  # the connection error is the one to report
            client.close(timeout=1)
        raise UsageError(
            f"--address {address}: cannot connect to a Dask scheduler there "
            f"({type(exc).__name__}: {exc}); start one with `dask scheduler` or check the address"
        ) from exc
    return client


def _local_cluster(distributed: Any, workers: int) -> Any:
    """A local cluster that really uses the machine, with `workers` task slots in all.

    Worker processes, not threads: someone who picks `dask` over `thread` wants more than one
    core for Python code, and a run on a local cluster should fail the way it would on a real
    one (modules imported by the workers, data sent over the wire) rather than pass only
    because everything shares one process. Starting them takes well under a second here,
    small next to a run worth distributing; `thread` remains the fast-start choice. There are
    min(workers, cores) processes with enough threads each that `--concurrency` chunks can
    run at once. The dashboard takes a free port, so a second run never collides with the
    first; the workers ignore Ctrl-C (the run decides) via the `remote` preload; Dask's own
    warnings (a worker stopped mid-task on cancel, ...) stay out of the run's output.
    """
    n_workers = max(1, min(workers, os.cpu_count() or 1))
    return distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=math.ceil(workers / n_workers),
        processes=True,
        dashboard_address=":0",
        preload=[WORKER_PRELOAD],
        silence_logs=logging.ERROR,
    )


class DaskBackend:
    """Runs chunks as Dask tasks; `ctx` sees a snapshot of the run context."""

    shared_context = False
    dispatch_ms = 3.0  # one scheduler round trip, measured on a local cluster

    def __init__(
        self,
        targets: Mapping[str, Target],
        *,
        workers: int,
        run_id: str,
        context: SharedContext,
        cancelled: threading.Event,
        dirs: Sequence[str],
        address: str | None = None,
    ) -> None:
        distributed = _import_distributed()
        self._run_id = run_id
        self._dirs = tuple(dirs)
        self._packer = ContextPacker(targets, context)
        self._budget_s = chunk_budget_s(self.dispatch_ms)
        self._cluster: Any = None
        if address:
            self._client = _connect(distributed, address)
        else:
            self._cluster = _local_cluster(distributed, workers)
            self._client = distributed.Client(self._cluster, set_as_default=False)
        # pure=False: every chunk is a new task, never merged with an equal one (a retry),
        # and Dask does not hash each job to name it.
        self._executor = self._client.get_executor(pure=False)

    def together(self, uses: str) -> bool:
        return self._packer.together(uses)

    def submit(
        self, calls: list[Call], together: bool = False, budget: bool = False
    ) -> Future[list[Outcome]]:
        try:
            job = Job(calls, self._run_id, self._dirs, self._packer.pack(calls), together,
                      self._budget_s if budget and not together else None)  # fmt: skip
            fut: Future[list[Outcome]] = self._executor.submit(run_job, job)
        except Exception as exc:  # serialising the job failed: fail these calls, not the run
            fut = Future()
            fut.set_exception(exc)
        return fut

    def cancel(self) -> None:
        """Tell every worker the run is cancelled (they never see the driver's event), waiting
        at most `CANCEL_WAIT_S` for their answers: a stuck worker must not hold the run."""

        def tell() -> None:
            with contextlib.suppress(Exception):  # a lost scheduler: close() says no more
                self._client.run(cancel_run, self._run_id)

        told = threading.Thread(target=tell, daemon=True, name="flowrun-dask-cancel")
        told.start()
        told.join(CANCEL_WAIT_S)

    def close(self, *, cancel: bool = False) -> None:
        # `shutdown(wait=False)` cancels whatever is still outstanding (nothing after a
        # normal run; the running and queued chunks after Ctrl-C).
        self._executor.shutdown(wait=False)
        try:
            self._client.close(timeout=CLOSE_TIMEOUT_S)
        finally:
            if self._cluster is not None:
                if cancel:
                    _kill_workers(self._cluster)
                self._cluster.close(timeout=CLOSE_TIMEOUT_S)


def _kill_workers(cluster: Any) -> None:
    """Stop a local cluster's worker processes now, not after their running nodes.

    A plain close lets each worker wait for the node it is running, up to 4 s, and then logs
    that it killed it. `Nanny.kill` with a short timeout does the same at once; if it fails,
    the plain close that follows still stops everything.
    """

    async def kill_all() -> None:
        nannies = list(cluster.workers.values())
        await asyncio.gather(
            *(n.kill(timeout=KILL_TIMEOUT_S, reason="flowrun-cancel") for n in nannies)
        )

    with contextlib.suppress(Exception):
        cluster.sync(kill_all)
