"""`${{ expr }}` in strings of `params` (and a shell `command`), compiled once at validate time.

A string that is exactly one `${{ expr }}` takes the expression's value (any JSON type); any
other string splices each value in as text (a string as itself, anything else as JSON), and in
a shell command string each spliced value is passed through `shlex.quote`, so an item can never
add shell syntax. `$${{` is a literal `${{`. The expressions are the edge language of
`expr.compiler`, with the names `input`, `context`, `env` and the node ids.

`compile_params` gives back the mapping itself when no string in it holds a template (the batch
hot path then passes it on untouched), else a `Params`, which `invoke` renders per call with
`render(input, context)`. Everything here pickles (a `CompiledExpr` recompiles from its source),
so a `Params` travels to a process or a Dask worker as it is.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from flowrun.expr.compiler import (
    CompiledExpr,
    ExprError,
    ExprEvalError,
    compile_expr,
    reset_budget,
)
from flowrun.expr.limits import Fail, charge
from flowrun.frozen import Frozen, fast_frozen

TEMPLATE_NAMES = ("input", "context", "env")
_MARK = re.compile(r"\$\$\{\{|\$\{\{")
_CLOSE = "}}"


class TemplateError(Exception):
    """A bad `${{ }}` in a string; `column` is 1-based in the string, `path` inside the params."""

    def __init__(self, message: str, column: int, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message, column, path)
        self.message, self.column, self.path = message, column, path


@fast_frozen
class Template(Frozen):
    """A string with `${{ }}`: literal text and compiled expressions, in order."""

    source: str
    parts: tuple[str | CompiledExpr, ...]
    quote: bool = False

    def render(self, scope: Mapping[str, Any], *, fresh: bool = True) -> Any:
        """The value (one whole-string expression) or the text; the expressions share one
        budget, a fresh one unless `fresh` is false (`Params` gives one to a whole call)."""
        if fresh:
            reset_budget()
        if len(self.parts) == 1 and not isinstance(self.parts[0], str):
            return self.parts[0].evaluate_within(scope)
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = part.evaluate_within(scope)
            text = value if isinstance(value, str) else json.dumps(value, allow_nan=False)
            try:  # the text is kept: `"${{ x }}${{ x }}..."` must not multiply a big x
                charge(len(text))
            except Fail as exc:
                raise ExprEvalError(f"interpolation {_short(part.source)}: {exc}") from None
            out.append(shlex.quote(text) if self.quote else text)
        return "".join(out)


def _short(text: str) -> str:
    return f'"{text if len(text) <= 80 else text[:77] + "..."}"'


def compile_template(text: str, names: Collection[str], *, quote: bool = False) -> str | Template:
    """The string itself (with `$${{` unescaped) when it holds no `${{ }}`, else a `Template`."""
    if "${{" not in text:
        return text
    parts: list[str | CompiledExpr] = []
    literal, pos = "", 0
    for match in _MARK.finditer(text):
        if match.start() < pos:
            continue  # inside an expression already consumed
        literal += text[pos : match.start()]
        if match.group() == "$${{":
            literal, pos = literal + "${{", match.end()
            continue
        end = text.find(_CLOSE, match.end())
        if end < 0:
            raise TemplateError("'${{' is not closed by '}}'", match.start() + 1)
        source = text[match.end() : end]
        try:
            expr = compile_expr(source, names, kind="interpolation")
        except ExprError as exc:
            raise TemplateError(exc.message, match.end() + exc.column) from None
        if literal:
            parts.append(literal)
        parts.append(expr)
        literal, pos = "", end + len(_CLOSE)
    literal += text[pos:]
    if literal:
        parts.append(literal)
    if not any(isinstance(p, CompiledExpr) for p in parts):
        return literal
    # A whole-string expression keeps its type: there is nothing to quote it into.
    return Template(text, tuple(parts), quote and len(parts) > 1)


def _compile_value(
    value: Any, names: Collection[str], path: tuple[str | int, ...], quote_at: Any
) -> tuple[Any, bool]:
    if isinstance(value, str):
        try:
            out = compile_template(value, names, quote=path == quote_at)
        except TemplateError as exc:
            raise TemplateError(exc.message, exc.column, path) from None
        return out, isinstance(out, Template)
    if isinstance(value, Mapping):
        items = {k: _compile_value(v, names, (*path, k), quote_at) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, any(d for _, d in items.values())
    if isinstance(value, list):
        elems = [_compile_value(v, names, (*path, i), quote_at) for i, v in enumerate(value)]
        return [v for v, _ in elems], any(d for _, d in elems)
    return value, False


def compile_params(
    params: Mapping[str, Any],
    names: Collection[str],
    *,
    quote: str | None = None,
    errors: Callable[[TemplateError], None],
) -> Mapping[str, Any]:
    """`params` itself when it holds no template, else a `Params`. `quote` names the key whose
    string value is a shell command; each bad template is passed to `errors`."""
    tree: dict[str, Any] = {}
    dynamic = False
    for key, value in params.items():
        try:
            tree[key], dyn = _compile_value(value, names, (key,), (quote,))
        except TemplateError as exc:
            errors(exc)
            tree[key], dyn = value, False
        dynamic = dynamic or dyn
    return Params(tree) if dynamic else params


class Env(Mapping[str, str]):
    """`env` in a template: the environment, read-only; a missing variable fails the node."""

    def __getitem__(self, key: str) -> str:
        try:
            return os.environ[key]
        except KeyError:
            raise Fail(f"environment variable '{key}' is not set") from None

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


_ENV = Env()


class _Scope(Mapping[str, Any]):
    """The names a template sees, read lazily: no copy of the run context per call."""

    __slots__ = ("_context", "_input")

    def __init__(self, input: Any, context: Mapping[str, Any]) -> None:
        self._input, self._context = input, context

    def __getitem__(self, name: str) -> Any:
        if name == "input":
            return self._input
        if name == "context":
            return self._context
        if name == "env":
            return _ENV
        return self._context[name]

    def __iter__(self) -> Iterator[str]:
        return iter((*TEMPLATE_NAMES, *self._context))

    def __len__(self) -> int:
        return len(TEMPLATE_NAMES) + len(self._context)


def _render(value: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(value, Template):
        return value.render(scope, fresh=False)
    if isinstance(value, dict):
        return {k: _render(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, scope) for v in value]
    return value


class Params(Mapping[str, Any]):
    """Keyword arguments holding templates; `render` gives the plain dict for one call.

    `bound` are plain keyword arguments added by the engine (an `inputs` mapping): they are
    passed as they are, under the params, and are the template's `input` when the call has no
    positional input."""

    __slots__ = ("bound", "tree")
    dynamic = True

    def __init__(self, tree: Mapping[str, Any], bound: Mapping[str, Any] | None = None) -> None:
        self.tree = dict(tree)
        self.bound = dict(bound or {})

    def __getitem__(self, key: str) -> Any:
        return self.tree[key] if key in self.tree else self.bound[key]

    def __iter__(self) -> Iterator[str]:
        return iter({**self.bound, **self.tree})

    def __len__(self) -> int:
        return len({**self.bound, **self.tree})

    def render(self, args: tuple[Any, ...], context: Mapping[str, Any]) -> dict[str, Any]:
        """The call's keyword arguments, for positional `args` and the run context."""
        input = args[0] if args else (self.bound or None)
        scope = _Scope(input, context)
        reset_budget()  # one budget for all of the call's expressions
        return {**self.bound, **{k: _render(v, scope) for k, v in self.tree.items()}}

    def __reduce__(self) -> tuple[Any, ...]:
        return (Params, (self.tree, self.bound))


def with_kwargs(kwargs: Mapping[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    """`{**kwargs, **params}`, keeping a `Params` a `Params` (rendered later, per call)."""
    if isinstance(params, Params):
        return Params(params.tree, {**params.bound, **kwargs}) if kwargs else params
    return {**kwargs, **params}


def template_scope(input: Any, context: Mapping[str, Any]) -> Mapping[str, Any]:
    """The names one template outside `params` sees (a batch's `itemsFrom`): as in `Params`."""
    return _Scope(input, context)
