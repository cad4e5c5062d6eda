"""Check and compile each node's `params`: `${{ }}` templates, and the keys of `flowrun.std.shell`.

Part of `expand` (a stage that spans the document): a template may name any node id, so the
ids must be known. A node whose params hold a template gets a `Params` (`expr.template`) in
place of its mapping; the engine renders it per call. Problems point at the string, with the
column of the bad expression inside it when the string is written on one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from flowrun.blueprint.schema import SHELL_USES
from flowrun.errors import PathT
from flowrun.expr.template import TEMPLATE_NAMES, TemplateError, compile_params, compile_template
from flowrun.model import BatchSpec, Blueprint, NodeSpec
from flowrun.std.shell import OUTPUTS, PARAMS

# Where `_Checker.add` records a problem: (path, code, message, at=(text, column) | None).
Add = Callable[..., None]


def compile_all(bp: Blueprint, specs: dict[str, NodeSpec], add: Add) -> dict[str, NodeSpec]:
    """The specs with their params compiled; every problem is passed to `add`."""
    names = [*TEMPLATE_NAMES, *(n for n in specs if n.isidentifier())]
    base = str(bp.document.path.resolve().parent) if bp.document is not None else None
    out: dict[str, NodeSpec] = {}
    for sid, spec in specs.items():
        if spec.batch is not None:
            where: PathT = (*spec.path, "batch")
            params = _one(bp, where, spec.batch.uses, spec.batch.params, names, base, add)
            paths = _paths(spec.batch, where, names, add)
            batch = dataclasses.replace(spec.batch, params=params, paths=paths)
            out[sid] = dataclasses.replace(spec, batch=batch)
        elif spec.uses is not None:
            params = _one(bp, spec.path, spec.uses, spec.params, names, base, add)
            # Most nodes' params hold no template: the spec stays as it is (no copy per node).
            out[sid] = spec if params is spec.params else dataclasses.replace(spec, params=params)
        else:
            out[sid] = spec
    return out


def _paths(batch: BatchSpec, where: PathT, names: list[str], add: Add) -> dict[str, Any]:
    """`itemsFrom` / `outputTo` given as `${{ }}`, compiled (rendered when the batch starts)."""
    out: dict[str, Any] = {}
    for key, text in (("itemsFrom", batch.items_from), ("outputTo", batch.output_to)):
        if text is None or "${{" not in text:
            continue
        try:
            out[key] = compile_template(text, names)
        except TemplateError as exc:
            message = f"interpolation: {exc.message}"
            add((*where, key), "expr-interpolation", message, at=(text, exc.column))
    return out


def _one(
    bp: Blueprint,
    where: PathT,
    uses: str,
    params: Mapping[str, Any],
    names: list[str],
    base: str | None,
    add: Add,
) -> Mapping[str, Any]:
    shell = uses == SHELL_USES
    if not params and not shell:
        return params  # nothing to check or compile
    shorthand = shell and _has_shorthand(bp, where)

    def path_of(inner: tuple[str | int, ...]) -> PathT:
        if shorthand and inner[:1] == ("command",):
            return (*where, "shell", *inner[1:])
        return (*where, "params", *inner)

    def bad(exc: TemplateError) -> None:
        text = _get(params, exc.path)
        at = (text, exc.column) if isinstance(text, str) else None
        add(path_of(exc.path), "expr-interpolation", f"interpolation: {exc.message}", at=at)

    if shell:
        _check_shell(params, path_of, where, add)
        if base is not None and "_dir" not in params:
            params = {**params, "_dir": base}
    return compile_params(params, names, quote="command" if shell else None, errors=bad)


def _check_shell(
    params: Mapping[str, Any], path_of: Callable[[tuple[str, ...]], PathT], where: PathT, add: Add
) -> None:
    from flowrun.errors import did_you_mean as suggest

    for key in params:
        if key not in PARAMS:
            message = (
                f"unknown key {key!r} in params of {SHELL_USES}{suggest(key, PARAMS)}; "
                f"it takes {', '.join(PARAMS)}"
            )
            add(path_of((key,)), "params.unknown-key", message, key=True)
    if "command" not in params:
        add((*where, "params"), "params.missing", f"{SHELL_USES} needs params.command (or shell:)")
        return
    command = params["command"]
    if not isinstance(command, str | list) or not command:
        found = type(command).__name__
        message = f"command must be a string (run by /bin/sh -c) or a non-empty list, found {found}"
        add(path_of(("command",)), "params.command", message)
    output = params.get("output", "text")
    if isinstance(output, str) and "${{" not in output and output not in OUTPUTS:
        choices = f"choose one of {', '.join(OUTPUTS)}{suggest(output, OUTPUTS)}"
        add(path_of(("output",)), "params.output", f"output {output!r}: {choices}")
    for key, kind, noun in (("check", bool, "a boolean"), ("env", dict, "a mapping"),
                            ("cwd", str, "a string")):  # fmt: skip
        value = params.get(key)
        template = isinstance(value, str) and "${{" in value
        if value is not None and not template and not isinstance(value, kind):
            message = f"{key} must be {noun}, found {type(value).__name__}"
            add(path_of((key,)), f"params.{key}", message)


def _has_shorthand(bp: Blueprint, where: PathT) -> bool:
    doc = bp.document
    raw = _get(getattr(doc, "data", None), where) if doc is not None else None
    return isinstance(raw, dict) and "shell" in raw


def _get(data: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        is_key = isinstance(data, dict) and part in data
        if is_key or (isinstance(data, list) and isinstance(part, int) and part < len(data)):
            data = data[part]
        else:
            return None
    return data
