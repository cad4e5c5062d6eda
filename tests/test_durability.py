"""Durability end to end: real `flowrun run` processes, real signals, `--resume`.

Each test copies a blueprint and `durable/durable_nodes.py` into its own directory and runs
`python -m flowrun run` there. Node functions append one line per call to `calls.log` (named
by `FLOWRUN_TEST_CALLS`), so "each item ran exactly once" is checked across processes; the
`--events` file (flushed per line) tells how far a run got before it is signalled. Where a
test must catch a run mid-batch, items past a gate index wait for a release file
(`Workdir.gate`), so the run cannot finish early on a fast machine or stall on a slow one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DURABLE = Path(__file__).resolve().parent / "durable"
N_ITEMS = 60  # batch.yaml
CONCURRENCY = 4  # batch.yaml's batch.concurrency, and the -c the tests pass
GATE = 24  # items from this index on wait for the test's go-ahead (Workdir.gate)
N_FAILING = 12  # failing.yaml
FAIL_INDEX = 5  # failing.yaml


class Workdir:
    """A directory holding one blueprint, the node module, the calls log and the run state."""

    def __init__(self, root: Path, blueprint: str) -> None:
        self.root = root
        self.blueprint = blueprint
        shutil.copy(DURABLE / blueprint, root / blueprint)
        shutil.copy(DURABLE / "durable_nodes.py", root / "durable_nodes.py")
        self.calls_log = root / "calls.log"
        self.flag = root / "broken.flag"
        self.state = root / "state"
        self.events = root / "events.jsonl"
        self.env = {
            k: v for k, v in os.environ.items() if k not in {"CI", "NO_COLOR", "FORCE_COLOR"}
        }
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )
        self.env["FLOWRUN_TEST_CALLS"] = str(self.calls_log)
        self.env["FLOWRUN_TEST_FAIL_FLAG"] = str(self.flag)
        self.env["COLUMNS"] = "200"
        self.release_file = root / "release"
        self.stderr_file = root / "stderr.txt"

    def gate(self, from_index: int) -> None:
        """Hold batch items `from_index`.. (in later processes) until `release()`."""
        self.env["FLOWRUN_TEST_GATE_FROM"] = str(from_index)
        self.env["FLOWRUN_TEST_RELEASE"] = str(self.release_file)

    def release(self) -> None:
        self.release_file.touch()

    def stderr(self) -> str:
        return self.stderr_file.read_text() if self.stderr_file.exists() else ""

    def argv(self, command: str, *args: str) -> list[str]:
        state = ["--state-dir", str(self.state)]
        if command == "run":
            return [sys.executable, "-m", "flowrun", "run", self.blueprint, *state, *args]
        return [sys.executable, "-m", "flowrun", command, *state, *args]

    def start(self, *args: str) -> subprocess.Popen[str]:
        """`flowrun run BLUEPRINT --events ... ARGS` in the background; its stderr goes to a
        file (`stderr()`), so a test can watch it while the run goes."""
        with self.stderr_file.open("w") as err:
            return subprocess.Popen(
                self.argv("run", "--events", str(self.events), "--no-progress", *args),
                cwd=self.root,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )

    def cli(self, command: str, *args: str, env: dict[str, str] | None = None) -> Completed:
        proc = subprocess.run(
            self.argv(command, *args),
            cwd=self.root,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return Completed(proc.returncode, proc.stdout, proc.stderr)

    def run(self, *args: str) -> Completed:
        return self.cli("run", "--no-progress", *args)

    def calls(self) -> list[str]:
        if not self.calls_log.exists():
            return []
        return self.calls_log.read_text().splitlines()

    def read_events(self) -> list[dict[str, Any]]:
        if not self.events.exists():
            return []
        lines = self.events.read_text().splitlines()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line still being written
                break
        return out

    def item_successes(self) -> list[dict[str, Any]]:
        return [e for e in self.read_events() if e["event"] == "node_succeeded" and e.get("batch")]

    def runs_json(self) -> list[dict[str, Any]]:
        listed = self.cli("runs", "--json")
        assert listed.code == 0, listed.stderr
        runs: list[dict[str, Any]] = json.loads(listed.stdout)
        return runs


class Completed:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.stdout)
        return doc

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def finish(proc: subprocess.Popen[str], w: Workdir, timeout: float = 30.0) -> Completed:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"flowrun did not exit within {timeout} s\n{out}\n{w.stderr()}")
    return Completed(proc.returncode, out or "", w.stderr())


def wait_for(
    proc: subprocess.Popen[str], done: Callable[[], bool], what: str, timeout: float = 30.0
) -> None:
    """Poll `done` until it holds; fail if the process ends first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"flowrun exited {proc.returncode} before {what}\n{out}\n{err or ''}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def work_calls(calls: Sequence[str]) -> Counter[int]:
    return Counter(int(c.split()[1]) for c in calls if c.startswith("work "))


def expected_results(n: int) -> list[int]:
    return [i * 10 for i in range(n)]


def assert_no_traceback(result: Completed) -> None:
    assert "Traceback" not in result.stderr, result
    assert "Traceback" not in result.stdout, result


# -- 1 and 4: the first Ctrl-C (or SIGTERM) --------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_saves_the_run_and_resume_calls_each_item_once(
    tmp_path: Path, sig: signal.Signals
) -> None:
    w = Workdir(tmp_path, "batch.yaml")
    w.gate(GATE)
    proc = w.start("--json", "-c", str(CONCURRENCY))
    # Items 0..GATE-1 succeed; the next CONCURRENCY items start and wait at the gate.
    wait_for(
        proc,
        lambda: len(w.item_successes()) >= GATE and len(w.calls()) >= 1 + GATE + CONCURRENCY,
        "the batch to reach the gate",
    )
    proc.send_signal(sig)
    wait_for(proc, lambda: "interrupted" in w.stderr(), "flowrun to see the signal")
    w.release()  # the running items may now finish: they must, and no new item may start
    first = finish(proc, w)

    assert first.code == 130, first
    doc = first.json()
    assert doc["status"] == "cancelled"
    assert doc["nodes"]["start"]["status"] == "succeeded"
    assert doc["nodes"]["total"]["status"] == "pending"  # never started
    assert doc["nodes"]["items"]["status"] != "succeeded"
    done_first = GATE + CONCURRENCY
    assert doc["nodes"]["items"]["items"] == {
        "total": N_ITEMS,
        "succeeded": done_first,
        "failed": 0,
    }
    events = w.read_events()
    assert events[-1]["event"] == "run_finished"
    assert events[-1]["status"] == "cancelled"
    assert "Traceback" not in first.stderr

    # Items running when the signal came were allowed to finish, and none was called twice.
    assert work_calls(w.calls()) == Counter(range(done_first))
    assert {e["index"] for e in w.item_successes()} == set(range(done_first))

    (run,) = w.runs_json()
    assert run["run_id"] == doc["runId"]
    assert run["status"] == "cancelled"

    second = w.run("--resume", "latest", "--json", "-c", str(CONCURRENCY))
    assert second.code == 0, second
    result = second.json()
    assert result["runId"] == doc["runId"]
    assert result["status"] == "completed"
    assert result["context"]["results"] == expected_results(N_ITEMS)
    assert result["context"]["total"] == sum(expected_results(N_ITEMS))
    assert result["nodes"]["items"]["items"] == {
        "total": N_ITEMS,
        "succeeded": N_ITEMS,
        "failed": 0,
    }

    calls = w.calls()
    assert calls.count("numbers") == 1  # the upstream node is not run again
    assert calls.count("total") == 1
    assert work_calls(calls) == Counter(range(N_ITEMS))  # every item exactly once in total
    assert w.runs_json()[0]["status"] == "completed"


# -- 2: kill -9 --------------------------------------------------------------------------------


def test_kill_9_loses_at_most_the_commit_window(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "batch.yaml")
    w.gate(40)  # never released in this process: it cannot finish before the kill
    proc = w.start("-c", str(CONCURRENCY))
    wait_for(proc, lambda: len(w.item_successes()) >= 20, "20 items succeeded")
    proc.kill()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    w.release()
    called_first = work_calls(w.calls())
    finished_first = {e["index"] for e in w.item_successes()}

    (run,) = w.runs_json()
    assert run["status"] == "interrupted"  # no process holds it, and it never finished
    resumed = w.run("--resume", run["run_id"], "--json", "-c", str(CONCURRENCY))
    assert resumed.code == 0, resumed
    doc = resumed.json()
    assert doc["status"] == "completed"
    assert doc["context"]["results"] == expected_results(N_ITEMS)

    calls = w.calls()
    counts = work_calls(calls)
    assert set(counts) == set(range(N_ITEMS))
    assert calls.count("numbers") == 1  # finished long before the kill: committed
    assert calls.count("total") == 1
    twice = sorted(i for i, c in counts.items() if c > 1)
    assert max(counts.values()) <= 2
    assert set(twice) <= set(called_first)  # only work the first process had started
    duplicates = sum(counts.values()) - N_ITEMS
    # In flight at the kill (<= CONCURRENCY) plus those finished inside the commit window
    assert duplicates <= CONCURRENCY + 10, (duplicates, twice)
    lost = len(finished_first & set(twice))
    print(
        f"kill -9: {len(finished_first)} items finished before the kill, "
        f"{duplicates} ran again ({lost} of them had finished), items {twice}"
    )


def test_kill_9_during_a_resume_then_resume_again(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "batch.yaml")
    w.gate(30)
    proc = w.start("-c", str(CONCURRENCY))
    wait_for(proc, lambda: len(w.item_successes()) >= 15, "15 items succeeded")
    proc.kill()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    (run,) = w.runs_json()

    w.gate(N_ITEMS - CONCURRENCY)
    seen = len(w.item_successes())
    proc = w.start("-c", str(CONCURRENCY), "--resume", run["run_id"])
    wait_for(proc, lambda: len(w.item_successes()) >= seen + 15, "15 more items succeeded")
    proc.kill()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert w.runs_json()[0]["status"] == "interrupted"
    w.release()

    final = w.run("--resume", "latest", "--json", "-c", str(CONCURRENCY))
    assert final.code == 0, final
    doc = final.json()
    assert doc["runId"] == run["run_id"]
    assert doc["context"]["results"] == expected_results(N_ITEMS)
    counts = work_calls(w.calls())
    assert set(counts) == set(range(N_ITEMS))
    duplicates = sum(counts.values()) - N_ITEMS
    assert duplicates <= 2 * (CONCURRENCY + 10), counts
    print(f"kill -9 twice: {duplicates} items ran again")
    assert w.calls().count("numbers") == 1
    assert w.calls().count("total") == 1
    assert w.runs_json()[0]["status"] == "completed"


DAG_NODES = 2000
DAG_GATE = 1200  # nodes from this index on wait for the go-ahead in the first process


def committed_nodes(w: Workdir) -> set[str]:
    """The task nodes the store committed as succeeded (read after the writer died)."""
    (run_dir,) = (w.state / "runs").iterdir()
    conn = sqlite3.connect(run_dir / "state.db")
    try:
        rows = conn.execute("SELECT node FROM nodes WHERE status = 'succeeded'").fetchall()
    finally:
        conn.close()
    return {node for (node,) in rows}


@pytest.mark.timeout(360)  # its own waits allow 240 s to reach the gate on a busy machine
def test_kill_9_during_a_2000_node_dag_then_resume_reruns_no_committed_node(
    tmp_path: Path,
) -> None:
    """Task records are committed in groups: a kill -9 may lose the uncommitted group (those
    nodes run again), never a committed node, and the resumed run ends as a fresh one would."""
    lines = ["id: wide-dag", "nodes:"]
    for i in range(DAG_NODES):
        lines += [f"  - id: t{i}", "    uses: durable_nodes.marked", f"    params: {{i: {i}}}"]
    (tmp_path / "dag.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copy(DURABLE / "batch.yaml", tmp_path / "batch.yaml")  # Workdir copies one
    w = Workdir(tmp_path, "batch.yaml")
    w.blueprint = "dag.yaml"
    markers = tmp_path / "markers"
    markers.mkdir()
    w.env["FLOWRUN_TEST_MARKERS"] = str(markers)
    w.gate(DAG_GATE)

    def succeeded() -> int:
        return sum(1 for e in w.read_events() if e["event"] == "node_succeeded")

    proc = w.start("-c", str(CONCURRENCY))
    wait_for(proc, lambda: succeeded() >= DAG_GATE, f"{DAG_GATE} nodes succeeded", timeout=240)
    proc.kill()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    committed = committed_nodes(w)
    assert committed, "nothing was committed before the kill"
    assert len(committed) < DAG_NODES  # the gated nodes were still running
    w.release()

    (run,) = w.runs_json()
    assert run["status"] == "interrupted"
    resumed = w.run("--resume", run["run_id"], "--json", "-c", str(CONCURRENCY))
    assert resumed.code == 0, resumed
    doc = resumed.json()
    assert doc["status"] == "completed"
    assert {f"t{i}": doc["context"][f"t{i}"] for i in range(DAG_NODES)} == {
        f"t{i}": i for i in range(DAG_NODES)
    }
    assert all(doc["nodes"][f"t{i}"]["status"] == "succeeded" for i in range(DAG_NODES))

    calls = Counter(p.name.split(".")[0] for p in markers.iterdir())
    assert set(calls) == {f"t{i}" for i in range(DAG_NODES)}  # every node ran
    again = {node for node, n in calls.items() if n > 1}
    assert not again & committed, sorted(again & committed)  # no committed node ran again
    assert max(calls.values()) == 2
    print(f"kill -9 in a {DAG_NODES}-node DAG: {len(committed)} committed, {len(again)} ran again")


# -- 3 and 6: a failed item, the fix, resume ---------------------------------------------------


def fail_once(w: Workdir) -> dict[str, Any]:
    """Run failing.yaml with the flag set: item FAIL_INDEX fails, every other item succeeds."""
    w.flag.touch()
    before = len(w.calls())
    first = w.run("--json")
    assert first.code == 1, first
    doc = first.json()
    assert doc["status"] == "failed"
    assert doc["errors"] == [
        {"node": f"items[{FAIL_INDEX}]", "type": "ValueError", "message": "item 5 is broken"}
    ]
    assert doc["nodes"]["items"]["items"] == {"total": N_FAILING, "succeeded": 11, "failed": 1}
    assert doc["nodes"]["total"]["status"] == "pending"
    calls = w.calls()[before:]
    assert calls.count("numbers") == 1
    assert "total" not in calls
    assert work_calls(calls) == Counter(range(N_FAILING))
    return doc


def test_resume_after_a_fix_reruns_only_the_failed_item_and_downstream(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "failing.yaml")
    first = fail_once(w)
    assert w.runs_json()[0]["status"] == "failed"
    w.flag.unlink()  # the fix
    before = len(w.calls())

    resumed = w.run("--resume", "latest", "--json")
    assert resumed.code == 0, resumed
    doc = resumed.json()
    assert doc["runId"] == first["runId"]
    assert doc["status"] == "completed"
    assert doc["errors"] == []
    assert doc["context"]["results"] == expected_results(N_FAILING)  # in item order
    assert doc["context"]["total"] == sum(expected_results(N_FAILING))
    assert w.calls()[before:] == [f"work {FAIL_INDEX}", "total"]
    assert w.runs_json()[0]["status"] == "completed"


def test_resume_refuses_a_changed_blueprint_unless_allowed(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "failing.yaml")
    fail_once(w)
    w.flag.unlink()
    bp = tmp_path / "failing.yaml"
    bp.write_text(bp.read_text() + "# edited after the run\n")
    before = len(w.calls())

    refused = w.run("--resume", "latest")
    assert refused.code == 2, refused
    assert_no_traceback(refused)
    assert "changed since run" in refused.stderr
    assert "--allow-changed" in refused.stderr
    assert len(w.calls()) == before  # no node ran

    allowed = w.run("--resume", "latest", "--allow-changed", "--json")
    assert allowed.code == 0, allowed
    assert allowed.json()["context"]["results"] == expected_results(N_FAILING)
    assert w.calls()[before:] == [f"work {FAIL_INDEX}", "total"]


# -- 5: the second Ctrl-C ----------------------------------------------------------------------


def test_first_sigint_abandons_a_stuck_node_after_the_grace_period(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "stuck.yaml")
    proc = w.start("--json")
    wait_for(proc, lambda: "stuck" in w.calls(), "the stuck node started")

    busy = w.run("--resume", "latest")  # the run is still being recorded by `proc`
    assert busy.code == 2, busy
    assert_no_traceback(busy)
    assert "in use by another flowrun process" in busy.stderr
    assert w.runs_json()[0]["status"] == "running"

    proc.send_signal(signal.SIGINT)
    result = finish(proc, w, timeout=10)  # the node would sleep 30 s
    assert result.code == 130, result
    doc = result.json()
    assert doc["status"] == "cancelled"
    assert doc["nodes"]["stuck"]["status"] == "pending"
    assert w.calls() == ["stuck"]
    assert w.read_events()[-1]["event"] == "run_finished"
    assert w.runs_json()[0]["status"] == "cancelled"


def test_second_sigint_exits_at_once_while_a_node_is_stuck(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "stuck.yaml")
    proc = w.start()
    wait_for(proc, lambda: "stuck" in w.calls(), "the stuck node started")
    proc.send_signal(signal.SIGINT)
    wait_for(proc, lambda: "interrupted" in w.stderr(), "the first SIGINT was seen")
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=10)  # the node would sleep 30 s
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("a second SIGINT did not end the run")
    assert code == 130, w.stderr()
    assert "Traceback" not in w.stderr()
    # It exited at once: not through the graceful path, which records the run's end.
    assert "run_finished" not in {e["event"] for e in w.read_events()}
    (run,) = w.runs_json()
    assert run["status"] == "interrupted"


# -- 7: flowrun runs ---------------------------------------------------------------------------


def test_runs_lists_run_ids_and_statuses(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "failing.yaml")
    ok = w.run("--json")
    assert ok.code == 0, ok
    completed_id = ok.json()["runId"]
    failed_id = fail_once(w)["runId"]

    runs = w.runs_json()
    statuses = {r["run_id"]: r["status"] for r in runs}
    assert statuses == {completed_id: "completed", failed_id: "failed"}
    assert [r["run_id"] for r in runs] == [failed_id, completed_id]  # newest first
    assert all(r["blueprint_id"] == "durable-failing" for r in runs)

    table = w.cli("runs")
    assert table.code == 0, table
    lines = table.stdout.splitlines()
    for run_id, status in statuses.items():
        (line,) = [ln for ln in lines if run_id in ln]
        assert status in line.split()


def test_runs_table_shows_whole_run_ids_at_80_columns(tmp_path: Path) -> None:
    """The ids are what `--resume` takes: an ellipsis in them makes the list useless."""
    w = Workdir(tmp_path, "failing.yaml")
    ok = w.run("--json")
    assert ok.code == 0, ok
    run_id = ok.json()["runId"]
    table = w.cli("runs", env={**w.env, "COLUMNS": "80"})
    assert table.code == 0, table
    assert run_id in table.stdout, table.stdout


def test_resume_latest_means_the_latest_run_of_this_blueprint(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "failing.yaml")
    first = fail_once(w)
    w.flag.unlink()
    shutil.copy(DURABLE / "opaque.yaml", tmp_path / "opaque.yaml")
    opaque = subprocess.run(
        [sys.executable, "-m", "flowrun", "run", "opaque.yaml", "--state-dir", str(w.state),
         "--no-progress"],
        cwd=tmp_path, env=w.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert opaque.returncode == 1, opaque.stderr
    assert w.runs_json()[0]["blueprint_id"] == "durable-opaque"  # the newest run
    before = len(w.calls())

    resumed = w.run("--resume", "latest", "--json")
    assert "changed since" not in resumed.stderr  # failing.yaml did not change
    assert resumed.code == 0, resumed
    assert resumed.json()["runId"] == first["runId"]
    assert w.calls()[before:] == [f"work {FAIL_INDEX}", "total"]


# -- 8: broken state ---------------------------------------------------------------------------


def test_a_corrupt_state_db_is_a_clear_error(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "batch.yaml")
    run_dir = w.state / "runs" / "20260101-000000-dead"
    run_dir.mkdir(parents=True)
    (run_dir / "state.db").write_bytes(b"this is not a database\n" * 200)

    for target in ("20260101-000000-dead", "latest"):
        result = w.run("--resume", target)
        assert result.code == 2, result
        assert_no_traceback(result)
        assert result.stderr.startswith("flowrun: error:"), result
        assert "state.db" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result
    assert w.calls() == []  # no node ran

    listed = w.cli("runs", "--json")
    assert listed.code == 0, listed
    (run,) = json.loads(listed.stdout)
    assert run["run_id"] == "20260101-000000-dead"
    assert run["status"] == "corrupt"
    assert run["error"]


def test_an_empty_state_db_is_a_clear_error(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "batch.yaml")
    run_dir = w.state / "runs" / "20260101-000000-beef"
    run_dir.mkdir(parents=True)
    (run_dir / "state.db").write_bytes(b"")
    result = w.run("--resume", "20260101-000000-beef")
    assert result.code == 2, result
    assert_no_traceback(result)
    assert "not a flowrun run" in result.stderr
    assert w.calls() == []


def test_a_missing_run_id_is_a_clear_error(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "failing.yaml")
    nothing = w.run("--resume", "latest")
    assert nothing.code == 2, nothing
    assert_no_traceback(nothing)
    assert "no run to resume" in nothing.stderr

    ok = w.run("--json")
    assert ok.code == 0, ok
    run_id = ok.json()["runId"]
    before = len(w.calls())
    missing = w.run("--resume", "20990101-000000-0000")
    assert missing.code == 2, missing
    assert_no_traceback(missing)
    assert "no run '20990101-000000-0000'" in missing.stderr
    assert run_id in missing.stderr  # the known runs are named
    bad = w.run("--resume", "../elsewhere")
    assert bad.code == 2, bad
    assert_no_traceback(bad)
    assert "invalid run id" in bad.stderr
    assert len(w.calls()) == before


def test_runs_on_an_unreadable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "failing.yaml")
    w.state.write_text("a file, not a directory\n")
    result = w.cli("runs")
    assert result.code == 2, result
    assert_no_traceback(result)
    assert result.stderr.startswith("flowrun: error:"), result


# -- 9: outputs that are not JSON --------------------------------------------------------------


def test_an_output_that_is_not_json_fails_its_node_naming_the_type(tmp_path: Path) -> None:
    w = Workdir(tmp_path, "opaque.yaml")
    result = w.run("--json")
    assert result.code == 1, result
    doc = result.json()
    assert doc["status"] == "failed"
    assert doc["nodes"]["make"]["status"] == "failed"
    assert doc["nodes"]["after"]["status"] == "pending"
    (error,) = doc["errors"]
    assert error["node"] == "make"
    assert error["type"] == "TypeError"
    assert "Opaque" in error["message"]
    assert "JSON" in error["message"]
    assert "make" not in doc["context"]
    assert w.runs_json()[0]["status"] == "failed"
