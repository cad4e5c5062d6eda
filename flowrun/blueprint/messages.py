"""Turning jsonschema's errors into flowrun `Problem`s that say what to fix.

`schema` runs the validator and keeps one problem per location; this module writes each
problem: where it is (`path_label`: "node 'clean': config.maxRetries"), what was expected,
what was found (`value_text`: "string '3'") and a hint ("remove the quotes", "did you mean
'timeout'?", "it belongs under 'config'"). The codes are the stable `schema.*` ones.

It is separate from `schema` because the wording is most of the code and changes for
reasons of its own; `schema` keeps the schema, the validator and the model builder.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from flowrun import errors
from flowrun.errors import PathT, Problem, did_you_mean

if TYPE_CHECKING:  # only annotations: `schema` stays the one module that runs jsonschema
    from jsonschema import ValidationError  # type: ignore[import-untyped]

    from flowrun.blueprint.loader import Document

MAX_SECONDS = 10_000_000  # the longest duration (the schema's maximum, in milliseconds, / 1000)
DURATION_HELP = "a number of milliseconds (250) or a string with a unit (250ms, 2s, 1.5m, 1h)"


def translate(
    doc: Document, error: ValidationError, homes: Mapping[str, str]
) -> Iterator[tuple[int, Problem]]:
    """(rank, problem) pairs for one jsonschema error; a lower rank wins at the same path.

    `homes` maps a key of `config` or `batch` to that section's name, so that a key written
    directly on a node can say where it belongs.
    """
    path: PathT = tuple(error.absolute_path)
    label = path_label(doc.data, path)
    if error.validator == "additionalProperties":
        yield from _unknown_keys(doc, error, path, label, homes)
    elif error.validator == "required":
        for key in error.validator_value:
            if key not in error.instance:
                yield 1, _missing(doc, error, (*path, key), label)
    elif error.validator is None:  # a `false` schema: what a batch node may not have
        yield from _batch_extras(doc, path, label)
    elif error.validator == "type":
        found = f"{value_text(error.instance)}{_type_hint(error.instance, error.validator_value)}"
        message = f"{label}: expected {_types(error.validator_value)}, found {found}"
        yield 0, doc.problem(path, "schema.type", message)
    elif error.validator == "not" and isinstance(error.instance, dict):  # a batch's items
        message = (
            f"{label}: has both 'inputKey' and 'itemsFrom'; a batch reads its items from one "
            "of them, so remove one"
        )
        yield 1, doc.problem((*path, "itemsFrom"), "schema.batch-items", message, key=True)
    elif error.validator == "not":
        suffix = str(error.instance).rsplit("_", 1)[-1]
        message = (
            f"{label}: ids ending in '_{suffix}' are reserved for the nodes a batch expands "
            "into; rename the node"
        )
        yield 3, doc.problem(path, "schema.reserved-id", message)
    else:
        code, detail = _detail(error, path)
        yield 2, doc.problem(path, code, f"{label}: {detail}")


def _unknown_keys(
    doc: Document, error: ValidationError, path: PathT, label: str, homes: Mapping[str, str]
) -> Iterator[tuple[int, Problem]]:
    allowed = list(error.schema.get("properties", {}))
    for key in error.instance:
        if key not in allowed:
            hint = _suggest(key, allowed, path, homes)
            message = f"{label}: unknown key {_short(key)!r}{hint}"
            yield 1, doc.problem((*path, key), "schema.unknown-key", message, key=True)


def _missing(doc: Document, error: ValidationError, path: PathT, label: str) -> Problem:
    key = path[-1]
    if key == "inputKey":
        message = (
            f"{label}: needs 'inputKey' (a list in the run context) or 'itemsFrom' (a file "
            "of items)"
        )
        return doc.problem(path, "schema.required", message)
    if "else" in error.schema_path and len(path) > 2 and path[-2] == "batch":
        message = (
            f"{label}: a batch needs 'uses' (the worker), 'shell' (a command per item) or "
            "'subflow' (a blueprint per item)"
        )
        return doc.problem(path, "schema.node-kind", message)
    if "else" in error.schema_path and len(path) > 2 and path[-2] == "loop":
        message = f"{label}: a loop needs 'uses' (the body) or 'subflow' (a blueprint each time)"
        return doc.problem(path, "schema.node-kind", message)
    if "else" in error.schema_path:  # the node-kind rule: a node without `batch` needs `uses`
        message = (
            f"{label}: a node needs 'uses' (the Python callable to run), 'shell' (a command), "
            "'batch' (a worker run for each item of a list), 'loop' (a body run again "
            "while a condition holds) or 'subflow' (another blueprint)"
        )
        return doc.problem(path, "schema.node-kind", message)
    return doc.problem(path, "schema.required", f"{label}: missing required key '{key}'")


def _batch_extras(doc: Document, path: PathT, label: str) -> Iterator[tuple[int, Problem]]:
    """Keys a `batch` or `loop` node may not have beside its stanza (a `false` schema)."""
    node = _get(doc.data, path)
    if not isinstance(node, dict):
        return
    if "shell" in node and "uses" in node:
        where = "its worker" if path[-1:] == ("batch",) else "the node"
        message = (
            f"{label}: has both 'uses' and 'shell'; 'shell' stands for "
            f"'uses: flowrun.std.shell' as {where}, so keep one of them"
        )
        yield 1, doc.problem((*path, "uses"), "schema.node-kind", message, key=True)
        return
    if "shell" in node and "batch" in node:
        message = (
            f"{label}: has both 'shell' and 'batch'; a batch runs its command per item, "
            "so move 'shell' into 'batch'"
        )
        yield 1, doc.problem((*path, "shell"), "schema.node-kind", message, key=True)
    kind = next((k for k in ("batch", "loop", "subflow") if k in node), "batch")
    called = {"batch": "worker", "loop": "body", "subflow": "blueprint"}[kind]
    if "uses" in node and kind == "subflow":
        message = f"{label}: has both 'uses' and 'subflow'; a node is one or the other"
        yield 1, doc.problem((*path, "uses"), "schema.node-kind", message, key=True)
    elif "uses" in node:
        message = (
            f"{label}: has both 'uses' and '{kind}'; a {kind} node names its {called} in "
            f"'{kind}.uses', so remove 'uses'"
        )
        yield 1, doc.problem((*path, "uses"), "schema.node-kind", message, key=True)
    if "params" in node:
        message = f"{label}: a {kind} node has no 'params' of its own; move them to '{kind}.params'"
        yield 1, doc.problem((*path, "params"), "schema.node-kind", message, key=True)
    for other in ("loop", "subflow", "shell"):
        if other != kind and other in node and not (other == "shell" and kind == "batch"):
            message = f"{label}: has both '{kind}' and '{other}'; a node is one or the other"
            yield 1, doc.problem((*path, other), "schema.node-kind", message, key=True)


# -- message parts ------------------------------------------------------------------------------

_DURATIONS = ("retryDelay", "timeout")
# The schema's `identifier`: (?![\s\S]) ends the string; `$` would let a final newline through.
_IDENTIFIER = "^[A-Za-z0-9_.-]+(?![\\s\\S])"
_BY_PATTERN = {  # what a pattern means, where the field name does not say it (list items)
    _IDENTIFIER: "an id made of letters, digits, '_', '.' or '-'",
    "^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*(?![\\s\\S])": (
        "an exception class name such as 'ConnectionError' or 'package.module.Error'"
    ),
}
_PATTERN_HELP = {
    "id": "an id made of letters, digits, '_', '.' or '-'",
    "source": "a node id (letters, digits, '_', '.' or '-')",
    "target": "a node id (letters, digits, '_', '.' or '-')",
    "fallback": "a node id (letters, digits, '_', '.' or '-')",
    "uses": "a dotted import path such as 'package.module.function' or 'package.module:function'",
    "pool": "a pool name (letters, digits, '_', '.' or '-')",
    "rate": "a rate N/s, N/m or N/h with N above zero (10/s, 600/m, 1000/h)",
}


def _detail(error: ValidationError, path: PathT) -> tuple[str, str]:
    """(code, what was expected and found) for a value-level violation."""
    field, value, limit = (path[-1] if path else ""), error.instance, error.validator_value
    if error.validator == "maximum":
        noun = "an integer" if error.schema.get("type") == "integer" else "a number"
        if field in _DURATIONS or field == "delay":
            noun, limit = "a duration of milliseconds", f"{limit:,} ({MAX_SECONDS:,.0f} s)"
        else:
            limit = f"{limit:,}"
        return "schema.maximum", f"expected {noun} <= {limit}, found {value_text(value)}"
    if field in _DURATIONS and error.validator in ("pattern", "minimum", "exclusiveMinimum"):
        what = "a duration above zero" if field == "timeout" else "a duration"
        return "schema.duration", f"expected {what}: {DURATION_HELP}, found {value_text(value)}"
    if error.validator == "pattern":
        fallback = _BY_PATTERN.get(limit, f"a string matching {limit}")
        expected = _PATTERN_HELP.get(str(field), fallback)
        hint = _uses_hint(value) if field == "uses" else ""
        return "schema.pattern", f"expected {expected}, found {value_text(value)}{hint}"
    if error.validator in ("minimum", "exclusiveMinimum"):
        noun = "an integer" if error.schema.get("type") == "integer" else "a number"
        op = ">=" if error.validator == "minimum" else ">"
        return "schema.minimum", f"expected {noun} {op} {limit}, found {value_text(value)}"
    if error.validator == "enum":
        options = ", ".join(repr(option) for option in limit)
        hint = did_you_mean(value, list(limit), ignore_case=True) if isinstance(value, str) else ""
        return "schema.enum", f"expected one of {options}, found {value_text(value)}{hint}"
    if error.validator == "minItems":
        return "schema.min-items", f"expected at least {limit} item(s), found an empty array"
    if error.validator == "minLength":
        return "schema.empty", "expected a non-empty string, found an empty one"
    return "schema.invalid", error.message


def _suggest(key: str, allowed: list[str], path: PathT, homes: Mapping[str, str]) -> str:
    """' (did you mean ...?)', where the key belongs instead, or the keys that are allowed."""
    if len(path) == 2 and path[0] == "nodes" and key in homes:
        return f" (it belongs under '{homes[key]}')"
    shown = [option for option in allowed if not option.startswith(("_", "$"))]
    hint = did_you_mean(key, allowed, ignore_case=True)
    return hint or f"; expected one of: {', '.join(shown)}"


def _uses_hint(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        return ""
    if callable(getattr(builtins, value, None)):
        return f" (did you mean 'builtins.{value}'?)"
    return f" (name the module too, e.g. 'tasks.{value}' for {value}() in tasks.py)"


def path_label(data: Any, path: PathT) -> str:
    """Names what a path points at: "node 'clean': config.maxRetries", "edges[2]", "id"."""
    if not path:
        return "blueprint"
    owner, rest = "", path
    if len(path) >= 2 and path[0] in ("nodes", "edges") and isinstance(path[1], int):
        item = _get(data, path[:2])
        owner, rest = f"{path[0]}[{path[1]}]", path[2:]
        if path[0] == "nodes" and isinstance(item, dict) and isinstance(item.get("id"), str):
            owner = f"node {_short(item['id'])!r}"
        elif path[0] == "edges" and isinstance(item, dict):
            source, target = item.get("source"), item.get("target")
            if isinstance(source, str) and isinstance(target, str):
                owner = f"edge {_short(source)!r} -> {_short(target)!r}"
    field = errors.json_path(rest)[1:].lstrip(".")
    return ": ".join(part for part in (owner, field) if part)


def _get(data: Any, path: PathT) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def value_text(value: Any) -> str:
    """A value as JSON names it: "string '3'", "integer 3", "null", "array"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}" if value.bit_length() < 64 else "a very large integer"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {_short(value)!r}"
    if isinstance(value, list):
        return "array" if value else "empty array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _types(expected: Any) -> str:
    return " or ".join(expected) if isinstance(expected, list) else str(expected)


def _type_hint(value: Any, expected: Any) -> str:
    wanted = expected if isinstance(expected, list) else [expected]
    if value is None:
        return " (the value is empty: give one, or remove the key)"
    numeric = isinstance(value, str) and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value.strip())
    if numeric and {"integer", "number"} & set(wanted):
        return " (remove the quotes)"
    if isinstance(value, list) and "object" in wanted:
        return " (write key: value pairs, not a list)"
    return ""


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
