"""`async def` nodes run on one event loop per backend: bounded by `--concurrency`, one
thread whatever the concurrency (so no file descriptors per slot), output captured per item,
`config.timeout` cancelling the node's task, cancel reaching a running coroutine."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import flowrun
from flowrun import api, store
from tests import async_nodes

from .test_cancel import Started

ROOT = Path(__file__).resolve().parents[1]
A = "tests.async_nodes."


def batch_file(tmp_path: Path, uses: str, n: int, extra: str = "") -> Path:
    path = tmp_path / "async.yaml"
    path.write_text(
        f"id: aio\ncontext: {{xs: {list(range(n))}}}\nnodes:\n"
        f"  - id: w\n    batch: {{uses: {A}{uses}, inputKey: xs{extra}}}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(autouse=True)
def _reset() -> None:
    async_nodes.reset()


@pytest.mark.parametrize("concurrency", [1, 5, 64])
def test_items_run_at_once_up_to_the_concurrency_on_one_thread(
    tmp_path: Path, concurrency: int
) -> None:
    path = batch_file(tmp_path, "counted", 200)
    report = flowrun.run(path, state_dir=tmp_path / "s", concurrency=concurrency)
    assert report.status == "completed"
    assert report.context["w"] == list(range(200))
    assert async_nodes.peak == concurrency  # never more, and the loop really overlaps them
    assert len(async_nodes.threads) == 1
    assert threading.get_ident() not in async_nodes.threads


def test_batch_concurrency_bounds_the_items_of_its_batch(tmp_path: Path) -> None:
    path = batch_file(tmp_path, "counted", 100, ", concurrency: 3")
    report = flowrun.run(path, state_dir=tmp_path / "s", concurrency=50)
    assert report.status == "completed"
    assert async_nodes.peak == 3


def test_a_failing_item_fails_alone(tmp_path: Path) -> None:
    path = batch_file(tmp_path, "fails", 6, ", maxFailures: 1")
    report = flowrun.run(path, state_dir=tmp_path / "s", concurrency=8)
    assert report.status == "completed"
    assert report.context["w"] == [0, 1, None, 3, 4, 5]
    assert report.errors == [{"node": "w[2]", "type": "ValueError", "message": "bad item 2"}]


def test_each_coroutine_output_goes_to_its_own_item(tmp_path: Path) -> None:
    path = batch_file(tmp_path, "talk", 12)
    report = flowrun.run(path, state_dir=tmp_path / "s", concurrency=12)
    assert report.status == "completed"
    for i in range(12):
        logs = store.read_logs(tmp_path / "s", report.run_id, f"w[{i}]")
        assert logs == [(1, f"item {i} begins\nitem {i} ends\n")], i


def test_a_timeout_cancels_the_coroutine(tmp_path: Path) -> None:
    path = tmp_path / "stuck.yaml"
    path.write_text(
        f"id: stuck\nnodes:\n  - id: s\n    uses: {A}stuck\n    config: {{timeout: 0.2s}}\n",
        encoding="utf-8",
    )
    report = flowrun.run(path, state_dir=tmp_path / "s")
    assert report.status == "failed"
    [error] = report.errors
    assert error["type"] == "AttemptTimeout"
    assert async_nodes.unwound == ["s"]  # its task was cancelled, not left sleeping


def test_the_first_cancel_reaches_a_running_coroutine(tmp_path: Path) -> None:
    path = tmp_path / "wait.yaml"
    path.write_text(f"id: wait\nnodes:\n  - id: wait\n    uses: {A}until_cancelled\n")
    run = Started(path, tmp_path / "state")
    run.run.cancel()
    report = run.join()
    assert report.status == "cancelled"
    assert report.context["wait"] == "cancelled"


@pytest.mark.parametrize("executor", ["process"])
def test_process_workers_run_a_chunk_together(tmp_path: Path, executor: str) -> None:
    path = batch_file(tmp_path, "nap", 40)
    report = api.run(path, state_dir=tmp_path / "s", concurrency=16, executor=executor)
    assert report.status == "completed"
    assert report.context["w"] == list(range(40))


def _limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_a_thousand_coroutines_fit_in_1024_file_descriptors(tmp_path: Path) -> None:
    # before: every pool thread made its own event loop (an epoll fd and a socket pair), and
    # the batch failed with "Too many open files" from about 600 slots on
    path = batch_file(tmp_path, "nap", 2000, ", concurrency: 1000, params: {seconds: 0.3}")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "FORCE_COLOR")}
    env["PYTHONPATH"] = str(ROOT)
    argv = [sys.executable, "-m", "flowrun", "run", str(path), "--no-progress", "--json"]
    argv += ["-c", "1000", "--state-dir", str(tmp_path / "s")]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        preexec_fn=_limit_open_files,
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    assert '"status": "completed"' in proc.stdout
