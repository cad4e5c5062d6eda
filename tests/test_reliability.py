"""Hostile input, failing storage and deep graphs: the run always ends with its document.

Each test drives the CLI as a user would and asserts what comes back: the exit code, the
`--json` document, and that no flowrun traceback is printed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowrun.store import writer
from tests import nodes
from tests.test_cli import FAILING, cli, write

# Deeper than the recursion limit (1,000); tests/test_scheduler.py drives 10,000 by hand,
# without the schema check of a 10,000-node file (seconds) in the way.
CHAIN = 2_000


def chain(tmp_path: Path, head: dict[str, Any], first_edge: dict[str, Any]) -> Path:
    """A JSON blueprint of `CHAIN` nodes in a line after `head`."""
    nodes = [head] + [{"id": f"n{i}", "uses": "tests.nodes.ident"} for i in range(CHAIN)]
    edges = [{"source": "head", "target": "n0", **first_edge}]
    edges += [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(CHAIN - 1)]
    doc = {"id": "chain", "nodes": nodes, "edges": edges}
    return write(tmp_path, "chain.json", json.dumps(doc))


def test_a_long_chain_whose_head_fails_ends_with_its_document(tmp_path: Path) -> None:
    path = chain(tmp_path, {"id": "head", "uses": "tests.nodes.always_fails"}, {})
    state = tmp_path / "state"
    out = cli("run", path, "--json", "--no-progress", "--state-dir", state, traceback=True)
    assert out.code == 1, out
    doc = out.json()
    assert doc["status"] == "failed"
    assert doc["nodes"]["head"]["status"] == "failed"
    assert doc["nodes"][f"n{CHAIN - 1}"]["status"] == "pending"
    again = cli("run", path, "--json", "--no-progress", "--state-dir", state,
                "--resume", "latest", traceback=True)  # fmt: skip
    assert again.code == 1, again
    assert again.json()["nodes"][f"n{CHAIN - 1}"]["status"] == "pending"


def test_a_long_chain_whose_first_edge_is_not_taken_is_skipped(tmp_path: Path) -> None:
    head = {"id": "head", "uses": "tests.nodes.route", "params": {"to": "left"}}
    path = chain(tmp_path, head, {"action": "right"})
    state = tmp_path / "state"
    out = cli("run", path, "--json", "--no-progress", "--state-dir", state)
    assert out.code == 0, out
    nodes = out.json()["nodes"]
    assert nodes["head"]["status"] == "succeeded"
    assert {nodes[f"n{i}"]["status"] for i in range(CHAIN)} == {"skipped"}
    again = cli("run", path, "--json", "--no-progress", "--state-dir", state, "--resume", "latest")
    assert again.code == 0, again
    assert again.json()["nodes"][f"n{CHAIN - 1}"]["status"] == "skipped"


# -- a store that cannot write ----------------------------------------------------------------

PACED = """\
id: paced
nodes:
  - {id: start, uses: tests.nodes.numbers, params: {n: 400}}
  - id: work
    batch: {uses: tests.nodes.paced, inputKey: start}
edges:
  - {source: start, target: work_scatter}
"""


class FullDisk:
    """A run's connection whose writes of finished work fail after `budget` of them, as on a
    disk that just filled up (the error sqlite3 raises then)."""

    def __init__(self, conn: sqlite3.Connection, budget: int) -> None:
        self._conn = conn
        self._budget = budget

    def execute(self, sql: str, *args: Any) -> Any:
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> Any:
        if "item_chunks" in sql or "INTO nodes" in sql:
            self._budget -= 1
            if self._budget < 0:
                raise sqlite3.OperationalError("database or disk is full")
        return self._conn.executemany(sql, rows)

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        self._conn.close()


def item_calls() -> Counter[str]:
    return Counter({k: v for k, v in nodes.calls.items() if k.startswith("item-")})


def test_a_store_that_cannot_write_stops_the_run_and_it_resumes_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "paced.yaml", PACED)
    state = tmp_path / "state"
    real = writer.prepared
    monkeypatch.setattr(writer, "prepared", lambda *a, **kw: FullDisk(real(*a, **kw), 2))
    nodes.reset()
    out = cli("run", path, "-c", "2", "--json", "--no-progress", "--state-dir", state)
    assert out.code == 1, out
    doc = out.json()
    assert doc["status"] == "failed"
    [error] = [e for e in doc["errors"] if e["type"] == "StateError"]
    assert error["node"] == ""
    assert "database or disk is full" in error["message"]
    assert "--resume" in error["message"]
    assert "database or disk is full" in out.stderr
    first = item_calls()
    assert sum(first.values()) < 100  # stopped promptly: no new work after the failure
    monkeypatch.setattr(writer, "prepared", real)  # space is back
    nodes.reset()
    again = cli("run", path, "--json", "--no-progress", "--state-dir", state, "--resume", "latest")
    assert again.code == 0, again
    assert again.json()["context"]["work"] == [10 * (i + 1) for i in range(400)]
    rerun = item_calls()
    assert set(first) | set(rerun) == {f"item-{10 * (i + 1)}" for i in range(400)}
    assert set(first) - set(rerun)  # what was committed before the failure is not run again


def test_a_result_action_that_is_not_a_string_fails_its_node(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "action.yaml",
        "id: action\nnodes:\n  - {id: a, uses: tests.nodes.bad_action}\n"
        "  - {id: b, uses: tests.nodes.ident}\nedges:\n  - {source: a, target: b, action: a}\n",
    )
    out = cli("run", path, "--json", "--no-progress", "--state-dir", tmp_path / "s")
    assert out.code == 1, out
    [error] = out.json()["errors"]
    assert error["node"] == "a" and error["type"] == "TypeError"
    assert "action must be a string or None, not list" in error["message"]
    again = cli("run", path, "--json", "--no-progress", "--state-dir", tmp_path / "s",
                "--resume", "latest")  # fmt: skip
    assert again.code == 1, again  # the failure was recorded: the run resumes


PADDED = """\
id: padded
nodes:
  - {id: start, uses: tests.nodes.numbers, params: {n: 300}}
  - id: work
    batch: {uses: tests.nodes.padded, inputKey: start}
edges:
  - {source: start, target: work_scatter}
"""


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """A state directory on a disk that fills up part way through a run; calling the fixture's
    value gives the space back. A real 1 MiB tmpfs when the tests run as root (and may mount),
    else the fake error of `FullDisk` at the store's seam."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = os.geteuid() == 0 and _mount(mnt, "size=1m")
    if not mounted:
        real = writer.prepared
        monkeypatch.setattr(writer, "prepared", lambda *a, **kw: FullDisk(real(*a, **kw), 20))
    try:
        yield (
            (lambda: _mount(mnt, "remount,size=64m"))
            if mounted
            else (lambda: monkeypatch.setattr(writer, "prepared", real))
        )
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def _mount(mnt: Path, options: str) -> bool:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
                          capture_output=True, check=False)  # fmt: skip
    return done.returncode == 0


def test_a_full_disk_stops_the_run_with_its_document(
    tmp_path: Path, small_disk: Callable[[], None]
) -> None:
    path = write(tmp_path, "padded.yaml", PADDED)
    state = tmp_path / "disk" / "state"
    nodes.reset()
    out = cli("run", path, "-c", "2", "--json", "--no-progress", "--state-dir", state)
    assert out.code == 1, out
    doc = out.json()
    assert doc["status"] == "failed"
    assert [e["type"] for e in doc["errors"]] == ["StateError"]
    assert "full" in doc["errors"][0]["message"]
    assert sum(item_calls().values()) < 300
    small_disk()
    again = cli("run", path, "--json", "--no-progress", "--state-dir", state, "--resume", "latest")
    assert again.code == 0, again
    assert len(again.json()["context"]["work"]) == 300


# -- a scalar alias bomb ------------------------------------------------------------------------


def test_one_big_string_aliased_many_times_is_refused_at_load(tmp_path: Path) -> None:
    big = "x" * 1_000_000
    copies = ", ".join(["*big"] * 2_500)
    path = write(
        tmp_path,
        "bomb.yaml",
        f"id: bomb\ncontext:\n  big: &big {big}\n  copies: [{copies}]\n"
        "nodes:\n  - {id: a, uses: tests.nodes.ident}\n",
    )
    for args in (["validate"], ["run", "--state-dir", str(tmp_path / "s")]):
        out = cli(*args, path)
        assert out.code == 2, out
        [problem] = out.problems()
        assert problem["code"] == "too-much-text"
        assert (problem["line"], problem["path"]) == (
            "3",
            "$.context.copies[66]",
        )  # the anchor, reached again
    assert not (tmp_path / "s").exists()  # refused before any run was created


# -- one item leaving the hard way --------------------------------------------------------------


def escaping(tmp_path: Path, n: int, how: str) -> Path:
    """A batch of `n` items whose item `n // 2` leaves `how`; one failure is allowed."""
    return write(
        tmp_path,
        "escape.yaml",
        f"id: escape\nnodes:\n  - {{id: start, uses: tests.nodes.numbers, params: {{n: {n}}}}}\n"
        f"  - id: work\n    batch:\n      uses: tests.nodes.escape_on\n      inputKey: start\n"
        f"      params: {{bad: {10 * (n // 2 + 1)}, how: {how}}}\n      maxFailures: 1\n"
        f"edges:\n  - {{source: start, target: work_scatter}}\n",
    )


@pytest.mark.parametrize("how", ["exit", "interrupt", "escape"])
def test_one_item_raising_a_base_exception_fails_alone(how: str, tmp_path: Path) -> None:
    path = escaping(tmp_path, 1000, how)
    out = cli("run", path, "--json", "--no-progress", "--state-dir", tmp_path / "s", traceback=True)
    assert 'tests/nodes.py", line' in out.stderr and "flowrun/" not in out.stderr
    assert out.code == 0, out
    doc = out.json()
    assert doc["nodes"]["work"]["items"] == {"total": 1000, "succeeded": 999, "failed": 1}
    [error] = doc["errors"]
    assert error["node"] == "work[500]"
    assert error["type"] == {"exit": "SystemExit", "interrupt": "KeyboardInterrupt",
                             "escape": "Escape"}[how]  # fmt: skip


def test_one_item_killing_its_worker_process_fails_alone(tmp_path: Path) -> None:
    path = escaping(tmp_path, 400, "kill")
    out = cli("run", path, "--json", "--no-progress", "--state-dir", tmp_path / "s",
              "--executor", "process", "-c", "2")  # fmt: skip
    assert out.code == 0, out
    doc = out.json()
    assert doc["nodes"]["work"]["items"] == {"total": 400, "succeeded": 399, "failed": 1}
    assert [(e["node"], e["type"]) for e in doc["errors"]] == [("work[200]", "BrokenProcessPool")]
    assert doc["context"]["work"][199:202] == [2000, None, 2020]


# -- failures that must not be retried -----------------------------------------------------------


def retrying(tmp_path: Path, error: str, retry_on: str | None) -> Path:
    config = "{maxRetries: 3" + (f", retryOn: {retry_on}" if retry_on else "") + "}"
    return write(
        tmp_path,
        "retry.yaml",
        "id: retry\nnodes:\n  - id: call\n    uses: tests.nodes.fails_with\n"
        f"    params: {{error: {error}}}\n    config: {config}\n",
    )


@pytest.mark.parametrize(
    ("error", "retry_on", "attempts"),
    [
        ("FatalError", None, 1),  # never retried
        ("FatalError", "[Exception]", 1),
        ("ValueError", None, 4),  # without retryOn every failure is retried
        ("ConnectionError", "[ConnectionError, TimeoutError]", 4),
        ("ConnectionRefusedError", "[ConnectionError]", 4),  # a subclass, as `except` matches
        ("ValueError", "[ConnectionError, TimeoutError]", 1),
        ("QuotaError", "[QuotaError]", 4),  # a class of the node's module
        ("QuotaError", "[tests.nodes.QuotaError]", 4),
    ],
)
def test_retry_on_and_fatal_errors_decide_what_is_retried(
    error: str, retry_on: str | None, attempts: int, tmp_path: Path
) -> None:
    path = retrying(tmp_path, error, retry_on)
    assert cli("validate", path).code == 0
    nodes.reset()
    out = cli("run", path, "--json", "--no-progress", "--state-dir", tmp_path / "s",
              traceback=True)  # fmt: skip
    assert out.code == 1, out
    assert out.json()["nodes"]["call"]["attempts"] == attempts
    assert nodes.calls["call"] == attempts
    assert out.json()["errors"][0]["type"] == error


def test_retry_on_works_on_the_process_executor(tmp_path: Path) -> None:
    path = retrying(tmp_path, "ValueError", "[ConnectionError]")
    out = cli("run", path, "--json", "--no-progress", "--state-dir", tmp_path / "s",
              "--executor", "process", traceback=True)  # fmt: skip
    assert out.code == 1, out
    assert out.json()["nodes"]["call"]["attempts"] == 1


def test_validate_names_a_retry_on_entry_that_is_no_exception(tmp_path: Path) -> None:
    path = retrying(tmp_path, "ValueError", "[ConectionError, QuotaEror, os.nothing, len]")
    out = cli("validate", path)
    assert out.code == 2, out
    found = [(p["path"], p["code"]) for p in out.problems()]
    assert found == [
        (f"$.nodes[0].config.retryOn[{i}]", "resolve.unknown-exception") for i in range(4)
    ]
    assert "(did you mean 'ConnectionError'?)" in out.stdout
    assert "module 'tests.nodes' (did you mean 'QuotaError'?)" in out.stdout


# -- what flows between nodes is what the store gives back -------------------------------------

ROUND_TRIP = """\
id: round-trip
nodes:
  - {id: keys, uses: tests.nodes.int_keys}
  - {id: types, uses: tests.nodes.key_types}
  - {id: list, uses: tests.nodes.numbers}
  - {id: mutate, uses: tests.nodes.mutate}
  - id: each
    batch: {uses: tests.nodes.mutate, inputKey: lists}
edges:
  - {source: keys, target: types}
  - {source: list, target: mutate}
context: {lists: [[1], [2]]}
"""


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_the_next_node_sees_what_a_resume_would_give_it(executor: str, tmp_path: Path) -> None:
    path = write(tmp_path, "rt.yaml", ROUND_TRIP)
    state = tmp_path / "s"
    out = cli("run", path, "--json", "--no-progress", "--state-dir", state, "--executor", executor)
    assert out.code == 0, out
    ctx = out.json()["context"]
    assert ctx["types"] == ["str"]  # int keys became strings, as the store gives them back
    assert ctx["list"] == [10, 20, 30]  # mutate changed its own copy only
    assert ctx["mutate"] == 4
    assert ctx["lists"] == [[1], [2]] and ctx["each"] == [2, 2]


# -- state readable by its owner only -----------------------------------------------------------


def test_state_is_created_for_its_owner_only(tmp_path: Path) -> None:
    path = write(tmp_path, "rt.yaml", ROUND_TRIP)
    state = tmp_path / "state"
    old = os.umask(0o022)
    try:
        out = cli("run", path, "--json", "--no-progress", "--state-dir", state)
    finally:
        os.umask(old)
    assert out.code == 0, out
    [run_dir] = (state / "runs").iterdir()
    for d in (state, state / "runs", run_dir):
        assert d.stat().st_mode & 0o777 == 0o700, d
    files = list(run_dir.iterdir())
    assert "state.db" in {f.name for f in files}
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o600, f


# -- validate imports the node modules -----------------------------------------------------------


def hostile_module(tmp_path: Path, body: str, name: str) -> Path:
    """A blueprint whose node module `name` runs `body` on import (a name per test: Python
    caches an imported module)."""
    write(tmp_path, f"{name}.py", body + "\n\ndef node(x=None):\n    return x\n")
    return write(
        tmp_path, "hostile.yaml", f"id: hostile\nnodes:\n  - {{id: a, uses: {name}.node}}\n"
    )


def test_a_module_exiting_on_import_is_a_problem_not_the_exit_code(tmp_path: Path) -> None:
    path = hostile_module(tmp_path, "raise SystemExit(7)", "exits_mod")
    out = cli("validate", path)
    assert out.code == 2, out
    [problem] = out.problems()
    assert problem["code"] == "resolve.import-error"
    assert "importing 'exits_mod' raised SystemExit: 7" in problem["msg"]


def test_a_module_printing_on_import_leaves_json_output_intact(tmp_path: Path) -> None:
    path = hostile_module(tmp_path, "print('hello from the module')", "prints_mod")
    out = cli("validate", "--format", "json", path)
    assert out.code == 0, out
    assert json.loads(out.stdout) == []
    assert "hello from the module" in out.stderr
    run = cli("run", path, "--json", "--no-progress", "--state-dir", tmp_path / "s")
    assert run.code == 0, run
    assert run.json()["status"] == "completed"


def test_validate_no_import_runs_no_module_code(tmp_path: Path) -> None:
    path = hostile_module(tmp_path, "raise SystemExit(7)", "never_imported_mod")
    out = cli("validate", "--no-import", path)
    assert out.code == 0, out
    assert out.stdout == f"{path}: ok\n"


# -- a run killed while it is being created -------------------------------------------------------


def test_resume_latest_skips_an_unusable_run_and_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, "failing.yaml", FAILING)
    state = tmp_path / "state"
    first = cli("run", path, "--json", "--no-progress", "--state-dir", state, traceback=True)
    assert first.code == 1, first
    # What a kill during the creation of a run used to leave: a directory, an empty database.
    broken = state / "runs" / "29990101-000000-dead"
    broken.mkdir()
    (broken / "state.db").write_bytes(b"")
    again = cli("run", path, "--json", "--no-progress", "--state-dir", state,
                "--resume", "latest", traceback=True)  # fmt: skip
    assert again.code == 1, again
    assert again.json()["runId"] == first.json()["runId"]
    assert "skipped run 29990101-000000-dead" in again.stderr


def test_a_run_is_visible_only_once_it_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "failing.yaml", FAILING)
    state = tmp_path / "state"

    class Killed(Exception):
        """Stands for a kill between the mkdir and the commit of the schema."""

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise Killed

    monkeypatch.setattr(writer, "prepared", killed)
    with pytest.raises(Killed):
        cli("run", path, "--no-progress", "--state-dir", state)
    assert [p.name[:5] for p in (state / "runs").iterdir()] == [".new-"]
    monkeypatch.undo()
    listed = cli("runs", "--state-dir", state, "--json")
    assert listed.code == 0 and json.loads(listed.stdout) == [], listed
    out = cli("run", path, "--json", "--no-progress", "--state-dir", state,
              "--resume", "latest")  # fmt: skip
    assert out.code == 2 and "holds no runs" in out.stderr, out


def test_resume_with_a_300_character_id_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "rt.yaml", ROUND_TRIP)
    state = tmp_path / "state"
    assert cli("run", path, "--no-progress", "--state-dir", state).code == 0
    out = cli("run", path, "--no-progress", "--state-dir", state, "--resume", "a" * 300)
    assert out.code == 2, out
    assert "longer than 128 characters" in out.stderr
