"""The edge expression language: what it computes, what it rejects, and how it fails."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowrun.expr.compiler import CompiledExpr, ExprError, ExprEvalError, compile_expr

NAMES = ("output", "action", "context", "review", "fetch")
OUTPUT = {
    "score": 0.7,
    "name": "ada",
    "items": [1, 2, 3],
    "keys": "K",
    "get": "G",
    "values": [],
    "nested": {"deep": {"x": 1}},
}
SCOPE: dict[str, Any] = {
    "output": OUTPUT,
    "action": "approve",
    "context": {"factor": 2, "tags": ["a", "b"]},
    "fetch": {"body": {"items": [10, 20]}},
}


def ev(text: str, scope: dict[str, Any] | None = None) -> Any:
    return compile_expr(text, NAMES).evaluate(SCOPE if scope is None else scope)


def eval_error(text: str, scope: dict[str, Any] | None = None) -> str:
    with pytest.raises(ExprEvalError) as info:
        ev(text, scope)
    return str(info.value)


def compile_error(text: str, names: tuple[str, ...] = NAMES) -> ExprError:
    with pytest.raises(ExprError) as info:
        compile_expr(text, names)
    return info.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # literals and displays
        ("42", 42),
        ("2.5", 2.5),
        ("'hi'", "hi"),
        ("True", True),
        ("None", None),
        ("[1, 'a']", [1, "a"]),
        ("(1, 2)", (1, 2)),
        ("()", ()),
        ("{'a': 1, 'b': [2]}", {"a": 1, "b": [2]}),
        ("{1, 2}", {1, 2}),
        # names, keys, indexes, slices
        ("action", "approve"),
        ("output.score", 0.7),
        ("output.nested.deep.x", 1),
        ("output['name']", "ada"),
        ("output.items[0]", 1),
        ("output.items[-1]", 3),
        ("output.items[1:]", [2, 3]),
        ("output.items[::-1]", [3, 2, 1]),
        ("output.name[:2]", "ad"),
        ("fetch.body.items[1]", 20),
        ("{'a': 1}.a", 1),
        # comparisons and logic
        ("1 == 1", True),
        ("1 != 2", True),
        ("2 <= 2", True),
        ("2 >= 3", False),
        ("'a' in context.tags", True),
        ("'z' not in context.tags", True),
        ("action is None", False),
        ("action is not None", True),
        ("True and 0", 0),
        ("0 or 'x'", "x"),
        ("0 or '' or None", None),
        ("1 and 2 and 3", 3),
        ("not output", False),
        # arithmetic
        ("-output.score", -0.7),
        ("+3", 3),
        ("1 + 2 * 3", 7),
        ("5 - 7", -2),
        ("7 / 2", 3.5),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("2 ** 10", 1024),
        ("2 ** -1", 0.5),
        ("'a' + 'b'", "ab"),
        ("[1] + [2]", [1, 2]),
        ("'ab' * 2", "abab"),
        ("2 * [0]", [0, 0]),
        ("context.factor * len(output.items)", 6),
        # conditional expression
        ("'hi' if output.score > 0.5 else 'lo'", "hi"),
        # the allowed functions
        ("len(output.items)", 3),
        ("min(3, 1, 2)", 1),
        ("max(output.items)", 3),
        ("abs(-2)", 2),
        ("sum(output.items)", 6),
        ("sum(output.items, 10)", 16),
        ("any([0, 1])", True),
        ("all([1, 0])", False),
        ("round(2.567, 2)", 2.57),
        ("round(2.5)", 2),
        ("int('42')", 42),
        ("int('ff', 16)", 255),
        ("int(3.9)", 3),
        ("int()", 0),
        ("float('1.5')", 1.5),
        ("str(12)", "12"),
        ("str(output.items)", "[1, 2, 3]"),
        ("str()", ""),
        ("bool('')", False),
        # layout: newlines inside brackets, leading whitespace, comments
        ("(output.score\n  > 0.5)", True),
        ("  \n output.score", 0.7),
        ("output.score  # the model's confidence", 0.7),
    ],
)
def test_allowed_constructs_evaluate(text: str, expected: Any) -> None:
    result = ev(text)
    assert result == expected
    assert type(result) is type(expected)


def test_attribute_access_reads_keys_never_methods() -> None:
    assert ev("output.items") == [1, 2, 3]
    assert ev("output.keys") == "K"
    assert ev("output.get") == "G"
    assert ev("output.values") == []
    # a dict without the key has no fallback to the method of the same name
    message = eval_error("output.items", {"output": {}})
    assert message == "expression \"output.items\": 'items' is not a key of output (it is empty)"


def test_missing_key_names_the_expression_and_the_keys() -> None:
    expr = compile_expr("output.score > 0.5", NAMES, kind="condition")
    with pytest.raises(ExprEvalError) as info:
        expr.evaluate({"output": {"name": "n", "value": 1}})
    assert str(info.value) == (
        "condition \"output.score > 0.5\": 'score' is not a key of output (keys: name, value)"
    )


def test_attribute_of_a_non_mapping_is_an_eval_error() -> None:
    message = eval_error("output.x", {"output": [1]})
    assert "cannot read '.x' of output: it is a list, not a mapping" in message


def test_chained_comparisons() -> None:
    assert ev("1 < 2 < 3") is True
    assert ev("1 < 3 < 2") is False
    assert ev("0 <= output.score <= 1") is True
    assert ev("1 == 1.0 != 2") is True


@pytest.mark.parametrize(
    "text",
    [
        "False and 1/0",
        "True or 1/0",
        "1 if True else 1/0",
        "1 > 2 > 1/0",
        "output.missing if False else 2",
        "0 and review.ok",
    ],
)
def test_short_circuit_skips_the_failing_part(text: str) -> None:
    ev(text)  # `review` is absent from SCOPE: reading it would raise


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("lambda: 1", 1, "lambda"),
        ("[x for x in output]", 1, "comprehensions"),
        ("output and {k: 1 for k in output}", 12, "comprehensions"),
        ("any(x for x in output)", 4, "comprehensions"),
        ("(y := 1)", 2, ":="),
        ("f'{output}'", 1, "f-strings"),
        ("len(*output)", 5, "'*' unpacking"),
        ("[*output]", 2, "'*' unpacking"),
        ("{**output}", 4, "'**' unpacking"),
        ("b'x'", 1, "bytes"),
        ("...", 1, "'...'"),
        ("1j", 1, "complex"),
        ("output.__class__", 8, "'_'"),
        ("output.nested._private", 15, "'_'"),
        ("__import__('os')", 1, "'__'"),
        ("output.get('a')", 1, "cannot be called"),
        ("'a'.upper()", 1, "cannot be called"),
        ("max(output, key=len)", 13, "keyword"),
        ("len(output.items, 2)", 1, "len() takes 1 argument (2 given)"),
        ("round()", 1, "round() takes 1 to 2 arguments (0 given)"),
        ("1 & 2", 3, "'&'"),
        ("(output.a) | 2", 12, "'|'"),
        ("1 << 70", 3, "'<<'"),
        ("1 ^ 1", 3, "'^'"),
        ("~1", 1, "'~'"),
        ("await output", 1, "await"),
        ("(yield)", 2, "yield"),
        ("output[1:2, 3]", 8, "slice"),
        ("len", 1, "'len' is a function"),
        ("output.score > > 1", 16, "syntax error"),
        ("output.score >", 15, "syntax error"),
        ("  'abc", 3, "unterminated string"),
        ("", 1, "empty"),
        ("   ", 1, "empty"),
        ("'\ud800'", 2, "invalid character"),
        ("(1 +\n 2) & 3", 10, "'&'"),
    ],
)
def test_rejected_constructs(text: str, column: int, fragment: str) -> None:
    error = compile_error(text)
    assert fragment in error.message
    assert error.column == column


@pytest.mark.parametrize(
    "text",
    [
        "().__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "output.__class__.__mro__",
        "output.__dict__",
        "__import__('os')",
        "__builtins__",
        "open('x')",
        "getattr(output, 'x')",
        "type(1)",
        "globals()",
        "vars(output)",
        "eval('1')",
        "exec('1')",
        "compile('1', '', 'eval')",
        "breakpoint()",
        "'{0.__class__}'.format(1)",
        "'%s'.format",
        "[].append",
        "(1).real",
        "str.join",
        "str.join('', ['a'])",
        "len.__self__",
        "(lambda: 1)()",
        "output(1)",
        "len(output)(1)",
        "output['f'](1)",
    ],
)
def test_sandbox_escapes_are_rejected_at_compile_time(text: str) -> None:
    compile_error(text)


@pytest.mark.parametrize(
    ("text", "scope", "fragment"),
    [
        ("output['__class__']", {"output": {}}, "'__class__' is not a key of output"),
        ("output['__class__']", {"output": "abc"}, "string indices must be integers"),
        ("output['__globals__']", {"output": [1]}, "list indices must be integers"),
        ("output.format", {"output": "{0.__class__}"}, "it is a str, not a mapping"),
        ("output[0]", {"output": 5}, "cannot index output: it is an int"),
        ("10**10**10", SCOPE, "the power would have over"),
        ("(-3) ** 200000", SCOPE, "the power would have over"),
        ("(2**7000) * (2**7001)", SCOPE, "the product would have over"),
        ("'a' * 10**9", SCOPE, "too large"),
        ("[1] * 10**9", SCOPE, "too large"),
        ("10**9 * (1,)", SCOPE, "too large"),
        ("[[0] * 6000000, [0] * 6000000]", SCOPE, "too large"),
        ("'a' * 6000000 + 'b' * 6000000", SCOPE, "too large"),
        ("str(['a' * 10000] * 10000)", SCOPE, "too large"),
        ("int('9' * 100000)", SCOPE, "int() of a string longer than 4300"),
        ("10**5000", SCOPE, "the power would have over"),
        ("str(output)", {"output": 10**5000}, "more than 4300 digits"),
        ("str([output])", {"output": 10**5000}, "Exceeds the limit (4300 digits)"),
        ("'%999999999d' % 1", SCOPE, "'%' formatting"),
        ("sum([[1] * 1000] * 1000, [])", SCOPE, "sum() adds numbers"),
        ("round(1, -10**9)", SCOPE, "round() takes at most"),
    ],
)
def test_dangerous_evaluations_fail_safely(text: str, scope: dict[str, Any], fragment: str) -> None:
    assert fragment in eval_error(text, scope)


def test_limits_leave_ordinary_values_alone() -> None:
    assert ev("2 ** 10000") == 2**10000
    assert ev("len('ab' * 100000)") == 200000
    assert ev("len(str(2 ** 1000))") == 302
    assert ev("len([0] * 1000000)") == 1000000


def test_the_size_budget_is_per_evaluation() -> None:
    expr = compile_expr("len('a' * 6000000)", NAMES)
    assert [expr.evaluate(SCOPE) for _ in range(3)] == [6000000] * 3


@pytest.mark.parametrize(
    "text",
    [
        "(" * 1000 + "1" + ")" * 1000,
        "[" * 150 + "]" * 150,
        "-" * 1000 + "1",
        "not " * 1000 + "output",
        "+".join(["1"] * 5000),
        "output" + ".a" * 500,
    ],
)
def test_deep_nesting_is_a_compile_error(text: str) -> None:
    error = compile_error(text)
    assert "nested" in error.message


def test_moderate_nesting_is_fine() -> None:
    assert ev("(" * 50 + "1" + ")" * 50) == 1
    assert ev("+".join(["1"] * 90)) == 90


def test_unknown_names_suggest_a_close_match() -> None:
    error = compile_error("outptu.score > 0.5")
    assert error.message == (
        "unknown name 'outptu' (known: action, context, fetch, output, review; "
        "did you mean 'output'?)"
    )
    assert error.column == 1
    assert compile_error("output.score > limt").column == 16
    assert "did you mean 'len'?" in compile_error("lenn(output)").message
    assert "nothing is in scope" in compile_error("x", ()).message


def test_error_columns_count_characters_across_lines() -> None:
    assert compile_error("é + 'ü' + x", ("é",)).column == 11
    assert compile_error("(output.score >\n  limit)").column == 19
    assert compile_error("  nope").column == 3


def test_compile_error_text_names_the_kind_and_expression() -> None:
    with pytest.raises(ExprError) as info:
        compile_expr("nope", NAMES, kind="transform")
    assert str(info.value).startswith('transform "nope": unknown name')
    assert info.value.kind == "transform"
    assert info.value.source == "nope"
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.message, copy.column, str(copy)) == (info.value.message, 1, str(info.value))


def test_name_missing_at_evaluation() -> None:
    message = eval_error("review.approved", SCOPE)
    assert message == "expression \"review.approved\": 'review' has no value: it did not run"


@pytest.mark.parametrize(
    ("text", "scope", "fragment"),
    [
        ("output.score + 'a'", SCOPE, "TypeError"),
        ("1 / 0", SCOPE, "ZeroDivisionError: division by zero"),
        ("output.items[10]", SCOPE, "index 10 is out of range for output.items (length 3)"),
        ("output.score[0]", SCOPE, "cannot index output.score: it is a float"),
        ("int('x')", SCOPE, "ValueError"),
        ("min([])", SCOPE, "ValueError"),
        ("float(10**400)", SCOPE, "OverflowError"),
        ("{[1]: 2}", SCOPE, "unhashable"),
        ("'a' < 1", SCOPE, "not supported"),
        ("output.items[::0]", SCOPE, "slice step cannot be zero"),
        ("len(output)", {"output": 3}, "TypeError"),
    ],
)
def test_runtime_failures_are_eval_errors(text: str, scope: dict[str, Any], fragment: str) -> None:
    message = eval_error(text, scope)
    assert message.startswith(f'expression "{text}": ')
    assert fragment in message


def test_exceptions_from_user_objects_and_deep_data_are_wrapped() -> None:
    class Touchy:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("do not compare me")

        __hash__ = object.__hash__

    assert "RuntimeError: do not compare me" in eval_error("output == 1", {"output": Touchy()})

    def deep() -> list[Any]:
        value: list[Any] = []
        for _ in range(100_000):
            value = [value]
        return value

    assert "RecursionError" in eval_error(
        "output == context", {"output": deep(), "context": deep()}
    )


def test_compiled_expression_records_its_source_and_free_names() -> None:
    expr = compile_expr("output.score > 0 and review.ok", NAMES, kind="condition")
    assert isinstance(expr, CompiledExpr)
    assert expr.source == "output.score > 0 and review.ok"
    assert expr.names == frozenset({"output", "review"})
    assert compile_expr("len([1])", NAMES).names == frozenset()


def test_compiled_expression_pickles_by_source() -> None:
    expr = compile_expr("output.score * 2", NAMES, kind="transform")
    copy = pickle.loads(pickle.dumps(expr))
    assert copy == expr
    assert copy.evaluate(SCOPE) == 1.4


def test_concurrent_evaluation() -> None:
    expr = compile_expr("len(output.name * 1000) + output.n", NAMES)
    results: dict[int, int] = {}

    def work(n: int) -> None:
        results[n] = expr.evaluate({"output": {"name": "ab", "n": n}})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: 2000 + n for n in range(8)}


# --- properties ---------------------------------------------------------------------------

TOKENS = [
    "output", "context", "review", "len", "str", "x", "__class__", "_", ".", ",", ":", "(",
    ")", "[", "]", "{", "}", "'", '"', "f'", "b'", "*", "**", "+", "-", "/", "//", "%", "@",
    "&", "~", "<", "==", "!=", " in ", " not ", " and ", " or ", " if ", " else ", " is ",
    "lambda", ":=", " for ", "yield", "await", "...", "0", "1.5", "1j", "0x", "é", " ", "\n",
    "\t", "\\", "#", "\x00", "\ud800",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(TOKENS), max_size=30).map("".join)))
def test_any_text_compiles_or_raises_expr_error(text: str) -> None:
    try:
        expr = compile_expr(text, NAMES)
    except ExprError as error:
        assert 1 <= error.column <= len(text) + 1
        assert error.message
    else:
        assert expr.names <= set(NAMES)


LEAVES = st.sampled_from(
    [
        "0", "1", "-1", "7", "2.5", "0.0", "'ab'", "''", "True", "False", "None", "output",
        "context", "review", "output.score", "output.name", "output.items", "output.nested",
        "output.missing", "context.tags", "[1, 2]", "(1,)", "{'a': 1}", "{1, 2}", "99999",
    ]
)  # fmt: skip
BINOPS = st.sampled_from(["+", "-", "*", "/", "//", "%", "**"])
COMPARISONS = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is", "is not"])
FUNCS = st.sampled_from(
    ["len", "min", "max", "abs", "sum", "any", "all", "round", "int", "float", "str", "bool"]
)
KEYS = st.sampled_from(["score", "items", "keys", "a", "deep"])


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(inner, inner)
    return st.one_of(
        st.tuples(inner, BINOPS, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(inner, COMPARISONS, inner, COMPARISONS, inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]} {t[3]} {t[4]})"
        ),
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({' '.join(t)})"),
        st.tuples(st.sampled_from(["-", "+", "not "]), inner).map(lambda t: f"({t[0]}{t[1]})"),
        st.tuples(inner, inner, inner).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.tuples(FUNCS, inner).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(["min", "max", "round", "sum", "int"]), inner, inner).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
        pair.map(lambda t: f"[{t[0]}][0][{t[1]}]"),
        st.tuples(inner, inner, inner).map(lambda t: f"[{t[0]}][0][{t[1]}:{t[2]}]"),
        st.tuples(inner, KEYS).map(lambda t: f"[{t[0]}][0].{t[1]}"),
        pair.map(lambda t: f"[{t[0]}, {t[1]}]"),
        pair.map(lambda t: f"{{{t[0]}: {t[1]}}}"),
    )


EXPRESSIONS = st.recursive(LEAVES, _extend, max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(EXPRESSIONS, st.booleans())
def test_allowed_expressions_return_a_value_or_an_eval_error(text: str, ran: bool) -> None:
    expr = compile_expr(text, NAMES)
    scope = {**SCOPE, "review": {"ok": True}} if ran else SCOPE
    try:
        expr.evaluate(scope)
    except ExprEvalError as error:
        assert str(error).startswith('expression "')
