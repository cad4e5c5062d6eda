"""What start-up imports and skips: `import flowrun` and `flowrun --version` stay light, a run
that displays nothing live never imports rich, a blueprint that passed the schema before skips
jsonschema (and only such a blueprint), and the console script's quick exit loses nothing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from rich.console import Console

from flowrun.blueprint import loader, schema, schemacache
from flowrun.blueprint.verdict import Verdict
from flowrun.display import live, plain
from flowrun.errors import BlueprintError

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "blueprints" / "batch-workflow.yaml"
HEAVY = ("rich", "jsonschema", "yaml", "typer", "pydantic", "asyncio", "sqlite3")

# Runs `flowrun.cli.app` (or `entry.main`) in a fresh interpreter, then prints which heavy
# packages it imported as the last line of stderr.
PROBE = """
import json, sys
args = sys.argv[1:]
try:
    if args == ["--import-only"]:
        import flowrun
        flowrun.__version__
    elif args == ["--version"]:
        from flowrun.entry import main
        sys.argv = ["flowrun", *args]
        main()
    else:
        from flowrun.cli import app
        app(args, prog_name="flowrun")
except SystemExit:
    pass
sys.stdout.flush()
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[0])))
print("\\n" + json.dumps(heavy), file=sys.stderr)
"""


def probe(*args: str | Path, cache: Path | None, cwd: Path = ROOT) -> tuple[str, set[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    if cache is not None:
        env["FLOWRUN_CACHE_DIR"] = str(cache)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.replace("sys.argv[0]", repr(json.dumps(HEAVY))),
         *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc.stdout, set(json.loads(proc.stderr.strip().splitlines()[-1]))


def test_import_flowrun_is_light() -> None:
    _, mods = probe("--import-only", cache=None)
    assert mods == set()


def test_version_imports_nothing_heavy() -> None:
    out, mods = probe("--version", cache=None)
    assert out == "flowrun 0.1.0\n"
    assert mods == set()


def test_version_with_other_arguments_still_goes_through_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flowrun", "--version", "--bogus"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--bogus" in proc.stderr


@pytest.mark.parametrize("flag", ["--no-progress", "--quiet", None])
def test_a_run_without_a_live_display_never_imports_rich(tmp_path: Path, flag: str | None) -> None:
    args = ["run", SEED, "--state-dir", tmp_path / "state", *([flag] if flag else [])]
    out, first = probe(*args, cache=tmp_path / "cache")
    assert "sum-results: 120" in out if flag != "--quiet" else out == ""
    out, second = probe(*args, cache=tmp_path / "cache")
    assert "rich" not in first | second
    assert "jsonschema" in first  # a cold cache: the schema is checked
    assert "jsonschema" not in second  # the same file again: answered from the cache
    assert "pydantic" not in first | second


def test_a_failing_blueprint_always_goes_through_jsonschema(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nnodes:\n  - id: a\n    uses: builtins.len\n    confg: {}\n")
    for _ in range(2):
        out, mods = probe("validate", bad, cache=tmp_path / "cache")
        assert "unknown key 'confg'" in out
        assert "jsonschema" in mods


# -- the cache itself ---------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWRUN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "schema-ok"


@pytest.fixture
def validator_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts jsonschema passes (and still runs them)."""
    calls: list[str] = []
    real = schema._schema_problems

    def counting(doc: loader.Document) -> Any:
        calls.append(doc.name)
        return real(doc)

    monkeypatch.setattr(schema, "_schema_problems", counting)
    return calls


def doc(text: str) -> loader.Document:
    return loader.load_text(text, "bp.yaml", "yaml")


GOOD = "id: x\nnodes:\n  - id: a\n    uses: builtins.len\n    config: {maxRetries: 1}\n"


def test_a_clean_pass_is_remembered(cache: Path, validator_calls: list[str]) -> None:
    first = schema.check(doc(GOOD))
    second = schema.check(doc(GOOD))
    assert validator_calls == ["bp.yaml"]
    assert first.nodes == second.nodes


def test_changed_data_is_a_miss(cache: Path, validator_calls: list[str]) -> None:
    schema.check(doc(GOOD))
    schema.check(doc(GOOD.replace("maxRetries: 1", "maxRetries: 2")))
    # the same value with another type is other data: "1" (a string) fails the schema
    with pytest.raises(BlueprintError, match="expected integer"):
        schema.check(doc(GOOD.replace("maxRetries: 1", "maxRetries: '1'")))
    schema.check(doc(GOOD))
    assert len(validator_calls) == 3


def test_formatting_alone_is_a_hit(cache: Path, validator_calls: list[str]) -> None:
    schema.check(doc(GOOD))
    schema.check(doc("# a comment\n" + GOOD.replace("{maxRetries: 1}", "\n      maxRetries: 1")))
    assert len(validator_calls) == 1


def test_problems_are_never_remembered(cache: Path, validator_calls: list[str]) -> None:
    bad = GOOD.replace("maxRetries: 1", "maxRetries: -1")
    for _ in range(2):
        with pytest.raises(BlueprintError, match="maxRetries"):
            schema.check(doc(bad))
    assert len(validator_calls) == 2
    assert not cache.exists()


def test_another_schema_text_is_a_miss() -> None:
    data = doc(GOOD).data
    assert schemacache.key("{}", data) != schemacache.key(schema.schema_text(), data)
    assert schemacache.key("{}", data) == schemacache.key("{}", doc(GOOD).data)


@pytest.mark.parametrize(
    "content",
    [b"garbage", b"", b"\xff\xfe\x00", b"flowrun schema-ok 1\nnot-a-digest\n", None],
)
def test_a_corrupt_cache_is_a_miss(
    cache: Path, validator_calls: list[str], content: bytes | None
) -> None:
    schema.check(doc(GOOD))
    digest = cache.read_text().splitlines()[-1]
    if content is None:  # a directory where the file should be
        cache.unlink()
        cache.mkdir()
    else:
        cache.write_bytes(content + b"\n" + digest.encode() if content else b"")
    schema.check(doc(GOOD))
    assert len(validator_calls) == 2
    if content is not None:  # rewritten whole and valid again
        assert cache.read_text().splitlines() == ["flowrun schema-ok 1", digest]
        schema.check(doc(GOOD))
        assert len(validator_calls) == 2


def test_an_empty_cache_dir_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validator_calls: list[str]
) -> None:
    monkeypatch.setenv("FLOWRUN_CACHE_DIR", "")
    monkeypatch.chdir(tmp_path)
    schema.check(doc(GOOD))
    schema.check(doc(GOOD))
    assert len(validator_calls) == 2
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validator_calls: list[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FLOWRUN_CACHE_DIR", str(blocker / "sub"))  # parent is a file
    schema.check(doc(GOOD))
    schema.check(doc(GOOD))
    assert len(validator_calls) == 2


def test_the_cache_keeps_the_newest_entries(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schemacache, "MAX_ENTRIES", 3)
    digests = [f"{i:064x}" for i in range(5)]
    for d in digests:
        schemacache.remember(d)
    assert [schemacache.passed(d) for d in digests] == [False, False, True, True, True]


# -- the rich-free display ----------------------------------------------------------------------

SAMPLES = [
    "plain",
    "tab\there\tx",
    "cr\rback\bbell\x07ff\x0cvt\x0b",
    "esc \x1b[31mred\x1b[0m",
    "wide 日本語\tt",
    "emoji 🎉\tq",
    "x" * 300,
    "trail   ",
    "multi\nline\t2\n\n",
    "",
    "[bold]markup[/] :smile:",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_plain_console_writes_what_rich_writes(text: str) -> None:
    ours, theirs = io.StringIO(), io.StringIO()
    plain.PlainConsole(ours).out(text, highlight=False)
    Console(file=theirs, width=80).out(text, highlight=False)
    assert ours.getvalue() == theirs.getvalue()


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
@pytest.mark.parametrize("quiet", [False, True])
@pytest.mark.parametrize("no_progress", [False, True])
@pytest.mark.parametrize(
    "env",
    [{}, {"CI": "1"}, {"FORCE_COLOR": "1"}, {"TTY_COMPATIBLE": "1"}, {"TTY_INTERACTIVE": "1"},
     {"TERM": "dumb"}, {"TTY_COMPATIBLE": "0"}],
)  # fmt: skip
def test_quick_mode_agrees_with_choose_mode(
    tty: bool, quiet: bool, no_progress: bool, env: dict[str, str]
) -> None:
    stream = Stream(tty)
    quick = plain.quick_mode(stream, quiet=quiet, no_progress=no_progress, env=env)
    full = live.choose_mode(
        Console(file=stream, _environ=env), quiet=quiet, no_progress=no_progress, env=env
    )
    assert quick in (None, full)
    if not tty and not {"TTY_COMPATIBLE", "TTY_INTERACTIVE"} & set(env):
        assert quick == full  # a pipe or a file never needs rich to decide


# -- the console script's quick exit --------------------------------------------------------------


def test_the_quick_exit_flushes_outputs_events_and_state(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    state = tmp_path / "state"
    proc = subprocess.run(
        [sys.executable, "-m", "flowrun", "run", str(SEED), "--state-dir", str(state),
         "--events", str(events), "--json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["context"]["sum-results"] == 120
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines[-1]["event"] == "run_finished"
    listed = subprocess.run(
        [sys.executable, "-m", "flowrun", "runs", "--state-dir", str(state), "--json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert [r["status"] for r in json.loads(listed.stdout)] == ["completed"]


def test_the_quick_exit_keeps_validate_output_and_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nnodes: []\n")
    proc = subprocess.run(
        [sys.executable, "-m", "flowrun", "validate", str(SEED), str(bad)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout.splitlines()[0] == f"{SEED}: ok"
    assert proc.stdout.splitlines()[-1] == "1 problem in 1 file"


# -- the split schema verdict agrees with jsonschema ----------------------------------------------

VALUES = [None, True, 0, -1, 2.5, "", "a", "x_scatter", "tasks.f", "1s", "-2ms", "all", [], {}]
VALUES += [["a"], {"a": "b"}, {"a": 1}, {"maxRetries": 1}, {"uses": "m.f", "inputKey": "k"}]
NODE_KEYS = ["id", "uses", "params", "inputs", "config", "batch", "_sourceLocation", "bogus"]


def full_verdict(data: Any) -> bool:
    return bool(schema._validator().is_valid(data))


def split_verdict(data: Any) -> bool:
    validator = schema._validator()
    return Verdict(validator).valid(validator.schema, data)


@pytest.mark.parametrize("path", sorted((ROOT / "blueprints").glob("*.y*ml")))
def test_split_verdict_on_the_examples(path: Path) -> None:
    data = loader.load(path).data
    assert split_verdict(data) is full_verdict(data) is True


@pytest.mark.parametrize("path", sorted((ROOT / "tests" / "bad").glob("*.yaml")))
def test_split_verdict_on_the_bad_blueprints(path: Path) -> None:
    try:
        data = loader.load(path).data
    except BlueprintError:
        return  # not even loadable: no schema check to compare
    assert split_verdict(data) is full_verdict(data)


def test_split_verdict_on_random_nodes_and_edges() -> None:
    st = hypothesis.strategies
    value = st.sampled_from(VALUES)
    node = st.dictionaries(st.sampled_from(NODE_KEYS), value, max_size=5)
    config = st.dictionaries(
        st.sampled_from(["maxRetries", "retryDelay", "timeout", "backoff", "joinStrategy", "x"]),
        value,
        max_size=3,
    )
    node_with_config = st.tuples(node, config).map(lambda t: {**t[0], "config": t[1]})
    good = st.fixed_dictionaries(
        {"id": st.sampled_from(["a", "b"]), "uses": st.just("m.f")},
        optional={"config": config, "params": st.just({}), "inputs": value},
    )
    edge = st.dictionaries(st.sampled_from(["source", "target", "action", "y"]), value)
    doc_ = st.fixed_dictionaries(
        {
            "id": st.one_of(st.just("bp"), value),
            "nodes": st.lists(st.one_of(good, good, node, node_with_config, value), max_size=4),
        },
        optional={"edges": st.lists(st.one_of(edge, value), max_size=3), "context": value},
    )

    @hypothesis.settings(max_examples=400, deadline=None, derandomize=True)
    @hypothesis.given(doc_)
    def agree(data: dict[str, Any]) -> None:
        verdict = split_verdict(data)
        assert verdict is full_verdict(data)
        seen.add(verdict)

    seen: set[bool] = set()
    agree()
    assert seen == {True, False}  # both answers were exercised


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--help"],
        ["runs", "--help"],
        ["runs", "show", "--help"],
        ["validate", "--help"],
        ["graph", "-h"],
        ["run"],
        ["run", "x.yaml", "--concurency", "3"],
    ],
)
def test_the_console_script_builds_only_the_named_command(argv: list[str]) -> None:
    """`main` gives typer only the command the line names: help, usage errors and their exit
    codes are exactly the whole app's."""
    from typer.testing import CliRunner

    from flowrun import cli

    one = cli._app_for(["flowrun", *argv])
    assert one is not cli.app
    assert [c.callback for c in one.registered_commands] + [
        g.typer_instance for g in one.registered_groups
    ] != []
    runner = CliRunner()
    whole, pruned = runner.invoke(cli.app, argv), runner.invoke(one, argv)
    assert (pruned.exit_code, pruned.output) == (whole.exit_code, whole.output)


@pytest.mark.parametrize("argv", [[], ["--help"], ["-C", ".", "run"], ["valdate"]])
def test_anything_else_gets_the_whole_app(argv: list[str]) -> None:
    from flowrun import cli

    assert cli._app_for(["flowrun", *argv]) is cli.app
