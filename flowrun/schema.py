"""The blueprint JSON Schema, and `check`: a loaded `Document` becomes a frozen `Blueprint`.

The only module that uses jsonschema. Every violation becomes a `Problem` at the file:line:column
of the offending key (unknown keys) or value (wrong values), with a stable `schema.*` code and a
message saying what was expected, what was found and how to fix it; all are reported at once.
Cross-references, duplicate ids, cycles, expressions and imports are `expand`'s job, not this.
"""

from __future__ import annotations

import builtins
import difflib
import functools
import json
import math
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError  # type: ignore[import-untyped]

from flowrun import errors
from flowrun.errors import BlueprintError, PathT, Problem
from flowrun.loader import Document
from flowrun.model import BatchSpec, Blueprint, Config, EdgeSpec, NodeSpec

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_HELP = "a number of milliseconds (250) or a string with a unit (250ms, 2s, 1.5m, 1h)"


def schema_text() -> str:
    """The blueprint JSON Schema (Draft 2020-12), as shipped: what `flowrun schema` prints."""
    return resources.files("flowrun").joinpath("schema.json").read_text(encoding="utf-8")


@functools.cache
def schema() -> dict[str, Any]:
    """The blueprint JSON Schema as a dict, loaded once. Treat it as read-only."""
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded


def parse_duration(value: int | float | str) -> float:
    """Seconds in a duration: a number is milliseconds; a string has a unit (ms, s, m, h)."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value / 1000
        elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
            seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
        else:
            raise ValueError
    except (ValueError, OverflowError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: expected {_DURATION_HELP}")
    return seconds


def check(doc: Document) -> Blueprint:
    """Validate `doc.data` against the schema and build the `Blueprint`, or raise every problem."""
    problems = _schema_problems(doc)
    if not problems:
        builder = _Builder(doc)
        blueprint = builder.blueprint()
        problems = builder.problems
    if problems:
        raise BlueprintError(sorted(problems, key=lambda p: (p.line, p.column, p.path)))
    return blueprint


# -- schema violations -> problems --------------------------------------------------------------


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(_inline_refs(schema(), schema()["$defs"]))


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    # Resolving "$ref" costs jsonschema a third of its time on a large blueprint; the shipped
    # file keeps its $defs for readers and editors, the validator gets them written out.
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _inline_refs(value, defs) for key, value in node.items() if key != "$defs"}
    ref = out.pop("$ref", None)
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        # Siblings of these refs are annotations or `not`, never a clashing keyword.
        return {**_inline_refs(defs[ref.removeprefix("#/$defs/")], defs), **out}
    return out


def _schema_problems(doc: Document) -> list[Problem]:
    best: dict[str, tuple[int, Problem]] = {}
    for error in _validator().iter_errors(doc.data):
        for rank, problem in _translate(doc, error):
            # One problem per location: a wrong type also breaks the pattern, the if/then
            # rules and `not` on the same value; the most basic complaint is the useful one.
            if problem.path not in best or rank < best[problem.path][0]:
                best[problem.path] = (rank, problem)
    return [problem for _, problem in best.values()]


def _translate(doc: Document, error: ValidationError) -> Iterator[tuple[int, Problem]]:
    """(rank, problem) pairs for one jsonschema error; a lower rank wins at the same path."""
    path: PathT = tuple(error.absolute_path)
    label = _label(doc.data, path)
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        for key in error.instance:
            if key not in allowed:
                message = f"{label}: unknown key {_short(key)!r}{_suggest(key, allowed, path)}"
                yield 1, doc.problem((*path, key), "schema.unknown-key", message, key=True)
    elif error.validator == "required":
        for key in error.validator_value:
            if key not in error.instance:
                yield 1, _missing(doc, error, (*path, key), label)
    elif error.validator is None:  # a `false` schema: what a batch node may not have
        yield from _batch_extras(doc, path, label)
    elif error.validator == "type":
        found = f"{_found(error.instance)}{_type_hint(error.instance, error.validator_value)}"
        message = f"{label}: expected {_types(error.validator_value)}, found {found}"
        yield 0, doc.problem(path, "schema.type", message)
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


def _missing(doc: Document, error: ValidationError, path: PathT, label: str) -> Problem:
    key = path[-1]
    if "else" in error.schema_path:  # the node-kind rule: a node without `batch` needs `uses`
        message = (
            f"{label}: a node needs 'uses' (the Python callable to run) "
            "or 'batch' (a worker run for each item of a list)"
        )
        return doc.problem(path, "schema.node-kind", message)
    return doc.problem(path, "schema.required", f"{label}: missing required key '{key}'")


def _batch_extras(doc: Document, path: PathT, label: str) -> Iterator[tuple[int, Problem]]:
    node = _get(doc.data, path)
    if isinstance(node, dict) and "uses" in node:
        message = (
            f"{label}: has both 'uses' and 'batch'; a batch node names its worker in "
            "'batch.uses', so remove 'uses'"
        )
        yield 1, doc.problem((*path, "uses"), "schema.node-kind", message, key=True)
    if isinstance(node, dict) and "params" in node:
        message = f"{label}: a batch node has no 'params' of its own; move them to 'batch.params'"
        yield 1, doc.problem((*path, "params"), "schema.node-kind", message, key=True)


# -- message parts ------------------------------------------------------------------------------

_DURATIONS = ("retryDelay", "timeout")
_PATTERN_HELP = {
    "id": "an id made of letters, digits, '_', '.' or '-'",
    "source": "a node id (letters, digits, '_', '.' or '-')",
    "target": "a node id (letters, digits, '_', '.' or '-')",
    "fallback": "a node id (letters, digits, '_', '.' or '-')",
    "uses": "a dotted import path such as 'package.module.function' or 'package.module:function'",
}


def _detail(error: ValidationError, path: PathT) -> tuple[str, str]:
    """(code, what was expected and found) for a value-level violation."""
    field, value, limit = (path[-1] if path else ""), error.instance, error.validator_value
    if field in _DURATIONS and error.validator in ("pattern", "minimum", "exclusiveMinimum"):
        what = "a duration above zero" if field == "timeout" else "a duration"
        return "schema.duration", f"expected {what}: {_DURATION_HELP}, found {_found(value)}"
    if error.validator == "pattern":
        expected = _PATTERN_HELP.get(str(field), f"a string matching {limit}")
        hint = _uses_hint(value) if field == "uses" else ""
        return "schema.pattern", f"expected {expected}, found {_found(value)}{hint}"
    if error.validator in ("minimum", "exclusiveMinimum"):
        noun = "an integer" if error.schema.get("type") == "integer" else "a number"
        op = ">=" if error.validator == "minimum" else ">"
        return "schema.minimum", f"expected {noun} {op} {limit}, found {_found(value)}"
    if error.validator == "enum":
        options = ", ".join(repr(option) for option in limit)
        hint = _did_you_mean(value, list(limit)) if isinstance(value, str) else ""
        return "schema.enum", f"expected one of {options}, found {_found(value)}{hint}"
    if error.validator == "minItems":
        return "schema.min-items", f"expected at least {limit} item(s), found an empty array"
    if error.validator == "minLength":
        return "schema.empty", "expected a non-empty string, found an empty one"
    return "schema.invalid", error.message


def _suggest(key: str, allowed: list[str], path: PathT) -> str:
    """' (did you mean ...?)', where the key belongs instead, or the keys that are allowed."""
    if len(path) == 2 and path[0] == "nodes":
        for home in ("config", "batch"):
            if key in schema()["$defs"][home]["properties"]:
                return f" (it belongs under '{home}')"
    shown = [option for option in allowed if not option.startswith(("_", "$"))]
    return _did_you_mean(key, allowed) or f"; expected one of: {', '.join(shown)}"


def _did_you_mean(word: str, options: list[str]) -> str:
    lowered = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[close[0]]}'?)" if close else ""


def _uses_hint(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        return ""
    if callable(getattr(builtins, value, None)):
        return f" (did you mean 'builtins.{value}'?)"
    return f" (name the module too, e.g. 'tasks.{value}' for {value}() in tasks.py)"


def _label(data: Any, path: PathT) -> str:
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


def _found(value: Any) -> str:
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


# -- building the model -------------------------------------------------------------------------


class _Builder:
    """Builds the frozen model from schema-valid data, collecting any value that cannot convert."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []

    def blueprint(self) -> Blueprint:
        data = self.doc.data
        return Blueprint(
            id=data["id"],
            nodes=tuple(self._node(index, raw) for index, raw in enumerate(data["nodes"])),
            edges=tuple(_edge(index, raw) for index, raw in enumerate(data.get("edges", []))),
            description=data.get("description"),
            context=data.get("context", {}),
            document=self.doc,
        )

    def _node(self, index: int, raw: dict[str, Any]) -> NodeSpec:
        path = ("nodes", index)
        batch = raw.get("batch")
        return NodeSpec(
            id=raw["id"],
            uses=raw.get("uses"),
            params=raw.get("params", {}),
            inputs=raw.get("inputs"),
            config=self._config((*path, "config"), raw.get("config", {})),
            batch=None if batch is None else _batch(raw["id"], batch),
            path=path,
        )

    def _config(self, path: PathT, raw: dict[str, Any]) -> Config:
        timeout = raw.get("timeout")
        return Config(
            max_retries=int(raw.get("maxRetries", 0)),
            retry_delay=self._seconds((*path, "retryDelay"), raw.get("retryDelay", 0)),
            backoff=self._finite((*path, "backoff"), raw.get("backoff", 2)),
            timeout=None if timeout is None else self._seconds((*path, "timeout"), timeout),
            fallback=raw.get("fallback"),
            join=raw.get("joinStrategy", "all"),
        )

    def _seconds(self, path: PathT, value: Any) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            message = f"{_label(self.doc.data, path)}: {exc}"
            self.problems.append(self.doc.problem(path, "schema.duration", message))
            return 0.0

    def _finite(self, path: PathT, value: Any) -> float:
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            message = (
                f"{_label(self.doc.data, path)}: expected a finite number, found {_found(value)}"
            )
            self.problems.append(self.doc.problem(path, "schema.number", message))
        return number


def _batch(node_id: str, raw: dict[str, Any]) -> BatchSpec:
    concurrency = raw.get("concurrency")
    return BatchSpec(
        uses=raw["uses"],
        input_key=raw["inputKey"],
        output_key=raw.get("outputKey", node_id),
        params=raw.get("params", {}),
        concurrency=None if concurrency is None else int(concurrency),
        max_failures=int(raw.get("maxFailures", 0)),
    )


def _edge(index: int, raw: dict[str, Any]) -> EdgeSpec:
    return EdgeSpec(
        source=raw["source"],
        target=raw["target"],
        action=raw.get("action"),
        condition=raw.get("condition"),
        transform=raw.get("transform"),
        path=("edges", index),
    )


# -- salvage: keep checking past schema errors ----------------------------------------------------


def salvage(doc: Document) -> Blueprint | None:
    """A best-effort `Blueprint` from data that failed the schema, so `validate` can still report
    reference, cycle, expression and import problems in the same pass. Fields of the wrong type
    are dropped (their schema problem is already reported); None if there is nothing to salvage."""
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        return None
    nodes = [n for i, raw in enumerate(data["nodes"]) if (n := _salvage_node(i, raw)) is not None]
    raw_edges = data["edges"] if isinstance(data.get("edges"), list) else []
    edges = [e for i, raw in enumerate(raw_edges) if (e := _salvage_edge(i, raw)) is not None]
    context = data.get("context")
    return Blueprint(
        id=str(data.get("id", "")),
        nodes=tuple(nodes),
        edges=tuple(edges),
        context=context if isinstance(context, dict) else {},
        document=doc,
    )


def _str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


def _salvage_node(index: int, raw: Any) -> NodeSpec | None:
    if not isinstance(raw, dict) or _str(raw, "id") is None:
        return None
    node_id: str = raw["id"]
    inputs = raw.get("inputs")
    if isinstance(inputs, dict) and not all(isinstance(v, str) for v in inputs.values()):
        inputs = None
    batch = raw.get("batch")
    spec = None
    if isinstance(batch, dict) and _str(batch, "uses") and _str(batch, "inputKey"):
        out = _str(batch, "outputKey") or node_id
        spec = BatchSpec(batch["uses"], batch["inputKey"], out)
    config = raw.get("config") if isinstance(raw.get("config"), dict) else {}
    assert isinstance(config, dict)
    fallback = _str(config, "fallback")
    join = config.get("joinStrategy") if config.get("joinStrategy") in ("all", "any") else "all"
    return NodeSpec(
        id=node_id,
        uses=_str(raw, "uses") if spec is None else None,
        inputs=inputs if isinstance(inputs, str | dict) else None,
        config=Config(fallback=fallback, join=str(join)),
        batch=spec,
        path=("nodes", index),
    )


def _salvage_edge(index: int, raw: Any) -> EdgeSpec | None:
    if not isinstance(raw, dict) or _str(raw, "source") is None or _str(raw, "target") is None:
        return None
    return EdgeSpec(
        source=raw["source"],
        target=raw["target"],
        action=_str(raw, "action"),
        condition=_str(raw, "condition"),
        transform=_str(raw, "transform"),
        path=("edges", index),
    )
