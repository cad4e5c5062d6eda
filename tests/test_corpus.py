"""A mutation corpus: seeded random mutations of every blueprint in `blueprints/` never make
`flowrun validate` or `flowrun run` print a flowrun traceback, and never hang.

Each blueprint is mutated the same way on every run (the seed is its name and the mutant's
number): byte flips, line deletions and duplications, key renames, type swaps, truncations and
YAML-structural edits (indentation, anchors and aliases, tags, flow/block switches, duplicate
keys, documents). Every mutant goes through `validate`; those that validate are run (with
`--json --no-progress` and a state directory of their own). What is checked:

- the exit code is 0, 1 or 2 (130 only for a run this test interrupted, see below);
- no exception escapes the command;
- a traceback on stderr is a failing node's own: flowrun prints it trimmed to the node's frames,
  so a traceback holding a frame of flowrun's own code (outside `flowrun/std`, the node
  library) is a crash;
- a run that ends 0 or 1 prints its `--json` document;
- nothing hangs: a run still going after `SOFT_S` is interrupted as a Ctrl-C would (a mutated
  retry delay may legitimately make a run long), and must then end within `HARD_S`.

The commands run in-process through the Typer app (a subprocess per mutant would take minutes);
a sample runs as `python -m flowrun` too. Blueprints with shell nodes are validated but not run:
a mutated command is arbitrary shell code.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest
from typer.testing import CliRunner

import flowrun
from flowrun.cli import app
from tests.test_cli import ENV, ROOT

BLUEPRINTS = ROOT / "blueprints"
FILES = sorted(p for p in BLUEPRINTS.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
# per blueprint; CORPUS_MUTANTS=500 CORPUS_RUNS=100 explores further (the same seeds, and more)
MUTANTS = int(os.environ.get("CORPUS_MUTANTS", "14"))
RUNS = int(os.environ.get("CORPUS_RUNS", "3"))  # at most, per blueprint, of those that validate
SOFT_S, HARD_S = 5.0, 15.0
PKG = Path(flowrun.__file__).resolve().parent
NODE_LIBRARY = PKG / "std"

# -- mutations ---------------------------------------------------------------------------------

KEYS = ["id", "uses", "nodes", "edges", "source", "target", "batch", "inputKey", "outputKey",
        "inputs", "params", "config", "context", "condition", "transform", "action", "loop",
        "while", "maxRetries", "retryDelay", "timeout", "backoff", "runIf", "joinStrategy",
        "fallback", "subflow", "shell", "itemsFrom", "outputTo", "maxFailures", "pool",
        "concurrency", "description", "retryOn"]  # fmt: skip
VALUES = ["null", "~", "true", "no", "0", "-1", "1.5", "1e999", ".nan", "-.inf", "''", "[]", "{}",
          "[1, 2]", "{a: 1}", "99999999999999999999999999999", "9" * 400, "'x'", "\"${{ input }}\"",
          "\"${{ 1/0 }}\"", "10**10**10", "0x10", "2021-01-01", "!!binary aGVsbG8=",
          "\"\\ud800\"", "*nope", "&a 1", "|\n  block", "'a\nb'", "\"\\x00\""]  # fmt: skip
BYTES = b":{}[],-#&*!|>'\"%@`\t\n\r \x00\x7f\xff\xc3"
SCALAR = re.compile(r"(:\s+)([^\s{}\[\],#][^,}\]#\n]*)")
KEY = re.compile(r"([A-Za-z_][\w-]*)(\s*:)")


def _flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(out))
        out[i] = rng.choice(BYTES) if rng.random() < 0.7 else rng.randrange(256)
    return bytes(out)


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


def _delete_line(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return b"".join(lines)


def _duplicate_line(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return b"".join(lines)


def _rename_key(rng: random.Random, data: bytes) -> bytes:
    text = data.decode("utf-8", "surrogateescape")
    keys = list(KEY.finditer(text))
    if not keys:
        return _flip(rng, data)
    m = rng.choice(keys)
    name = m.group(1)
    new = rng.choice([rng.choice(KEYS), name[:-1], name + "s", name.upper(), "__" + name])
    return (text[: m.start(1)] + new + text[m.end(1) :]).encode("utf-8", "surrogateescape")


def _swap_type(rng: random.Random, data: bytes, value: str | None = None) -> bytes:
    text = data.decode("utf-8", "surrogateescape")
    scalars = list(SCALAR.finditer(text))
    if not scalars:
        return _flip(rng, data)
    m = rng.choice(scalars)
    if value is not None:
        pass
    elif not text.lstrip().startswith("{"):
        value = rng.choice(VALUES)
    else:  # JSON: keep to JSON-looking values
        value = rng.choice(["null", "true", "-1", "1e999", "[]", "{}", '"x"', '[1, "a"]',
                            "99999999999999999999999999999", '"${{ input }}"'])  # fmt: skip
    return (text[: m.start(2)] + value + text[m.end(2) :]).encode("utf-8", "surrogateescape")


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def _structural(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    line = lines[i]
    kind = rng.randrange(8)
    if kind == 0:  # indent or dedent a line
        lines[i] = b"  " + line if rng.random() < 0.5 else line[2:]
    elif kind == 1:  # an anchor on one value, an alias to it elsewhere
        lines[i] = re.sub(rb":\s+(?=\S)", b": &anc ", line, count=1)
        j = rng.randrange(len(lines))
        lines[j] = re.sub(rb":\s+\S.*", b": *anc", lines[j], count=1)
    elif kind == 2:  # a tag
        tag = rng.choice([b"!!str ", b"!!int ", b"!!python/object:os.system ", b"!custom ",
                          b"!!map ", b"!!seq ", b"!!float "])  # fmt: skip
        lines[i] = re.sub(rb":\s+(?=\S)", b": " + tag, line, count=1)
    elif kind == 3:  # a block list item becomes a flow mapping, or the other way round
        lines[i] = line.replace(b"- ", b"- {", 1).rstrip(b"\n") + b"}\n" if b"- " in line else (
            line.replace(b"{", b"", 1).replace(b"}", b"", 1))  # fmt: skip
    elif kind == 4:  # a duplicate key
        lines.insert(i, line)
        return b"".join(lines)
    elif kind == 5:  # a second document, or an explicit end
        lines.insert(i, rng.choice([b"---\n", b"...\n", b"--- !!map\n"]))
    elif kind == 6:  # a merge key
        lines.insert(i, re.match(rb"\s*", line).group() + b"<<: {uses: x.y}\n")  # type: ignore[union-attr]
    else:  # a list marker or a mapping where the other was
        lines[i] = line.replace(b"- ", b"", 1) if b"- " in line else b"- " + line
    return b"".join(lines)


MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [
    _flip, _delete_line, _duplicate_line, _rename_key, _swap_type, _truncate, _structural,
]  # fmt: skip


def mutants(path: Path) -> Iterator[tuple[int, bytes]]:
    data = path.read_bytes()
    for n in range(MUTANTS):
        rng = random.Random(zlib.crc32(f"{path.name}:{n}".encode()))
        if n == 0:  # always one: a number no double holds (a crash in the red-team pass)
            yield n, _swap_type(rng, data, "9" * 400)
            continue
        out = data
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            out = rng.choice(MUTATORS)(rng, out) or out
        yield n, out


# -- judging what came back --------------------------------------------------------------------

TRACEBACK = "Traceback (most recent call last)"
FRAME = re.compile(r'^\s*File "([^"]+)", line \d+', re.M)


def flowrun_frames(text: str) -> list[str]:
    """The frames of flowrun's own code (not its node library) in the tracebacks of `text`."""
    out = []
    for block in text.split(TRACEBACK)[1:]:
        for file in FRAME.findall(block):
            path = Path(file).resolve()
            if path.is_relative_to(PKG) and not path.is_relative_to(NODE_LIBRARY):
                out.append(file)
    return out


class Hang(BaseException):
    """An in-process run did not end after it was interrupted."""


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    crash: str = ""  # the traceback of an exception that escaped the command
    interrupted: bool = False


def invoke(args: list[str]) -> Outcome:
    interrupted = False

    def alarm(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        if not interrupted:  # first as a Ctrl-C (flowrun's own handler is installed)...
            interrupted = True
            signal.setitimer(signal.ITIMER_REAL, HARD_S)
            os.kill(os.getpid(), signal.SIGINT)
            return
        raise Hang(f"still running {HARD_S} s after a Ctrl-C: flowrun {' '.join(args)}")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, SOFT_S)
    try:
        result = CliRunner().invoke(app, args, env=ENV, prog_name="flowrun")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    crash = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        crash = "".join(traceback.format_exception(*result.exc_info))
    if os.environ.get("CORPUS_LOG"):
        print(f"{args[0]} {Path(args[1]).name} -> {result.exit_code}"
              f"{' interrupted' if interrupted else ''}", file=sys.__stderr__)  # fmt: skip
    return Outcome(result.exit_code, result.stdout, result.stderr, crash, interrupted)


def problems_of(what: str, out: Outcome, *, run: bool) -> list[str]:
    found = []
    allowed = {0, 1, 2, 130} if out.interrupted else {0, 1, 2}
    if out.crash:
        found.append(f"{what}: an exception escaped:\n{out.crash}")
    elif out.code not in allowed:
        found.append(f"{what}: exit {out.code}\n{out.stderr[-2000:]}")
    frames = flowrun_frames(out.stderr) + flowrun_frames(out.stdout)
    if frames:
        found.append(f"{what}: a flowrun traceback ({frames[:3]}):\n{out.stderr[-3000:]}")
    if run and out.code in (0, 1) and not out.crash:
        try:
            assert json.loads(out.stdout)["status"]
        except Exception:
            found.append(f"{what}: exit {out.code} without its --json document:\n{out.stdout}")
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of `blueprints/` (the node modules, the data), where the mutants are written."""
    where = tmp_path_factory.mktemp("corpus") / "blueprints"
    shutil.copytree(BLUEPRINTS, where, ignore=shutil.ignore_patterns("__pycache__"))
    return where


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_mutated_blueprints_never_crash_or_hang(
    path: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runnable = b"shell:" not in path.read_bytes()
    found: list[str] = []
    runs = 0
    for n, data in mutants(path):
        mutant = corpus / f"mutant-{n}-{path.name}"
        mutant.write_bytes(data)
        what = f"{path.name} mutant {n}"
        out = invoke(["validate", str(mutant)])
        found += problems_of(f"validate {what}", out, run=False)
        if out.code == 0 and runnable and runs < RUNS:
            runs += 1
            state = tmp_path / f"state-{n}"
            out = invoke(["run", str(mutant), "--json", "--no-progress", "--state-dir", str(state)])
            found += problems_of(f"run {what}", out, run=True)
        if not found:
            mutant.unlink()
    assert not found, "\n\n".join(found)


def test_a_sample_of_mutants_in_a_subprocess(corpus: Path, tmp_path: Path) -> None:
    """The same, as `python -m flowrun`: the exit code is the process's own."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env["NO_COLOR"] = "1"
    found: list[str] = []
    for path in FILES[::5]:
        n, data = next(iter(mutants(path)))
        mutant = corpus / f"sample-{n}-{path.name}"
        mutant.write_bytes(data)
        for args in (["validate", mutant], ["run", mutant, "--json", "--no-progress",
                                              "--state-dir", tmp_path / "state"]):  # fmt: skip
            done = subprocess.run(
                [sys.executable, "-m", "flowrun", *map(str, args)],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            out = Outcome(done.returncode, done.stdout, done.stderr)
            if TRACEBACK in done.stderr and "failed" not in done.stderr:
                found.append(f"{args[0]} {mutant.name}: a traceback without a node:\n"
                             f"{done.stderr[-3000:]}")  # fmt: skip
            found += problems_of(f"{args[0]} {mutant.name}", out, run=args[0] == "run")
            if args[0] == "validate" and done.returncode != 0:
                break
    assert not found, "\n\n".join(found)
