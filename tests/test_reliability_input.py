"""Hostile input and damaged state: a clear message and exit 2, never a traceback.

Each test drives the CLI as a user would (`tests.test_cli.cli`, which fails on any flowrun
traceback) with a blueprint, a `--context` file, a `--set` value or a state directory that
an attacker or an unlucky user could produce, and asserts the exit code and what is said.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowrun.model import MAX_DELAY, Config
from flowrun.store import db as store_db
from tests.test_cli import Out, cli, write


def problems(out: Out) -> list[tuple[str, str]]:
    """(code, path) of each problem printed."""
    return [(m["code"], m["path"]) for m in out.problems()]


def node_module(tmp_path: Path, name: str, body: str) -> None:
    """A module of node functions beside the blueprints of `tmp_path` (a name per test:
    Python caches an imported module)."""
    write(tmp_path, f"{name}.py", body)


# -- numbers ------------------------------------------------------------------------------------

HUGE = "9" * 400  # beyond a double: math.isfinite() raised OverflowError


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_an_integer_beyond_a_double_is_a_located_problem(fmt: str, tmp_path: Path) -> None:
    if fmt == "yaml":
        text = f"id: big\ncontext:\n  n: {HUGE}\nnodes:\n  - {{id: a, uses: tests.nodes.ident}}\n"
    else:
        text = (
            f'{{"id": "big",\n "context": {{"n": {HUGE}}},\n'
            ' "nodes": [{"id": "a", "uses": "tests.nodes.ident"}]}\n'
        )
    path = write(tmp_path, f"big.{fmt}", text)
    for args in (["validate"], ["run", "--state-dir", str(tmp_path / "s")]):
        out = cli(*args, path)
        assert out.code == 2, out
        [problem] = out.problems()
        assert (problem["code"], problem["path"], problem["line"]) == (
            "bad-number",
            "$.context.n",
            "3" if fmt == "yaml" else "2",
        )
        assert "(400 digits) is too large" in problem["msg"]
    assert not (tmp_path / "s").exists()


BOUNDED = """\
id: bounded
pools:
  p: {concurrency: 2000000000, burst: 2000000000}
nodes:
  - id: a
    uses: tests.nodes.ident
    config: {maxRetries: 100000000000000000000, retryDelay: 1e308, backoff: 1e308,
             timeout: 1e308, pool: p}
  - id: b
    batch: {uses: tests.nodes.ident, inputKey: a, concurrency: 2000000000,
            maxFailures: 2000000000}
  - id: c
    loop: {uses: tests.nodes.ident, while: "False", maxIterations: 2000000000, delay: 1e20}
edges:
  - {source: a, target: b_scatter}
"""


def test_absurd_numbers_in_config_are_bounded_by_the_schema(tmp_path: Path) -> None:
    path = write(tmp_path, "bounded.yaml", BOUNDED)
    out = cli("validate", path)
    assert out.code == 2, out
    expected = [
        "$.pools.p.concurrency",
        "$.pools.p.burst",
        "$.nodes[0].config.maxRetries",
        "$.nodes[0].config.retryDelay",
        "$.nodes[0].config.backoff",
        "$.nodes[0].config.timeout",
        "$.nodes[1].batch.concurrency",
        "$.nodes[1].batch.maxFailures",
        "$.nodes[2].loop.maxIterations",
        "$.nodes[2].loop.delay",
    ]
    assert sorted(problems(out)) == sorted(("schema.maximum", p) for p in expected)
    text = out.stdout
    assert "config.retryDelay: expected a duration of milliseconds <= 10,000,000,000" in text
    assert "config.maxRetries: expected an integer <= 1,000,000,000" in text
    # The schema is where the bounds live: `flowrun schema` shows them.
    schema = json.loads(cli("schema").stdout)["$defs"]
    assert schema["duration"]["else"]["maximum"] == 10_000_000_000
    assert schema["config"]["properties"]["maxRetries"]["maximum"] == 1_000_000_000


def test_a_string_duration_or_rate_out_of_range_is_a_located_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "strings.yaml",
        "id: strings\n"
        "pools: {slow: {rate: 0.0000001/h}, fast: {rate: 99999999999/s}}\n"
        "nodes:\n"
        "  - id: a\n"
        "    uses: tests.nodes.ident\n"
        "    config: {timeout: 9999999999999999999999h, retryDelay: 2778h}\n",
    )
    out = cli("validate", path)
    assert out.code == 2, out
    assert sorted(problems(out)) == [
        ("schema.duration", "$.nodes[0].config.retryDelay"),
        ("schema.duration", "$.nodes[0].config.timeout"),
        ("schema.rate", "$.pools.fast.rate"),
        ("schema.rate", "$.pools.slow.rate"),
    ]
    assert "'2778h' is too long: at most 10,000,000 s" in out.stdout


def test_a_retry_delay_never_overflows_however_many_retries() -> None:
    config = Config(max_retries=1_000_000_000, retry_delay=1.0, backoff=1000.0)
    assert config.delay_before(1_000_000_000) == MAX_DELAY  # float ** int raised OverflowError
    assert Config(retry_delay=0.0, backoff=1000.0).delay_before(10_000) == 0.0


# -- input paths and ids ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "says"),
    [("²", "'²' is not an index"), ("1" * 4301, "has 4,301 digits (at most 100)")],
)
def test_an_input_path_index_must_be_short_ascii_digits(
    index: str, says: str, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "index.yaml",
        "id: index\ncontext: {xs: [1, 2, 3]}\nnodes:\n"
        f"  - {{id: a, uses: tests.nodes.ident, inputs: 'xs.{index}'}}\n"
        "  - id: b\n"
        f"    batch: {{uses: tests.nodes.ident, inputKey: 'xs.{index}'}}\n",
    )
    for args in (["validate"], ["run", "--state-dir", str(tmp_path / "s")]):
        out = cli(*args, path)
        assert out.code == 2, out
        assert problems(out) == [
            ("bad-index", "$.nodes[0].inputs"),
            ("bad-index", "$.nodes[1].batch.inputKey"),
        ]
        assert says in out.stdout + out.stderr
    assert not (tmp_path / "s").exists()


def test_ids_ending_in_a_newline_are_refused(tmp_path: Path) -> None:
    doc = {
        "id": "nl\n",
        "nodes": [
            {"id": "a\n", "uses": "tests.nodes.ident\n", "config": {"pool": "p\n"}},
            {"id": "b", "uses": "tests.nodes.ident", "config": {"retryOn": ["ValueError\n"]}},
        ],
        "edges": [{"source": "a\n", "target": "b"}],
        "pools": {"p\n": {"rate": "1/s\n"}},
    }
    path = write(tmp_path, "nl.json", json.dumps(doc))
    out = cli("validate", path)
    assert out.code == 2, out
    found = problems(out)
    for where in (
        "$.id",
        "$.nodes[0].id",
        "$.nodes[0].uses",
        "$.nodes[0].config.pool",
        "$.nodes[1].config.retryOn[0]",
        "$.edges[0].source",
        "$.pools",
        "$.pools['p\\n'].rate",
    ):
        assert ("schema.pattern", where) in found, (where, out)
    assert "expected an id made of letters, digits, '_', '.' or '-', found string 'nl\\n'" in (
        out.stdout
    )
    assert "pools: expected an id made of letters" in out.stdout
    assert "retryOn[0]: expected an exception class name such as 'ConnectionError'" in out.stdout


# -- deep nesting -------------------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def test_a_context_file_nested_too_deep_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "deep.yaml",
        "id: deep\ncontext: {d: null}\nnodes:\n  - {id: a, uses: tests.nodes.ident, inputs: d}\n",
    )
    context = write(tmp_path, "ctx.json", '{"d": ' + nested(600) + "}")
    out = cli("run", path, "--context", context, "--state-dir", tmp_path / "s")
    assert out.code == 2, out
    assert "ctx.json:1:" in out.stderr
    assert "values are nested more than 256 levels deep [too-deep at $.d[0][0]" in out.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_a_blueprint_nested_too_deep_is_a_located_problem(fmt: str, tmp_path: Path) -> None:
    if fmt == "yaml":
        text = f"id: deep\ncontext:\n  d: {nested(600)}\nnodes:\n  - {{id: a, uses: a.b}}\n"
    else:
        text = json.dumps(
            {"id": "deep", "nodes": [{"id": "a", "uses": "a.b", "params": {"p": "X"}}]}
        ).replace('"X"', nested(600))
    path = write(tmp_path, f"deep.{fmt}", text)
    out = cli("validate", path)
    assert out.code == 2, out
    [problem] = out.problems()
    assert problem["code"] == "too-deep"
    prefix = "$.context.d[0]" if fmt == "yaml" else "$.nodes[0].params.p[0]"
    assert problem["path"].startswith(prefix), problem["path"]
    assert int(problem["line"]) == (3 if fmt == "yaml" else 1)


def test_a_node_output_nested_too_deep_is_a_node_error(tmp_path: Path) -> None:
    node_module(
        tmp_path,
        "deep_out_mod",
        "def deep(x=None):\n    v = 1\n    for _ in range(5000):\n        v = [v]\n    return v\n",
    )
    path = write(tmp_path, "out.yaml", "id: out\nnodes:\n  - {id: a, uses: deep_out_mod.deep}\n")
    out = cli("run", path, "--json", "--no-progress", "--state-dir", tmp_path / "s")
    assert out.code == 1, out
    [error] = out.json()["errors"]
    assert error["node"] == "a", error
    assert error["message"].startswith("output of type list cannot be stored as JSON"), error


# -- run-time values ----------------------------------------------------------------------------


def test_a_lone_surrogate_in_a_final_output_is_printed_escaped(tmp_path: Path) -> None:
    node_module(tmp_path, "surrogate_mod", 'def odd(x=None):\n    return "ok \\ud800"\n')
    path = write(tmp_path, "odd.yaml", "id: odd\nnodes:\n  - {id: a, uses: surrogate_mod.odd}\n")
    out = cli("run", path, "--no-progress", "--state-dir", tmp_path / "s")
    assert out.code == 0, out
    assert out.stdout.splitlines()[-1] == 'a: "ok \\ud800"'
    doc = cli("run", path, "--json", "--no-progress", "--state-dir", tmp_path / "s")
    assert doc.code == 0 and doc.json()["context"]["a"] == "ok \ud800", doc


def test_a_generator_output_cannot_be_stored_as_json(tmp_path: Path) -> None:
    node_module(
        tmp_path,
        "generator_mod",
        "def lazy(x=None):\n    return (i for i in range(3))\n\ndef yields(x=None):\n    yield 1\n",
    )
    path = write(
        tmp_path,
        "gen.yaml",
        "id: gen\ncontext: {xs: [1, 2]}\nnodes:\n"
        "  - {id: a, uses: generator_mod.lazy}\n"
        "  - {id: b, uses: generator_mod.yields}\n"
        "  - id: c\n    batch: {uses: generator_mod.lazy, inputKey: xs}\n",
    )
    out = cli("run", path, "--json", "--no-progress", "--state-dir", tmp_path / "s")
    assert out.code == 1, out
    errors = out.json()["errors"]
    assert {e["node"] for e in errors} >= {"a", "b"}
    for e in errors:
        assert "output of type generator cannot be stored as JSON" in e["message"], e
        assert "bad yield" not in e["message"]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e400"])
def test_a_non_finite_set_value_is_named_as_such(value: str, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "f.yaml",
        "id: f\ncontext: {factor: 1}\nnodes:\n  - {id: a, uses: tests.nodes.ident}\n",
    )
    out = cli("run", path, "--set", f"factor={value}", "--state-dir", tmp_path / "s")
    assert out.code == 2, out
    assert out.stderr == (
        f"flowrun: error: --set factor: {value!r} is not a finite number (JSON has no NaN or "
        "infinity); quote it to pass it as text\n"
    )


# -- file size ----------------------------------------------------------------------------------


def test_a_blueprint_over_the_size_limit_is_refused_naming_its_size(tmp_path: Path) -> None:
    body = "id: huge\nnodes:\n  - {id: a, uses: tests.nodes.ident}\ncontext:\n  x: ["
    path = write(tmp_path, "huge.yaml", body + "1," * 10_500_000 + "1]\n")  # 21 MB
    size = path.stat().st_size
    out = cli("validate", path)
    assert out.code == 2, out
    assert out.stdout.splitlines()[0] == (
        f"{path}:1:1: '{path}' is {size:,} bytes, over the 20,971,520 bytes a blueprint or "
        "context file may have; set FLOWRUN_MAX_BLUEPRINT_BYTES to read a larger one "
        "[file-too-large at $]"
    )
    small = write(tmp_path, "small.yaml", "id: s\nnodes:\n  - {id: a, uses: tests.nodes.ident}\n")
    out = cli("validate", small, env={"FLOWRUN_MAX_BLUEPRINT_BYTES": "20"})
    assert out.code == 2 and "over the 20 bytes" in out.stdout, out
    assert cli("validate", small, env={"FLOWRUN_MAX_BLUEPRINT_BYTES": "100"}).code == 0
    out = cli("validate", small, env={"FLOWRUN_MAX_BLUEPRINT_BYTES": "lots"})
    assert out.code == 2 and "FLOWRUN_MAX_BLUEPRINT_BYTES='lots'" in out.stdout, out


# -- damaged state ------------------------------------------------------------------------------

RECORDED = """\
id: recorded
context: {xs: [1, 2, 3]}
nodes:
  - {id: a, uses: tests.nodes.ident, inputs: xs}
  - id: b
    batch: {uses: tests.nodes.ident, inputKey: xs}
edges:
  - {source: a, target: b_scatter}
"""

# (what a damaged file holds, the statement that makes it, what the message says)
DAMAGE = [
    ("null status", "UPDATE nodes SET status = NULL", "nodes row 'a': status is null"),
    ("null total", "UPDATE batches SET total = NULL", "batches row 'b': total is null"),
    ("null indices", "UPDATE item_chunks SET indices = NULL", "indices is null, not JSON text"),
    ("null size", "UPDATE item_chunks SET size = NULL", "size is null"),
    ("text attempt", "UPDATE nodes SET attempt = 'abc'", "nodes row 'a': attempt is text"),
    ("bad JSON", "UPDATE nodes SET output = '[1,'", "nodes row 'a': output is not valid JSON"),
    ("list updates", "UPDATE nodes SET updates = '[1]'", "updates holds a JSON array, not"),
    ("negative index", "UPDATE item_chunks SET indices = json_set(indices, '$[0]', -1)",
     "indices holds -1, below 0"),
    ("text index", "UPDATE item_chunks SET indices = json_set(indices, '$[0]', 'a')",
     "indices holds str"),
    ("object durations", "UPDATE item_chunks SET durations_us = '{}'",
     "durations_us holds a JSON object, not a JSON array"),
    ("unknown status", "UPDATE nodes SET status = 'bogus'", "status is 'bogus', not one of"),
    ("batch status", "UPDATE batches SET status = 'weird'", "batches row 'b': status is 'weird'"),
    ("run status", "UPDATE runs SET status = 42", "status is '42', not one of completed"),
    ("run duration", "UPDATE runs SET duration_ms = 'x'", "duration_ms is text 'x'"),
    ("meta types", "UPDATE meta SET value = json_set(value, '$.context', json('[1]'))"
     " WHERE key = 'run'", "the run description: context is a JSON array, not a JSON object"),
]  # fmt: skip
LISTED_CORRUPT = {"run status", "run duration", "meta types"}  # what `runs` itself reads


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A completed run (a task node and a batch), to copy and damage."""
    base = tmp_path_factory.mktemp("recorded")
    path = write(base, "recorded.yaml", RECORDED)
    out = cli("run", path, "--json", "--no-progress", "--state-dir", base / "state")
    assert out.code == 0, out
    return base, out.json()["runId"]


@pytest.mark.parametrize(("what", "sql", "says"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_state_db_says_the_run_is_damaged(
    what: str, sql: str, says: str, recorded: tuple[Path, str], tmp_path: Path
) -> None:
    base, run_id = recorded
    state = tmp_path / "state"
    shutil.copytree(base / "state", state)
    path = shutil.copy(base / "recorded.yaml", tmp_path / "recorded.yaml")
    db = state / "runs" / run_id / "state.db"
    conn = sqlite3.connect(db)
    # What a truncated file reads as: NULL where the schema says NOT NULL.
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = replace(sql, 'NOT NULL', '') WHERE type = 'table'")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(db)
    conn.execute(sql)
    conn.commit()
    conn.close()
    for args in (["runs", "show", run_id], ["run", str(path), "--resume", run_id, "--json"]):
        out = cli(*args, "--state-dir", state)
        assert out.code == 2, (args, out)
        assert out.stdout == ""
        assert f"run {run_id} is damaged: " in out.stderr, out
        assert says in out.stderr, out
    listed = cli("runs", "--json", "--state-dir", state)
    assert listed.code == 0, listed
    [summary] = json.loads(listed.stdout)
    if what in LISTED_CORRUPT:
        assert summary["status"] == "corrupt" and says in summary["error"], summary
    else:
        assert summary["status"] == "completed", summary


# -- a read-only state directory ----------------------------------------------------------------


@pytest.fixture
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], Path]]:
    """Makes a read-only view of a state directory: a read-only bind mount when the tests run
    as root (root writes through any mode bits), else the directories' write bits removed.
    Where root may not mount, SQLite's refusal is injected at the store's seam."""
    mounts: list[Path] = []
    modes: list[Path] = []

    def make(state: Path) -> Path:
        if os.geteuid() != 0:
            for d in [state, *(p for p in state.rglob("*") if p.is_dir())]:
                d.chmod(0o500)
                modes.append(d)
            return state
        view = tmp_path / "ro"
        view.mkdir()
        if _bind_read_only(state, view):
            mounts.append(view)
            return view
        real = store_db._connect

        def refusing(uri: str) -> sqlite3.Connection:
            if "mode=ro" in uri and "immutable=1" not in uri:
                raise sqlite3.OperationalError("unable to open database file")
            return real(uri)

        monkeypatch.setattr(store_db, "_connect", refusing)
        return state

    yield make
    for view in mounts:
        subprocess.run(["umount", "-l", str(view)], check=False)
    for d in modes:
        d.chmod(0o700)


def _bind_read_only(source: Path, target: Path) -> bool:
    for args in (["--bind", str(source), str(target)], ["-o", "remount,bind,ro", str(target)]):
        if subprocess.run(["mount", *args], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
            return False
    return True


def test_runs_on_a_read_only_state_dir_lists_completed_runs(
    tmp_path: Path, read_only: Callable[[Path], Path]
) -> None:
    path = write(tmp_path, "recorded.yaml", RECORDED)
    state = tmp_path / "state"
    first = cli("run", path, "--json", "--no-progress", "--state-dir", state)
    assert first.code == 0, first
    run_id = first.json()["runId"]
    view = read_only(state)
    listed = cli("runs", "--json", "--state-dir", view)
    assert listed.code == 0, listed
    [summary] = json.loads(listed.stdout)
    assert (summary["run_id"], summary["status"]) == (run_id, "completed"), summary
    shown = cli("runs", "show", run_id, "--json", "--state-dir", view)
    assert shown.code == 0, shown
    doc: dict[str, Any] = json.loads(shown.stdout)
    assert doc["status"] == "completed", doc
