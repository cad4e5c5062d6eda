"""Where node calls run. Each backend turns a list of `Call`s into a future of `Outcome`s,
so the driver, scheduler, events, display and store never change between them.

- `thread` (default): a `ThreadPoolExecutor` in this process.
- `process`: a `ProcessPoolExecutor` with the `spawn` context, for CPU-bound Python.
- `dask`: a Dask distributed cluster (`pip install 'flowrun[dask]'`).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol

from flowrun.invoke import Call, Outcome

KINDS = ("thread", "process", "dask")


class Backend(Protocol):
    """Runs chunks of calls; a chunk's calls run one after another on one worker."""

    #: does `ctx.get` see other nodes' `ctx.set` at once (shared memory), or a snapshot?
    shared_context: bool

    def submit(self, calls: list[Call]) -> Future[list[Outcome]]: ...

    def close(self, *, cancel: bool = False) -> None: ...
