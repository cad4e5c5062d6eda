"""Whether data is valid under the blueprint schema, from jsonschema, each distinct piece once.

`schema.check` asks this for a yes or no before anything else. A 10,000-node blueprint has a
handful of node *shapes* (which keys a node has) and many repeated values, so jsonschema is
asked about each shape once and about each distinct value once, against the subschema that
governs it; a full `iter_errors` pass over the whole document, which is what reports the
problems, runs only when the answer is no. So every message and position is still what
jsonschema says of the full document, and jsonschema stays the one judge of validity.

The split is exact only where the schema allows it, and the test of that is structural:

- an *object part* (`_object_like`) is a subschema whose keywords other than `properties`
  see nothing but which keys the object has: `type`, `required`, `additionalProperties`
  true or false, and `if`/`then`/`else`/`allOf`/`not`/... branches made only of `required`
  and true/false `properties`. Its verdict is the verdict on a *skeleton* (the same keys,
  every value null) under the subschema with each `properties` entry relaxed to `true`,
  and each value under its own property subschema;
- an *array part* (`_array_like`): `type`, `minItems` and `items`, so the skeleton is the
  length and each item is checked under `items`;
- a subschema with `not` beside keywords that do not look at it (a node's `id`: an
  identifier, and not one ending in `_scatter`) is valid where the rest is and `not`'s
  subschema is not, each of the two checked as a part of its own;
- anything else is a *leaf*: the value goes to jsonschema whole, and the answer is kept per
  distinct value (equal values of the same type and `repr` share it), from the same keyword
  functions `is_valid` runs (`_compiled`).

A keyword outside these lists makes its subschema a leaf, so a schema change can only make
the split coarser (slower), never let a problem through.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_NOTES = frozenset({"title", "description", "examples", "default"})
#: keywords an object part may have besides its branches (see the module docstring)
_KEY_ONLY = frozenset(
    {"type", "required", "additionalProperties", "properties", "$schema", "$id", *_NOTES}
)
#: keywords whose values are subschemas or lists of them: allowed only as branches
_SINGLE_BRANCH = ("if", "then", "else", "not")
_MANY_BRANCHES = ("allOf", "anyOf", "oneOf")
_BRANCH = frozenset({"required", "properties", *_SINGLE_BRANCH, *_MANY_BRANCHES, *_NOTES})
_ARRAY_KEYS = frozenset({"type", "items", "minItems", *_NOTES})
#: keywords that see what their siblings evaluated: a `not` beside them is not split off
_IN_CONTEXT = frozenset({"unevaluatedProperties", "unevaluatedItems", "$ref", "$dynamicRef"})

_OBJECT, _ARRAY, _NOT, _LEAF = 0, 1, 2, 3


class Verdict:
    """A yes/no from jsonschema for one document, asked once per shape and distinct value.

    `validator` is a jsonschema validator of the whole schema; its `evolve` gives the
    validators of the parts. The values under one subschema are checked together, a column
    at a time (every node's `id`, then every node's `uses`...), so a value repeated ten
    thousand times costs one question. Answers are kept for the life of this object."""

    def __init__(self, validator: Any) -> None:
        self.validator = validator
        self._plans: dict[int, _Plan] = {}
        self._idents: dict[str, int] = {}
        self._shapes: dict[tuple[int, object], bool] = {}
        self._values: dict[tuple[int, object], bool] = {}

    def valid(self, schema: Any, value: Any) -> bool:
        """Whether `value` is valid under `schema` (a part of the validator's schema)."""
        return self.all_valid(schema, [value])

    def all_valid(self, schema: Any, values: list[Any]) -> bool:
        """Whether every one of `values` is valid under `schema`."""
        plan = self._plans.get(id(schema))
        if plan is None:
            plan = self._plan(schema)
        if plan.kind == _OBJECT:
            return self._objects(plan, values)
        if plan.kind == _ARRAY:
            return self._arrays(plan, values)
        if plan.kind == _NOT:
            return self.all_valid(plan.rest, values) and self._none_valid(plan.refused, values)
        return self._leaves(plan, values)

    def _none_valid(self, schema: Any, values: list[Any]) -> bool:
        plan = self._plans.get(id(schema))
        if plan is None:
            plan = self._plan(schema)
        if plan.kind == _LEAF:
            return self._leaves(plan, values, want=False)
        return not any(self.valid(schema, value) for value in _distinct(values).values())

    def _objects(self, plan: _Plan, values: list[Any]) -> bool:
        objects = [v for v in values if isinstance(v, dict)]
        others = (
            [v for v in values if not isinstance(v, dict)] if len(objects) < len(values) else []
        )
        if others and not self._leaves(plan, others):  # not objects: jsonschema says what
            return False
        shapes = set(map(tuple, objects))
        if not all(self._shape(plan, shape, dict.fromkeys(shape)) for shape in shapes):
            return False
        keys = set().union(*shapes)
        return all(
            self.all_valid(sub, [o[key] for o in objects if key in o])
            for key, sub in plan.parts.items()
            if key in keys
        )

    def _arrays(self, plan: _Plan, values: list[Any]) -> bool:
        arrays = [v for v in values if isinstance(v, list)]
        others = [v for v in values if not isinstance(v, list)] if len(arrays) < len(values) else []
        if others and not self._leaves(plan, others):
            return False
        if not all(self._shape(plan, n, [None] * n) for n in set(map(len, arrays))):
            return False
        return self.all_valid(plan.items, [item for array in arrays for item in array])

    def _shape(self, plan: _Plan, shape: object, skeleton: Any) -> bool:
        key = (plan.ident, shape)
        found = self._shapes.get(key)
        if found is None:
            found = self._shapes[key] = bool(plan.relaxed().is_valid(skeleton))
        return found

    def _leaves(self, plan: _Plan, values: list[Any], *, want: bool = True) -> bool:
        """Whether jsonschema's answer for each of `values` is `want`."""
        answers, ident = self._values, plan.ident
        check = None
        for key, value in _distinct(values).items():
            found = answers.get((ident, key))
            if found is None:
                check = check or plan.whole()
                found = answers[ident, key] = check(value)
            if found is not want:
                return False
        return True

    def _plan(self, schema: Any) -> _Plan:
        kind = _kind(schema)
        # Parts that differ only in annotations (edge `source` and `target`) share answers.
        name = json.dumps([kind, _without_notes(schema)], sort_keys=True)
        ident = self._idents.setdefault(name, len(self._idents))
        plan = self._plans[id(schema)] = _Plan(self.validator, schema, kind, ident)
        return plan


def _distinct(values: list[Any]) -> dict[object, Any]:
    """`values` by a key equal only for values jsonschema cannot tell apart: a string is its
    own key; anything else is its type and `repr` (so 1, 1.0 and True stay apart)."""
    if all(type(v) is str for v in values):
        return {v: v for v in values}
    return {(v if type(v) is str else (type(v), repr(v))): v for v in values}


class _Plan:
    """How one subschema is checked: its kind, its parts and its validators (built on use)."""

    __slots__ = (
        *("_relaxed", "_whole", "ident", "items", "kind"),
        *("parts", "refused", "rest", "schema", "validator"),
    )

    def __init__(self, validator: Any, schema: Any, kind: int, ident: int) -> None:
        self.validator, self.schema, self.kind, self.ident = validator, schema, kind, ident
        self.parts: dict[str, Any] = schema.get("properties", {}) if kind == _OBJECT else {}
        self.items: Any = schema.get("items", True) if kind == _ARRAY else True
        # _NOT: valid under the rest of the schema and not under what `not` refuses
        self.rest: Any = {k: v for k, v in schema.items() if k != "not"} if kind == _NOT else True
        self.refused: Any = schema["not"] if kind == _NOT else False
        self._whole: Callable[[Any], bool] | None = None
        self._relaxed: Any = None

    def whole(self) -> Callable[[Any], bool]:
        """Whether a value is valid under the subschema as written."""
        if self._whole is None:
            self._whole = _compiled(self.validator.evolve(schema=self.schema))
        return self._whole

    def relaxed(self) -> Any:
        """The validator of the skeleton: `properties` entries all `true`, no `items`."""
        if self._relaxed is None:
            relaxed = {k: v for k, v in self.schema.items() if k != "items"}
            if "properties" in relaxed:
                relaxed["properties"] = dict.fromkeys(relaxed["properties"], True)
            self._relaxed = self.validator.evolve(schema=relaxed)
        return self._relaxed


# Where a schema holds subschemas: one, a list of them, or a mapping of names to them.
_ONE_SCHEMA = frozenset(
    {"items", "not", "if", "then", "else", "additionalProperties", "propertyNames", "contains"}
    | {"unevaluatedItems", "unevaluatedProperties"}
)
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas", "$defs"})


def _compiled(validator: Any) -> Callable[[Any], bool]:
    """`validator.is_valid`, minus the work that only serves error reports.

    `is_valid` runs the keyword functions of the validator's schema one after another
    (`VALIDATORS`: jsonschema's own, each taking the validator, the keyword's value, the
    instance and the schema) and stops at the first error, which it builds in full (its
    paths and context) before throwing it away. Here the same functions run in the same
    order on the same validator; an error only answers no. A 2020-12 validator applies every
    keyword of a schema (no `$ref` sibling rule), so the keywords are the schema's own."""
    schema = validator.schema
    if not isinstance(schema, dict):  # true or false
        return validator.is_valid  # type: ignore[no-any-return]
    steps = [(validator.VALIDATORS[k], v) for k, v in schema.items() if k in validator.VALIDATORS]

    def check(value: Any) -> bool:
        for step, argument in steps:
            for _error in step(validator, argument, value, schema) or ():
                return False
        return True

    return check


def _without_notes(schema: Any) -> Any:
    """`schema` without annotations; only where a subschema sits (an `enum` keeps its data,
    `properties` its names), so two results are equal only for schemas that decide alike."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _NOTES:
            continue
        if key in _ONE_SCHEMA:
            value = _without_notes(value)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            value = [_without_notes(v) for v in value]
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            value = {name: _without_notes(v) for name, v in value.items()}
        out[key] = value
    return out


def _kind(schema: Any) -> int:
    if isinstance(schema, dict) and _object_like(schema):
        return _OBJECT
    if isinstance(schema, dict) and _array_like(schema):
        return _ARRAY
    if isinstance(schema, dict) and "not" in schema and not schema.keys() & _IN_CONTEXT:
        return _NOT
    return _LEAF


def _object_like(schema: dict[str, Any]) -> bool:
    rest = {k: v for k, v in schema.items() if k not in _SINGLE_BRANCH + _MANY_BRANCHES}
    branches = {k: v for k, v in schema.items() if k not in rest}
    return (
        schema.get("type") == "object"
        and rest.keys() <= _KEY_ONLY
        and isinstance(schema.get("additionalProperties", True), bool)
        and _branches_like(branches)
    )


def _branch_like(schema: Any) -> bool:
    """Whether `schema`, applied to an object, sees only which keys the object has."""
    if isinstance(schema, bool):
        return True
    return (
        isinstance(schema, dict)
        and schema.keys() <= _BRANCH
        and isinstance(schema.get("properties", {}), dict)
        and all(isinstance(v, bool) for v in schema.get("properties", {}).values())
        and _branches_like(schema)
    )


def _branches_like(schema: dict[str, Any]) -> bool:
    singles = [schema[k] for k in _SINGLE_BRANCH if k in schema]
    many = [schema[k] for k in _MANY_BRANCHES if k in schema]
    return all(_branch_like(s) for s in singles) and all(
        isinstance(group, list) and all(_branch_like(s) for s in group) for group in many
    )


def _array_like(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "array" and schema.keys() <= _ARRAY_KEYS
