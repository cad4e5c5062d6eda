"""The YAML side of reading a blueprint: the core-schema resolver, the node walker, positions.

`loader` owns files, formats and turning yaml/json exceptions into `BlueprintError`s; this
module owns what happens once PyYAML has composed a node tree. `CoreLoader` resolves scalars
by YAML 1.2 core-schema rules (only `true`/`false` are booleans, `2024-01-01` and `12:30` stay
strings). `Walker` makes one pass over the composed tree and builds both the plain data and
the position tree (`Entry`) that `Document.where` reads, collecting every problem it meets.
It is separate from `loader` because it works on PyYAML nodes, never on files, bytes or
exceptions of the parser: `loader` drives it both to read YAML and, through the same text
composed as YAML, to locate positions and problems in JSON.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import yaml

from flowrun import errors
from flowrun.errors import BlueprintError, Problem

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # libyaml missing: the pure-Python loader gives the same data, slower
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

LIBYAML = _BaseLoader.__name__ == "CSafeLoader"

_T = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT = (_T + "str", _T + "null", _T + "bool", _T + "int", _T + "float")
_SEQ, _MAP, _MERGE = _T + "seq", _T + "map", _T + "merge"
_ALIAS_LIMIT = 1_000_000  # values rebuilt through aliases; stops "billion laughs" documents
# Characters of keys and scalar values in the data as built, aliases expanded: one big string
# aliased many times is small on disk and in memory here (the copies share one object), but
# every JSON encoding of it (the stored context, an output) pays for each copy.
_TEXT_LIMIT = 64 * 1024 * 1024
# Lists and mappings inside one another: deeper data is refused (`too-deep`), well before
# the recursion limit of anything that walks it (the walk here, copying it, storing it).
MAX_DEPTH = 256
_LINE = 1 << 32  # a position is packed as line * _LINE + column
_ORIGIN = _LINE + 1  # line 1, column 1

# A position entry: (key position, value position, children by key or index, or None).
Entry: TypeAlias = "tuple[int, int, dict[str, Entry] | list[Entry] | None]"


class CoreLoader(_BaseLoader):
    """Safe loader with YAML 1.2 core scalars: no yes/no booleans, timestamps or sexagesimals."""


# Keep only the null and merge-key rules of the YAML 1.1 table, then add the 1.2 core ones.
CoreLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in rules if tag in (_NULL, _MERGE)]
    for first, rules in _BaseLoader.yaml_implicit_resolvers.items()
}
CoreLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
CoreLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
CoreLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)

# `resolve` runs once per node the parser composes (five per task node of a blueprint), and
# PyYAML's general one builds a list of rules and checks for path resolvers every time. The
# table is fixed from here on and CoreLoader has no path resolvers, so the rules that can match
# a scalar are looked up once by its first character (`""` for the empty scalar), the wildcard
# rules (first character `None`) after them, in PyYAML's order.
_WILDCARD = tuple(CoreLoader.yaml_implicit_resolvers.get(None, []))
_RULES = {
    first: tuple(rules) + _WILDCARD
    for first, rules in CoreLoader.yaml_implicit_resolvers.items()
    if first is not None
}


def _resolve(
    self: CoreLoader, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]
) -> str:
    if kind is yaml.ScalarNode:
        if implicit[0]:
            for tag, regexp in _RULES.get(value[:1], _WILDCARD):
                if regexp.match(value):
                    return str(tag)
        return _STR
    return _SEQ if kind is yaml.SequenceNode else _MAP


CoreLoader.resolve = _resolve  # type: ignore[assignment,method-assign]


# -- the walk ----------------------------------------------------------------------------------

_TRUE, _FALSE = ("true", "True", "TRUE"), ("false", "False", "FALSE")
_JSON_CONSTANTS = ("NaN", "Infinity", "-Infinity")
_TAG_KINDS = {_INT: "an integer", _FLOAT: "a number", _BOOL: "a boolean", _NULL: "null"}


class Walker:
    """One pass over a composed node tree: plain data, positions, and every problem found."""

    def __init__(self, name: str, *, json_mode: bool = False) -> None:
        self.name = name
        self.json_mode = json_mode
        self.problems: list[Problem] = []
        self._path: list[str | int] = []
        self._open: set[int] = set()  # collections being built: an alias to one is a cycle
        self._done: set[int] = set()  # collections built once: meeting one again is an alias
        self._in_alias = 0
        self._aliased = 0
        self._text = 0
        self._depth = 0

    def walk(self, root: yaml.Node) -> tuple[Any, Entry]:
        """Build the data and the position tree of `root`."""
        pos = pack(root.start_mark)
        value, children = self._value(root)
        if self._text > _TEXT_LIMIT:  # keys are counted without a check of their own
            self._too_much_text(root)
        return value, (pos, pos, children)

    def _value(self, node: yaml.Node) -> tuple[Any, dict[str, Entry] | list[Entry] | None]:
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node), None
        ident = id(node)
        if ident in self._open:
            self._report(node, "recursive-alias", "this anchor contains an alias to itself")
            return None, None
        if self._depth >= MAX_DEPTH:
            if not any(p.code == "too-deep" for p in self.problems):
                message = f"values are nested more than {MAX_DEPTH} levels deep"
                self._report(node, "too-deep", message)
            return None, None
        again = ident in self._done
        if again or self._in_alias:
            self._count_aliased(node)
        self._open.add(ident)
        self._in_alias += again
        self._depth += 1
        try:
            if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
                return self._mapping(node)
            if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
                return self._sequence(node)
            message = f"unsupported tag '{node.tag}': use a plain list or mapping"
            self._report(node, "yaml-tag", message)
            return None, None
        finally:
            self._depth -= 1
            self._open.discard(ident)
            self._done.add(ident)
            self._in_alias -= again

    def _count_aliased(self, node: yaml.Node) -> None:
        self._aliased += len(node.value)
        if self._aliased > _ALIAS_LIMIT:
            message = f"aliases expand to more than {_ALIAS_LIMIT:,} values; write the data out"
            raise BlueprintError([self._problem(node, "too-many-aliases", message)])

    def _sequence(self, node: yaml.SequenceNode) -> tuple[list[Any], list[Entry]]:
        items: list[Any] = []
        children: list[Entry] = []
        path = self._path
        for index, child in enumerate(node.value):
            path.append(index)
            value, sub = self._value(child)
            path.pop()
            pos = pack(child.start_mark)
            items.append(value)
            children.append((pos, pos, sub))
        return items, children

    def _mapping(self, node: yaml.MappingNode) -> tuple[dict[str, Any], dict[str, Entry]]:
        data: dict[str, Any] = {}
        children: dict[str, Entry] = {}
        merges: list[yaml.Node] = []
        path, plain = self._path, not self.json_mode
        for key_node, value_node in node.value:
            # The common case, a string key and a string value, skips the general path.
            if key_node.tag == _STR and type(key_node) is yaml.ScalarNode:
                key = key_node.value
                self._text += len(key)
            elif key_node.tag == _MERGE and type(key_node) is yaml.ScalarNode:
                merges.append(value_node)
                continue
            elif (key := self._key(key_node)) is None:
                continue
            if key in children:
                first = unpack(children[key][0])[0]
                message = f"duplicate key '{key}' (first defined at line {first})"
                self._report(key_node, "duplicate-key", message, key)
                continue
            if plain and value_node.tag == _STR and type(value_node) is yaml.ScalarNode:
                value, sub = value_node.value, None
                self._text += len(value)
                if self._text > _TEXT_LIMIT:
                    path.append(key)
                    self._too_much_text(value_node)
            else:
                path.append(key)
                value, sub = self._value(value_node)
                path.pop()
            data[key] = value
            # `pack`, written out: this line runs once per key of the document.
            km, vm = key_node.start_mark, value_node.start_mark
            children[key] = ((km.line + 1) * _LINE + km.column + 1,
                             (vm.line + 1) * _LINE + vm.column + 1, sub)  # fmt: skip
        if merges:
            return self._merge(merges, data, children)
        return data, children

    def _merge(
        self, merges: list[yaml.Node], data: dict[str, Any], children: dict[str, Entry]
    ) -> tuple[dict[str, Any], dict[str, Entry]]:
        # YAML merge keys: explicit keys win, then earlier merged mappings over later ones.
        sources: list[tuple[dict[str, Any], dict[str, Entry]]] = []
        self._path.append("<<")
        for merge in merges:
            for source in merge.value if isinstance(merge, yaml.SequenceNode) else [merge]:
                value, sub = self._value(source)
                if isinstance(value, dict) and isinstance(sub, dict):
                    sources.append((value, sub))
                else:
                    self._report(
                        source, "yaml-merge", f"'<<' merges mappings only, found {kind_of(value)}"
                    )
        self._path.pop()
        merged: dict[str, Any] = {}
        positions: dict[str, Entry] = {}
        for value, sub in reversed(sources):
            merged.update(value)
            positions.update(sub)
        merged.update(data)
        positions.update(children)
        return merged, positions

    def _key(self, node: yaml.Node) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
            return str(node.value)
        if isinstance(node, yaml.ScalarNode):
            found = f"{_TAG_KINDS.get(node.tag, 'a tagged value')} {node.value!r}"
            hint = f"; quote it: '{node.value}'"
        else:
            found, hint = ("a list" if isinstance(node, yaml.SequenceNode) else "a mapping"), ""
        self._report(node, "non-string-key", f"mapping keys must be strings, found {found}{hint}")
        return None

    def _too_much_text(self, node: yaml.Node) -> None:
        message = (
            f"the data holds more than {_TEXT_LIMIT // 2**20} MiB of text once aliases are "
            "expanded; write the data out or read it from a file"
        )
        raise BlueprintError([self._problem(node, "too-much-text", message)])

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag, text = node.tag, node.value
        if not self.json_mode:
            self._text += len(text)
            if self._text > _TEXT_LIMIT:
                self._too_much_text(node)
        if tag == _STR:
            if self.json_mode and not node.style and text in _JSON_CONSTANTS:
                self._report(
                    node, "non-finite-number", f"{text} is not valid JSON: JSON numbers are finite"
                )
            return text
        if tag == _INT:
            return self._number(node, _to_int)
        if tag == _FLOAT:
            return self._number(node, _to_float)
        if tag == _BOOL and text in _TRUE + _FALSE:
            return text in _TRUE
        if tag == _NULL:
            return None
        self._report(node, "yaml-tag", f"unsupported tag '{tag}' on {text!r}: write a plain value")
        return None

    def _number(self, node: yaml.ScalarNode, convert: Callable[[str], float]) -> float | None:
        try:
            value = convert(node.value)
        except ValueError:
            self._report(node, "bad-number", f"cannot read {node.value[:40]!r} as a number")
            return None
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond a double: no JSON reader elsewhere keeps it
            message = (
                f"the integer {node.value[:20]}... ({len(node.value)} digits) is too large: "
                "blueprint numbers must fit a double, below about 1.8e308 (quote it to keep "
                "it as text)"
            )
            self._report(node, "bad-number", message)
            return None
        if not finite:
            message = (
                f"{node.value} is not a finite number; blueprint data must be valid JSON, "
                "which has no infinity or NaN (quote it to keep it as text)"
            )
            self._report(node, "non-finite-number", message)
            return None
        return value

    def _report(self, node: yaml.Node, code: str, message: str, key: str | None = None) -> None:
        self.problems.append(self._problem(node, code, message, key))

    def _problem(self, node: yaml.Node, code: str, message: str, key: str | None = None) -> Problem:
        path = [*self._path, key] if key is not None else self._path
        mark = node.start_mark
        return Problem(
            self.name, mark.line + 1, mark.column + 1, errors.json_path(path), code, message
        )


def _to_int(text: str) -> int:
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _to_float(text: str) -> float:
    special = text.lower().replace(".", "")
    return float(special) if special.lstrip("+-") in ("inf", "nan") else float(text)


# -- positions ---------------------------------------------------------------------------------


def pack(mark: yaml.Mark) -> int:
    """A PyYAML mark as one int holding the 1-based line and column."""
    return (mark.line + 1) * _LINE + mark.column + 1


def unpack(pos: int) -> tuple[int, int]:
    """The 1-based (line, column) of a position made by `pack`."""
    line, column = divmod(pos, _LINE)
    return line, column


def locate(root: Entry | None, path: Sequence[str | int]) -> tuple[int, int, bool]:
    """(key position, value position, whether the whole path exists); else the nearest ancestor."""
    if root is None:
        return _ORIGIN, _ORIGIN, False
    entry = root
    for part in path:
        children = entry[2]
        found: Entry | None = None
        if isinstance(children, dict) and isinstance(part, str):
            found = children.get(part)
        elif isinstance(children, list) and type(part) is int and 0 <= part < len(children):
            found = children[part]
        if found is None:
            return entry[0], entry[1], False
        entry = found
    return entry[0], entry[1], True


def kind_of(value: Any) -> str:
    """How a value is named in messages: 'a list', 'an integer', 'null'..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
    }
    return next((kind for t, kind in kinds.items() if isinstance(value, t)), type(value).__name__)
