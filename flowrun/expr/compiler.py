"""Compile edge `condition` / `transform` expressions into fast, sandboxed evaluators.

The language is an allow-listed subset of Python expressions (SPEC §1 "Edges"). `compile_expr`
parses the text once with `ast.parse`, rejects every construct not on the list (naming the
column), and turns the tree into nested closures, so `CompiledExpr.evaluate` only calls
closures. Nothing here runs `eval`/`exec` or reads attributes of user data: `x.key` reads the
mapping key "key", never an attribute, so `output.items` is a key and not the dict method.
What the closures call at run time (key reads, guarded arithmetic and builtins, the size
limits) is in `expr.limits`; this module is the compiler.

Errors::

    ExprError       the text is not a valid expression (compile time; .message, .column)
    ExprEvalError   evaluating a valid expression failed (missing key, wrong type, a size limit)
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import field
from typing import Any, ClassVar, NoReturn

from flowrun.errors import closest
from flowrun.expr.limits import (
    BINOPS,
    BUDGET,
    CMPOPS,
    FUNCS,
    UNARY,
    Fail,
    Fn,
    attr_reader,
    budget,
    check_data,
    index_reader,
    name_reader,
)
from flowrun.frozen import Frozen, fast_frozen

MAX_DEPTH = 100  # AST nesting; the closures recurse once per level
MAX_LENGTH = 10_000  # characters of one expression: parsing and compiling cost grow with it
DATA_KINDS = frozenset({"transform", "interpolation"})  # kinds whose value is data for a node

_NONE: Fn = lambda scope: None  # noqa: E731  (a missing slice bound)
_WHITESPACE = " \t\r\n\f\v"


class ExprError(Exception):
    """An invalid expression. `column` is the 1-based offset of the problem in the text."""

    def __init__(self, message: str, column: int, source: str = "", kind: str = "expression"):
        super().__init__(message, column, source, kind)  # all in args, so that it pickles
        self.message, self.column, self.source, self.kind = message, column, source, kind

    def __str__(self) -> str:
        return f'{self.kind} "{_clip(self.source)}": {self.message} (column {self.column})'


class ExprEvalError(Exception):
    """Evaluating an expression failed; the message names the expression."""


@fast_frozen
class CompiledExpr(Frozen):
    """A compiled expression; `evaluate` may be called any number of times, from any thread."""

    source: str
    names: frozenset[str]
    kind: str = "expression"
    _fn: Fn = field(repr=False, compare=False, kw_only=True)

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """Evaluate with `scope` (name -> value); every failure is raised as `ExprEvalError`."""
        budget.left = BUDGET
        return self.evaluate_within(scope)

    def evaluate_within(self, scope: Mapping[str, Any]) -> Any:
        """`evaluate` on what is left of the budget that the caller's last `reset_budget` (or
        evaluation) set: the expressions of one call's params share one budget."""
        try:
            value = self._fn(scope)
            if self.kind in DATA_KINDS:
                check_data(value)
            return value
        except Fail as exc:
            raise ExprEvalError(f'{self.kind} "{_clip(self.source)}": {exc}') from None
        except Exception as exc:  # any failure of user data or a builtin is the user's problem
            raise ExprEvalError(f'{self.kind} "{_clip(self.source)}": {_explain(exc)}') from exc

    def __reduce__(self) -> tuple[Any, ...]:
        # closures do not pickle; the process executor gets the source and recompiles it
        return (_recompile, (self.source, self.names, self.kind))


def reset_budget() -> None:
    """Give the evaluations that follow on this thread one fresh `BUDGET` to share."""
    budget.left = BUDGET


def compile_expr(text: str, names: Collection[str], *, kind: str = "expression") -> CompiledExpr:
    """Check `text` against the allow-list and compile it; raise `ExprError` if it is invalid.

    `names` are the names in scope; `kind` ("condition", "transform") is used in messages.
    """
    if len(text) > MAX_LENGTH:
        message = f"the expression is too long ({len(text):,} characters; at most {MAX_LENGTH:,})"
        raise ExprError(message, 1, source=text, kind=kind)
    body = text.lstrip(_WHITESPACE)
    base = len(text) - len(body)  # columns count from the start of the original text
    if not body:
        raise ExprError("the expression is empty", 1, source=text, kind=kind)
    compiler = _Compiler(text, body, base, frozenset(names), kind)
    tree = compiler.parse()
    compiler.check_depth(tree)
    try:
        fn = compiler.build(tree)
    except RecursionError:  # only when the caller is already deep in its own stack
        raise ExprError("the expression is too complex", 1, source=text, kind=kind) from None
    return CompiledExpr(text, frozenset(compiler.used), kind, _fn=fn)


def _recompile(source: str, names: frozenset[str], kind: str) -> CompiledExpr:
    return compile_expr(source, names, kind=kind)


class _Compiler:
    """One compilation: checks each node against the allow-list and returns its closure."""

    HANDLERS: ClassVar[dict[type[ast.AST], Callable[[_Compiler, Any], Fn]]]

    def __init__(self, source: str, body: str, base: int, names: frozenset[str], kind: str):
        self.source, self.body, self.base, self.names, self.kind = source, body, base, names, kind
        self.used: set[str] = set()
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", body)]

    def fail(self, message: str, column: int) -> NoReturn:
        raise ExprError(message, column, source=self.source, kind=self.kind)

    def fail_at(self, node: ast.expr | ast.keyword, message: str) -> NoReturn:
        self.fail(message, self.base + self.offset(node.lineno, node.col_offset) + 1)

    def offset(self, lineno: int, col: int) -> int:
        """Character offset in `body` of an AST position (whose column counts UTF-8 bytes)."""
        start = self.line_starts[min(max(lineno, 1), len(self.line_starts)) - 1]
        line = self.body[start:].encode()[:col]
        return start + len(line.decode("utf-8", "ignore"))

    def parse(self) -> ast.expr:
        try:
            with warnings.catch_warnings():  # e.g. invalid escapes: the text is data, not code
                warnings.simplefilter("ignore")
                return ast.parse(self.body, mode="eval").body
        except SyntaxError as exc:
            start = self.line_starts[min(max(exc.lineno or 1, 1), len(self.line_starts)) - 1]
            # offset 0 is how the parser reports "the text ended too early"
            at = start + exc.offset if exc.offset else len(self.body.rstrip()) + 1
            column = min(self.base + max(at, 1), len(self.source) + 1)
            self.fail(f"syntax error: {exc.msg}", column)
        except UnicodeEncodeError as exc:
            self.fail("the text contains an invalid character", self.base + exc.start + 1)
        except (RecursionError, MemoryError):
            self.fail("the expression is nested too deeply", 1)
        except (ValueError, OverflowError) as exc:
            self.fail(f"the expression cannot be read: {exc}", 1)

    def check_depth(self, root: ast.expr) -> None:
        # iterative, so that a deep tree is reported instead of overflowing the stack
        stack = [(root, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                self.fail_at(node, f"the expression is nested too deeply (over {MAX_DEPTH})")
            kids = (c for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr))
            stack.extend((child, depth + 1) for child in kids)

    def segment(self, node: ast.expr) -> str:
        text = ast.get_source_segment(self.body, node) or ast.unparse(node)
        return _clip(" ".join(text.split()), 40)

    def build(self, node: ast.expr) -> Fn:
        handler = self.HANDLERS.get(type(node))
        if handler is None:
            message = _REJECTED.get(type(node), f"{type(node).__name__} is not allowed")
            self.fail_at(node, message)
        return handler(self, node)

    def constant(self, node: ast.Constant) -> Fn:
        value = node.value
        if isinstance(value, bytes):
            self.fail_at(node, "bytes literals are not supported")
        if isinstance(value, complex):
            self.fail_at(node, "complex numbers are not supported")
        if value is Ellipsis:
            self.fail_at(node, "'...' is not allowed")
        return lambda scope: value

    def name(self, node: ast.Name) -> Fn:
        name = node.id
        if name.startswith("__"):
            self.fail_at(node, f"names starting with '__' are not allowed: '{name}'")
        if name in self.names:
            self.used.add(name)
            return name_reader(name)
        if name in FUNCS:
            self.fail_at(node, f"'{name}' is a function: call it, as in {name}(...)")
        known = f"known: {_listing(self.names)}" if self.names else "nothing is in scope"
        self.fail_at(node, f"unknown name '{name}' ({known}{_did_you_mean(name, self.names)})")

    def attribute(self, node: ast.Attribute) -> Fn:
        end = self.base + self.offset(node.end_lineno or node.lineno, node.end_col_offset or 0)
        if node.attr.startswith("_"):
            self.fail(
                f"'.{node.attr}': names starting with '_' are not allowed after a dot; "
                f"read such a key as x['{node.attr}']",
                end - len(node.attr) + 1,
            )
        if isinstance(node.value, (ast.Constant, ast.List, ast.Tuple, ast.Set)):
            self.fail_at(node, f"'.{node.attr}' reads a mapping key; a literal has none")
        return attr_reader(self.build(node.value), node.attr, self.segment(node.value))

    def subscript(self, node: ast.Subscript) -> Fn:
        index = node.slice
        key_fn = self.slice_of(index) if isinstance(index, ast.Slice) else self.build(index)
        return index_reader(self.build(node.value), key_fn, self.segment(node.value))

    def slice_of(self, node: ast.Slice) -> Fn:
        parts = (node.lower, node.upper, node.step)
        lo, hi, step = (_NONE if p is None else self.build(p) for p in parts)
        return lambda scope: slice(lo(scope), hi(scope), step(scope))

    def binop(self, node: ast.BinOp) -> Fn:
        op = BINOPS.get(type(node.op))
        if op is None:
            self.fail(
                f"operator '{_SYMBOLS[type(node.op)]}' is not supported", self.op_column(node)
            )
        left, right = self.build(node.left), self.build(node.right)
        return lambda scope: op(left(scope), right(scope))

    def op_column(self, node: ast.BinOp) -> int:
        left = node.left
        start = self.offset(left.end_lineno or left.lineno, left.end_col_offset or 0)
        stop = self.offset(node.right.lineno, node.right.col_offset)
        gap = self.body[start:stop]
        skip = len(gap) - len(gap.lstrip(_WHITESPACE + ")"))  # closing parens of the left side
        return self.base + start + skip + 1

    def unaryop(self, node: ast.UnaryOp) -> Fn:
        if isinstance(node.op, ast.Invert):
            self.fail_at(node, "operator '~' is not supported")
        fn, operand = UNARY[type(node.op)], self.build(node.operand)
        return lambda scope: fn(operand(scope))

    def boolop(self, node: ast.BoolOp) -> Fn:
        fns = [self.build(v) for v in node.values]
        is_and = isinstance(node.op, ast.And)

        def run(scope: Mapping[str, Any]) -> Any:
            for fn in fns:  # short-circuit, returning the deciding operand, as Python does
                value = fn(scope)
                if bool(value) is not is_and:
                    return value
            return value

        return run

    def compare(self, node: ast.Compare) -> Fn:
        first = self.build(node.left)
        rest = [
            (CMPOPS[type(op)], self.build(c))
            for op, c in zip(node.ops, node.comparators, strict=True)
        ]
        if len(rest) == 1:
            ((op, right),) = rest
            return lambda scope: op(first(scope), right(scope))

        def chain(scope: Mapping[str, Any]) -> Any:
            left = first(scope)
            for op, fn in rest:  # `a < b < c` is `a < b and b < c`, with b evaluated once
                right = fn(scope)
                result = op(left, right)
                if not result:
                    return result
                left = right
            return result

        return chain

    def ifexp(self, node: ast.IfExp) -> Fn:
        test, body, orelse = map(self.build, (node.test, node.body, node.orelse))
        return lambda scope: body(scope) if test(scope) else orelse(scope)

    def call(self, node: ast.Call) -> Fn:
        func = node.func
        if not isinstance(func, ast.Name) or func.id not in FUNCS or func.id.startswith("__"):
            self.fail_at(func, self.bad_call(func))
        if node.keywords:
            self.fail_at(node.keywords[0], "keyword arguments are not allowed")
        fn, low, high = FUNCS[func.id]
        if not low <= len(node.args) <= high:
            want = f"{low} to {high}" if high < 99 else f"at least {low}"
            want = "1 argument" if low == high == 1 else f"{want} arguments"
            self.fail_at(node, f"{func.id}() takes {want} ({len(node.args)} given)")
        args = [self.build(a) for a in node.args]
        if len(args) == 1:
            (arg,) = args
            return lambda scope: fn(arg(scope))
        return lambda scope: fn(*[a(scope) for a in args])

    def bad_call(self, func: ast.expr) -> str:
        allowed = f"only {_listing(FUNCS)} can be called"
        if not isinstance(func, ast.Name):
            return f"'{self.segment(func)}' cannot be called: {allowed}"
        if func.id.startswith("__"):
            return f"names starting with '__' are not allowed: '{func.id}'"
        return f"'{func.id}' is not an allowed function ({allowed}{_did_you_mean(func.id, FUNCS)})"

    def display(self, node: ast.List | ast.Tuple | ast.Set) -> Fn:
        fns = [self.build(e) for e in node.elts]
        build = {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)]
        return lambda scope: build([fn(scope) for fn in fns])

    def mapping(self, node: ast.Dict) -> Fn:
        pairs = []
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                self.fail_at(value, "'**' unpacking is not allowed")
            pairs.append((self.build(key), self.build(value)))
        return lambda scope: {k(scope): v(scope) for k, v in pairs}


_Compiler.HANDLERS = {
    ast.Constant: _Compiler.constant,
    ast.Name: _Compiler.name,
    ast.Attribute: _Compiler.attribute,
    ast.Subscript: _Compiler.subscript,
    ast.BinOp: _Compiler.binop,
    ast.UnaryOp: _Compiler.unaryop,
    ast.BoolOp: _Compiler.boolop,
    ast.Compare: _Compiler.compare,
    ast.IfExp: _Compiler.ifexp,
    ast.Call: _Compiler.call,
    ast.List: _Compiler.display,
    ast.Tuple: _Compiler.display,
    ast.Set: _Compiler.display,
    ast.Dict: _Compiler.mapping,
}


_SYMBOLS = {ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>"}
_SYMBOLS[ast.MatMult] = "@"
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_REJECTED: dict[type[ast.AST], str] = {
    **dict.fromkeys(_COMPREHENSIONS, "comprehensions are not allowed"),
    ast.Lambda: "lambda is not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.JoinedStr: "f-strings are not supported; build text with str(x) and +",
    ast.Starred: "'*' unpacking is not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Slice: "a slice is only allowed directly inside [ ]",
}


def _explain(exc: Exception) -> str:
    try:
        detail = str(exc)
    except Exception:
        detail = ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _listing(names: Collection[str], limit: int = 12) -> str:
    ordered = sorted(names)
    return ", ".join(ordered[:limit]) + (", ..." if len(ordered) > limit else "")


def _did_you_mean(word: str, candidates: Collection[str]) -> str:
    close = closest(word, candidates)
    return f"; did you mean '{close}'?" if close else ""
