"""What an expression may cost is bounded by its text: a length limit at validate time, and an
evaluation budget charged for big integers, their conversions and shared structure; what an
expression delivers as data (a transform, a `${{ }}` value) is JSON data, never a complex
number, a NaN or an infinity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowrun.expr.compiler import MAX_LENGTH, ExprError, ExprEvalError, compile_expr
from flowrun.expr.template import compile_params
from tests.test_cli import PROBLEM, cli, write


def ev(text: str, kind: str = "expression", **scope: Any) -> Any:
    return compile_expr(text, ["output", *scope], kind=kind).evaluate({"output": 1, **scope})


def eval_error(text: str, kind: str = "expression") -> str:
    with pytest.raises(ExprEvalError) as info:
        ev(text, kind)
    return str(info.value)


# -- the text ---------------------------------------------------------------------------------


def test_an_expression_longer_than_the_limit_is_refused_at_column_1() -> None:
    longest = "[" + "1," * ((MAX_LENGTH - 2) // 2) + "]"
    assert len(longest) <= MAX_LENGTH
    assert len(ev(longest)) == (MAX_LENGTH - 2) // 2
    with pytest.raises(ExprError) as info:
        compile_expr("[" + "1," * 800_000 + "]", ["output"])  # 1.6 MB
    assert info.value.column == 1
    assert "too long (1,600,002 characters; at most 10,000)" in info.value.message


def test_validate_locates_a_too_long_expression_and_run_runs_nothing(tmp_path: Path) -> None:
    transform = "+".join(["1"] * 6_000)
    text = (
        "id: long\nnodes:\n  - {id: a, uses: tests.exit_nodes.ignores}\n"
        "  - {id: b, uses: tests.exit_nodes.ignores}\n"
        f"edges:\n  - source: a\n    target: b\n    transform: '{transform}'\n"
    )
    path = write(tmp_path, "long.yaml", text)
    run = ["run", path, "--no-progress", "--state-dir", tmp_path / "s"]
    for args in (["validate", path], run):
        out = cli(*args)
        assert out.code == 2, out
        (line,) = [x for x in (out.stdout + out.stderr).splitlines() if PROBLEM.match(x)]
        problem = PROBLEM.match(line)
        assert problem is not None
        # line 8, column 17: the first character of the expression
        assert (problem["line"], problem["col"]) == ("8", "17"), line
        assert "too long (11,999 characters" in problem["msg"]
        assert len(line) < 400  # the expression itself is cut short in the message
    assert not (tmp_path / "s").exists()


# -- the evaluation budget --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # each converts a 12,680-bit integer to text, in quadratic time
        "len([" + ", ".join(["str(9**4000)"] * 40) + "])",
        # each parses 4,300 digits, in quadratic time
        "len([" + ", ".join(["int('9' * 4300)"] * 40) + "])",
        # each divides a 11,000-bit integer by a 6,300-bit one
        "len([" + ", ".join(["(7**3900) // (3**4000)"] * 80) + "])",
        "len([" + ", ".join(["(7**3900) % (3**4000)"] * 80) + "])",
        "len([" + ", ".join(["(7**2400) * (3**4000)"] * 120) + "])",
        # comparing walks 10**9 elements through the copies of one list
        "[[[0] * 1000] * 1000] * 1000 == [[[0] * 1000] * 1000] * 1000",
        "len({(((0,) * 1000,) * 1000,) * 1000})",  # hashing, the same
        "len(str([9**4000] * 1000))",
    ],
)
def test_big_integers_and_shared_structure_are_charged_to_the_budget(text: str) -> None:
    assert "the result would be too large" in eval_error(text)


def test_the_budget_still_allows_ordinary_big_values() -> None:
    assert len(ev("str(9**4000)")) == 3817
    assert ev("int('9' * 4300) > 0") is True
    assert ev("len([[[0] * 100] * 100] * 100)") == 100
    assert ev("[[[0] * 100] * 100] * 100 == [[[0] * 100] * 100] * 100") is True
    assert ev("(7**3900) // (3**4000) > 0") is True
    assert ev("len([0] * 6000000)") == 6_000_000


def test_the_expressions_of_one_call_share_one_budget() -> None:
    one = "${{ len([0] * 4000000) }}"
    problems: list[Any] = []
    params = compile_params({"a": one, "b": f"{one} {one}"}, ["input"], errors=problems.append)
    assert not problems
    with pytest.raises(ExprEvalError, match="too large"):
        params.render((), {})  # type: ignore[attr-defined]
    small = compile_params({"a": one, "b": "${{ len([0] * 4) }}"}, ["input"], errors=print)
    assert small.render((), {}) == {"a": 4_000_000, "b": 4}  # type: ignore[attr-defined]


def test_a_spliced_value_is_charged_for_its_text() -> None:
    big = "${{ output }}" * 20
    params = compile_params({"a": "x" + big}, ["input", "output"], errors=print)
    with pytest.raises(ExprEvalError, match="too large"):
        params.render((), {"output": ["y" * 1000] * 1000})  # type: ignore[attr-defined]


# -- what a transform delivers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("float('nan')", "nan"),
        ("output * 1e308 * 10", "inf"),
        ("{'a': [1, -float('inf')]}", "-inf"),
        ("[(-1) ** 0.5]", "complex number"),
        ("{float('nan'): 1}", "nan"),
    ],
)
def test_a_transform_never_delivers_a_complex_nan_or_infinite_value(text: str, shown: str) -> None:
    for kind in ("transform", "interpolation"):
        message = eval_error(text, kind)
        assert message.startswith(f'{kind} "{text}"'), message
        assert shown in message
    ev(text, "condition")  # a condition may use them: only its truth leaves it


def test_a_condition_may_compare_with_infinity() -> None:
    assert ev("output < float('inf')", "condition") is True
    assert ev("min([output, float('inf')])", "transform") == 1


BAD_TRANSFORM = """\
id: bad
nodes:
  - {id: a, uses: tests.exit_nodes.ignores}
  - {id: b, uses: tests.exit_nodes.ignores}
  - {id: c, uses: tests.exit_nodes.ignores, params: {x: "${{ float('inf') }}"}}
edges:
  - {source: a, target: b, transform: "[output, (-1) ** 0.5]"}
"""


def test_a_run_fails_the_node_whose_transform_or_param_is_not_json(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", BAD_TRANSFORM)
    out = cli("run", path, "--json", "--no-progress", "--state-dir", tmp_path / "state")
    assert out.code == 1, out
    doc = json.loads(out.stdout)
    nodes = doc["nodes"]
    assert (nodes["a"]["status"], nodes["b"]["status"], nodes["c"]["status"]) == (
        "failed", "pending", "failed",
    )  # fmt: skip
    errors = {e["node"]: e for e in doc["errors"]}
    assert errors["a"]["type"] == "ExprEvalError"
    assert "complex number" in errors["a"]["message"]
    assert "transform" in errors["a"]["message"]
    assert "inf" in errors["c"]["message"]
    assert "interpolation" in errors["c"]["message"]
