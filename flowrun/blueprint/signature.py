"""Check, before anything runs, that each node's function can take the call flowrun will make.

The call is SPEC §1's: `fn(input, **params)` with an input, `fn(**params)` without,
`fn(**inputs_mapping, **params)` with an `inputs` mapping, a batch worker `fn(item,
**batch.params)`, a loop body `fn(input, **loop.params)` for its first iteration (as a node's
call) and `fn(previous_output, **loop.params)` for every later one, and `ctx=` when the
function declares `ctx`. The nodes of a subflow's child blueprint are checked as its own
nodes, at its own file's line and column (`api`). Binding that shape to
`inspect.signature(fn)` finds a missing required argument, an unknown keyword (with "did you
mean"), or a worker that cannot take an item, at `validate` time rather than once per item.
A function without a signature (some builtins) is not checked.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from flowrun.blueprint.resolve import Target
from flowrun.errors import Problem
from flowrun.errors import did_you_mean as suggest
from flowrun.model import Graph, NodeSpec

_INPUT = object()  # stands for the node's input or the batch item


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _shape(spec: NodeSpec, graph: Graph, fallbacks: set[str]) -> tuple[bool | None, list[str]]:
    """(takes an input? None when it depends on the failed node, keyword names)."""
    if spec.batch is not None:
        return True, list(spec.batch.params)
    names = list(spec.loop.params if spec.loop is not None else spec.params)
    if isinstance(spec.inputs, Mapping):
        return False, [*spec.inputs, *names]
    if spec.inputs is not None:
        return True, names
    if spec.id in fallbacks:
        return None, names  # it receives the input of whichever node it stands in for
    return bool(graph.preds.get(spec.id)), names


def _described(spec: NodeSpec, has_input: bool | None, names: list[str], ctx: bool) -> str:
    fn = spec.batch.uses if spec.batch else spec.loop.uses if spec.loop else spec.uses
    first = ["item"] if spec.batch else ["input"] if has_input else []
    kw = ["**inputs"] if isinstance(spec.inputs, Mapping) and has_input is not True else []
    own = spec.batch.params if spec.batch else spec.loop.params if spec.loop else spec.params
    kw += ["**params"] if own else []
    call = ", ".join([*first, *kw, *(["ctx"] if ctx else [])])
    return f"flowrun calls it as {fn}({call})"


def _problems(
    spec: NodeSpec, target: Target, graph: Graph, fallbacks: set[str], sig: inspect.Signature
) -> list[tuple[tuple[str | int, ...], str, str]]:
    has_input, names = _shape(spec, graph, fallbacks)
    if spec.loop is not None:
        first = _bind(spec, target, sig, has_input, names)
        # iterations 2.. get the previous iteration's output, and the params only
        return first or _bind(spec, target, sig, True, list(spec.loop.params))
    return _bind(spec, target, sig, has_input, names)


def _bind(
    spec: NodeSpec,
    target: Target,
    sig: inspect.Signature,
    has_input: bool | None,
    names: list[str],
) -> list[tuple[tuple[str | int, ...], str, str]]:
    """The problems of calling `target` with (an input when `has_input`) and `names`."""
    params = sig.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    # The common case, checked without building any message (rendering a signature costs
    # more than binding it, and a blueprint may call one function many times).
    known = var_kw or all(name in params for name in names)
    if known and _binds(sig, has_input, names, target.wants_ctx) is None:
        return []
    where = ("batch", "params") if spec.batch else ("loop", "params") if spec.loop else ("params",)
    what = (
        f"batch '{spec.id}' worker" if spec.batch
        else f"loop '{spec.id}' body" if spec.loop
        else f"node '{spec.id}'"
    )  # fmt: skip
    label = f"{target.uses}{sig}"
    how = _described(spec, has_input, names, target.wants_ctx)
    out: list[tuple[tuple[str | int, ...], str, str]] = []
    keywords = [n for n in params if params[n].kind is not inspect.Parameter.POSITIONAL_ONLY]
    for name in names:
        if name not in params and not var_kw:
            path = (*where, name) if name not in _mapping(spec) else ("inputs", name)
            out.append((path, "signature.unknown-argument",
                        f"{what}: {label} has no parameter '{name}'"
                        f"{suggest(name, keywords)}; {how}"))  # fmt: skip
    if out:
        return out
    error = _binds(sig, has_input, names, target.wants_ctx)
    if error is None:
        return []
    field = ("batch", "uses") if spec.batch else ("loop", "uses") if spec.loop else ("uses",)
    if spec.batch is not None and "too many positional" in error:
        msg = f"{what}: {label} cannot take an item; {how}: give it a first parameter"
        return [(field, "signature.no-item", msg)]
    return [(field, "signature.bad-call", f"{what}: {label} cannot be called so: {error}; {how}")]


def _binds(
    sig: inspect.Signature, has_input: bool | None, names: list[str], ctx: bool
) -> str | None:
    """None when the call binds to `sig` (with or without an input when `has_input` is None),
    else the last binding error."""
    kwargs: dict[str, Any] = dict.fromkeys(names)
    if ctx:
        kwargs["ctx"] = None
    error = None
    for with_input in [True, False] if has_input is None else [has_input]:
        try:
            sig.bind(*((_INPUT,) if with_input else ()), **kwargs)
        except TypeError as exc:
            error = str(exc)
        else:
            return None
    return error


def _mapping(spec: NodeSpec) -> Mapping[str, str]:
    return spec.inputs if isinstance(spec.inputs, Mapping) else {}


def check_calls(graph: Graph, targets: Mapping[str, Target]) -> list[Problem]:
    """Every node whose function cannot take the call flowrun makes, one problem each."""
    bp = graph.blueprint
    fallbacks = set(graph.fallbacks)
    problems = []
    sigs: dict[str, inspect.Signature | None] = {}  # uses -> its signature, read once
    # (uses, takes an input, keyword names) of the plain calls known to bind: many nodes
    # calling one function the same way are bound once
    fine: set[tuple[str, bool | None, tuple[str, ...]]] = set()
    for spec in bp.nodes:
        if not spec.calls:
            continue  # a subflow: its child's nodes are checked as the child's own
        uses = spec.calls[0][0]
        target = targets.get(uses) if uses else None
        if target is None or uses is None:
            continue
        if uses not in sigs:
            sigs[uses] = _signature(target.fn)
        sig = sigs[uses]
        if sig is None:
            continue
        key = None
        if spec.loop is None:
            has_input, names = _shape(spec, graph, fallbacks)
            key = (uses, has_input, tuple(names))
            if key in fine:
                continue
        found = _problems(spec, target, graph, fallbacks, sig)
        if not found and key is not None:
            fine.add(key)
        for path, code, message in found:
            if bp.document is not None:
                problems.append(bp.document.problem((*spec.path, *path), code, message))
            else:
                problems.append(Problem(bp.file, 1, 1, "$", code, message))
    return problems
