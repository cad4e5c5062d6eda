"""`--executor dask --address`: a run on a real scheduler and worker started from the command line.

The worker is a separate process, started in the directory of the node module as the README
tells users to, and imports that module itself: only plain data crosses over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import distributed

import flowrun.api
from flowrun.report import RunReport

# The `dask` command of this interpreter's environment (a venv's bin/ need not be on PATH).
DASK = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask") or "dask"
START_S = 60  # bound on the wait for the scheduler and the worker to come up
STOP_S = 10  # bound on a polite stop before the process is killed

BLUEPRINT = """
id: on-a-cluster
context:
  xs: [1, 2, 3, 4, 5]
  factor: 10
  scaled_by: null
nodes:
  - id: where
    uses: flowrun_cluster_nodes.where
  - id: scaled
    batch:
      uses: flowrun_cluster_nodes.scale
      inputKey: xs
edges:
  - { source: where, target: scaled }
"""

NODES = """
import os

def where():
    return {"pid": os.getpid()}

def scale(item, ctx):
    ctx.set("scaled_by", ctx.get("factor"))
    return item * ctx.get("factor")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def started(args: list[str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_S)


def wait_ready(address: str, logs: list[Path]) -> None:
    try:
        with distributed.Client(address, timeout=START_S, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=START_S)
    except Exception as exc:
        text = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs)
        raise AssertionError(f"the dask cluster did not come up: {exc}\n{text}") from exc


def test_a_run_on_a_scheduler_and_worker_started_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "flowrun_cluster_nodes.py").write_text(textwrap.dedent(NODES))
    (tmp_path / "cluster.yaml").write_text(BLUEPRINT)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]  # fmt: skip
    worker = [DASK, "worker", address, "--nthreads", "2", "--no-dashboard", "--no-nanny",
              "--local-directory", str(tmp_path / "scratch"),
              "--death-timeout", str(START_S)]  # fmt: skip
    logs = [tmp_path / "scheduler.log", tmp_path / "worker.log"]
    with (
        started(scheduler, tmp_path, logs[0]),
        started(worker, tmp_path, logs[1]) as worker_proc,
    ):
        wait_ready(address, logs)
        report = flowrun.api.run(
            tmp_path / "cluster.yaml", executor="dask", address=address, concurrency=2,
            state_dir=tmp_path / "state",
        )  # fmt: skip
    assert report.status == "completed", report.errors
    assert report.context["scaled"] == [10, 20, 30, 40, 50]
    assert report.context["scaled_by"] == 10  # ctx.set on the worker came back
    assert report.context["where"] == {"pid": worker_proc.pid}  # it ran in the worker process


# -- shell nodes on a cluster: a timeout or a cancel ends the command's whole process group ----

SLOW_SHELL = """
id: slow-on-a-cluster
nodes:
  - id: wait
    shell: "sleep 600 & echo $! > {pidfile}; wait"{config}
"""


@contextmanager
def cluster(tmp_path: Path) -> Iterator[str]:
    """A scheduler and one worker (with its nanny, as `dask worker` starts by default) on
    127.0.0.1; the scheduler's address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]  # fmt: skip
    worker = [DASK, "worker", address, "--nthreads", "2", "--no-dashboard",
              "--host", "127.0.0.1", "--local-directory", str(tmp_path / "scratch"),
              "--death-timeout", str(START_S)]  # fmt: skip
    logs = [tmp_path / "scheduler.log", tmp_path / "worker.log"]
    with started(scheduler, tmp_path, logs[0]), started(worker, tmp_path, logs[1]):
        wait_ready(address, logs)
        yield address


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def started_pid(pidfile: Path, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        if text:
            return int(text)
        time.sleep(0.05)
    raise AssertionError(f"the command never started (no pid in {pidfile})")


def test_a_shell_timeout_on_a_cluster_kills_the_grandchild(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW_SHELL.format(pidfile=pidfile, config="\n    config: {timeout: 1s}"))
    with cluster(tmp_path) as address:
        report = flowrun.api.run(path, executor="dask", address=address,
                                 state_dir=tmp_path / "state")  # fmt: skip
        assert report.status == "failed"
        assert report.errors[0]["type"] == "AttemptTimeout", report.errors
        child = int(pidfile.read_text())
        try:
            assert gone_within(child, 10)  # the `sleep`, not only its shell, on the worker
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def test_a_cancelled_run_on_a_cluster_kills_the_grandchild(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW_SHELL.format(pidfile=pidfile, config=""))
    with cluster(tmp_path) as address:
        run = flowrun.api.Run(
            path,
            flowrun.api.RunOptions(executor="dask", address=address, state_dir=tmp_path / "s"),
        )
        reports: list[RunReport] = []
        thread = threading.Thread(target=lambda: reports.append(run.start()), daemon=True)
        thread.start()
        child = started_pid(pidfile, 30)
        try:
            run.cancel()
            thread.join(30)
            assert reports, "the cancelled run did not end"
            assert reports[0].status == "cancelled"
            assert gone_within(child, 10)  # nothing of the command is left on the worker
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
