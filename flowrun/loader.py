"""Read a blueprint (or a `--context` file) from YAML or JSON into a `Document`.

The only module that parses YAML or JSON. Every failure becomes a `BlueprintError` whose
problems name `file:line:column`; no yaml, json, OS or Unicode exception escapes.

YAML is composed once by a `CSafeLoader` subclass with YAML 1.2 core-schema scalars (only
`true`/`false` are booleans, `2024-01-01` and `12:30` stay strings); one walk over the node tree
builds both the plain data and the source positions.
JSON is parsed by the stdlib; its positions are only needed when something is wrong, so they
are computed on first use by composing the same text as YAML.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeAlias

import yaml

from flowrun import errors
from flowrun.errors import BlueprintError, Problem

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # libyaml missing: the pure-Python loader gives the same data, slower
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

_LIBYAML = _BaseLoader.__name__ == "CSafeLoader"
EXTENSIONS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
Format = Literal["yaml", "json"]

_T = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT = (_T + "str", _T + "null", _T + "bool", _T + "int", _T + "float")
_SEQ, _MAP, _MERGE = _T + "seq", _T + "map", _T + "merge"
_ALIAS_LIMIT = 1_000_000  # values rebuilt through aliases; stops "billion laughs" documents
_LINE = 1 << 32  # a position is packed as line * _LINE + column
_ORIGIN = _LINE + 1  # line 1, column 1

# A position entry: (key position, value position, children by key or index, or None).
_Entry: TypeAlias = "tuple[int, int, dict[str, _Entry] | list[_Entry] | None]"


class _Loader(_BaseLoader):
    """Safe loader with YAML 1.2 core scalars: no yes/no booleans, timestamps or sexagesimals."""


# Keep only the null and merge-key rules of the YAML 1.1 table, then add the 1.2 core ones.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in rules if tag in (_NULL, _MERGE)]
    for first, rules in _BaseLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


class _Marks:
    """Source positions of a document's values; built lazily from `text` when not given."""

    __slots__ = ("_root", "_text")

    def __init__(self, root: _Entry | None, text: str | None = None) -> None:
        self._root = root
        self._text = text

    def root(self) -> _Entry | None:
        if self._root is None and self._text is not None:
            self._root = _positions_of(self._text)
            self._text = None
        return self._root


@dataclass(frozen=True)
class Document:
    """A parsed file: plain JSON-like `data` plus the source positions of every value."""

    name: str
    path: Path
    text: str
    format: str
    data: Any
    _marks: _Marks | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._marks is None:  # built by hand (tests): positions come from the text
            object.__setattr__(self, "_marks", _Marks(None, self.text))

    def where(self, path: Sequence[str | int]) -> tuple[int, int]:
        """1-based (line, column) of the value at `path`, or of its nearest existing ancestor."""
        return _unpack(_locate(self._root(), path)[1])

    def where_key(self, path: Sequence[str | int]) -> tuple[int, int]:
        """1-based (line, column) of the mapping key naming the last element of `path`."""
        key, value, found = _locate(self._root(), path)
        return _unpack(key if found and path else value)

    def problem(
        self,
        path: Sequence[str | int],
        code: str,
        message: str,
        *,
        key: bool = False,
        severity: str = "error",
    ) -> Problem:
        """A `Problem` located at `path` (at its key with `key=True`) in this document."""
        line, column = self.where_key(path) if key else self.where(path)
        return Problem(self.name, line, column, errors.json_path(path), code, message, severity)

    def _root(self) -> _Entry | None:
        return self._marks.root() if self._marks is not None else None


def load(path: str | os.PathLike[str]) -> Document:
    """Read a `.yaml`, `.yml` or `.json` file whose top level is a mapping."""
    name = os.fspath(path)
    fmt = EXTENSIONS.get(Path(name).suffix.lower())
    raw = _read(name)  # first: "not found" or "is a directory" says more than the extension
    if fmt is None:
        found = Path(name).suffix or "no extension"
        _fail(
            name,
            "unknown-format",
            f"cannot read '{name}': {found} is not a known format; use .yaml, .yml or .json",
        )
    text = _decode(raw, name)
    return load_text(text, name, "json" if fmt == "json" else "yaml")


def load_text(text: str, name: str, fmt: Format) -> Document:
    """Parse `text` (named `name` in messages) as YAML or JSON; the top level must be a mapping."""
    try:
        with _gc_paused():
            data, marks = _parse_yaml(text, name) if fmt == "yaml" else _parse_json(text, name)
    except RecursionError as exc:
        _fail(name, "too-deep", "values are nested too deeply to read", exc)
    if not isinstance(data, dict):
        found = f"the top level must be a mapping (key: value pairs), found {_kind(data)}"
        position = _unpack(_locate(marks.root(), ())[1])
        raise BlueprintError([Problem(name, *position, "$", "not-a-mapping", found)])
    return Document(name, Path(name).resolve(), text, fmt, data, marks)


# -- reading bytes -----------------------------------------------------------------------------


def _read(name: str) -> bytes:
    try:
        return Path(name).read_bytes()
    except FileNotFoundError as exc:
        _fail(name, "file-not-found", f"file not found: '{name}'", exc)
    except IsADirectoryError as exc:
        _fail(name, "file-unreadable", f"cannot read '{name}': it is a directory, not a file", exc)
    except PermissionError as exc:
        _fail(name, "file-unreadable", f"cannot read '{name}': permission denied", exc)
    except OSError as exc:
        _fail(name, "file-unreadable", f"cannot read '{name}': {exc.strerror or exc}", exc)


def _decode(raw: bytes, name: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        _fail(name, "not-text", f"'{name}' looks like UTF-16 text; save it as UTF-8")
    nul = raw.find(b"\0")
    if nul >= 0:
        _fail_at(name, raw, nul, "not-text", f"'{name}' is not a text file (it contains NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        message = f"'{name}' is not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8"
        _fail_at(name, raw, exc.start, "not-text", message, exc)


def _fail_at(
    name: str, raw: bytes, offset: int, code: str, message: str, exc: Exception | None = None
) -> NoReturn:
    start = raw.rfind(b"\n", 0, offset) + 1
    column = len(raw[start:offset].decode("utf-8", "replace")) + 1
    problem = Problem(name, raw.count(b"\n", 0, offset) + 1, column, "$", code, message)
    raise BlueprintError([problem]) from exc


def _fail(name: str, code: str, message: str, exc: BaseException | None = None) -> NoReturn:
    raise BlueprintError([Problem(name, 1, 1, "$", code, message)]) from exc


# -- parsing -----------------------------------------------------------------------------------


def _parse_yaml(text: str, name: str) -> tuple[Any, _Marks]:
    root = _compose(text, name)
    if root is None:
        _fail(name, "empty-file", f"'{name}' is empty: expected a mapping (key: value pairs)")
    walker = _Walker(name)
    data, entry = walker.walk(root)
    if walker.problems:
        raise BlueprintError(walker.problems)
    return data, _Marks(entry)


def _parse_json(text: str, name: str) -> tuple[Any, _Marks]:
    if not text.strip():
        _fail(name, "empty-file", f"'{name}' is empty: expected a JSON object")
    try:
        data = json.loads(
            text,
            object_pairs_hook=_json_object,
            parse_constant=_json_constant,
            parse_float=_json_float,
        )
    except json.JSONDecodeError as exc:
        problem = Problem(
            name, exc.lineno, exc.colno, "$", "json-syntax", f"invalid JSON: {exc.msg}"
        )
        raise BlueprintError([problem]) from exc
    except (_Rejected, ValueError) as exc:  # ValueError: an integer of more than 4300 digits
        code, message = (exc.code, exc.message) if isinstance(exc, _Rejected) else _TOO_LONG
        raise BlueprintError(
            _json_problems(text, name) or [Problem(name, 1, 1, "$", code, message)]
        ) from exc
    return data, _Marks(None, text)


_TOO_LONG = ("bad-number", "a number has too many digits to read")


class _Rejected(Exception):
    """Valid JSON syntax that flowrun refuses; located afterwards by `_json_problems`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Rejected("duplicate-key", f"duplicate key '{key}'")
            seen.add(key)
    return obj


def _json_constant(token: str) -> NoReturn:
    raise _Rejected("non-finite-number", f"{token} is not valid JSON: JSON numbers are finite")


def _json_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise _Rejected("non-finite-number", f"the number {token} is too large")
    return value


def _json_problems(text: str, name: str) -> list[Problem]:
    """Locate what `json` rejected by walking the same text composed as YAML (JSON is YAML)."""
    root = _compose_quietly(text, untab=True)
    if root is None:
        return []
    walker = _Walker(name, json_mode=True)
    try:
        walker.walk(root)
    except (RecursionError, BlueprintError):
        return []
    return walker.problems


def _positions_of(text: str) -> _Entry | None:
    """Positions for a document whose data came from elsewhere (JSON, or built by hand)."""
    with _gc_paused():
        root = _compose_quietly(text, untab=True) or _compose_quietly(text, untab=False)
        if root is None:
            return None
        try:
            return _Walker("", json_mode=True).walk(root)[1]
        except (RecursionError, BlueprintError):
            return None


def _compose_quietly(text: str, *, untab: bool) -> yaml.Node | None:
    # JSON strings cannot hold a raw tab, so turning tabs into spaces changes only
    # whitespace, keeps every column, and spares YAML's rule against tab indentation.
    try:
        return _compose(text.replace("\t", " ") if untab else text, "")
    except (BlueprintError, RecursionError):
        return None


def _compose(text: str, name: str) -> yaml.Node | None:
    try:
        loader = _Loader(text)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise BlueprintError([_syntax_problem(exc, name, text)]) from exc
    except yaml.reader.ReaderError as exc:
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        message = f"'{name}' contains the control character {char}, which YAML does not allow"
        raw = text.encode("utf-8", "replace")
        # libyaml counts the offset in bytes, the pure-Python reader in characters.
        offset = exc.position if _LIBYAML else len(text[: exc.position].encode("utf-8", "replace"))
        _fail_at(name, raw, offset, "not-text", message, exc)
    except UnicodeError as exc:
        _fail(name, "not-text", f"'{name}' contains characters that are not valid Unicode", exc)


def _syntax_problem(exc: yaml.MarkedYAMLError, name: str, text: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    what = exc.problem or "syntax error"
    if exc.context and what.startswith("but "):
        what = f"{exc.context}, {what}"
    elif exc.context:
        where = f" at line {exc.context_mark.line + 1}" if exc.context_mark is not None else ""
        what = f"{what} ({exc.context}{where})"
    lines = text.splitlines()
    if 0 < line <= len(lines) and lines[line - 1][column - 1 : column] == "\t":
        what += "; indent with spaces, not tabs"
    return Problem(name, line, column, "$", "yaml-syntax", f"invalid YAML: {what}")


# -- the walk ----------------------------------------------------------------------------------

_TRUE, _FALSE = ("true", "True", "TRUE"), ("false", "False", "FALSE")
_JSON_CONSTANTS = ("NaN", "Infinity", "-Infinity")
_TAG_KINDS = {_INT: "an integer", _FLOAT: "a number", _BOOL: "a boolean", _NULL: "null"}


class _Walker:
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

    def walk(self, root: yaml.Node) -> tuple[Any, _Entry]:
        """Build the data and the position tree of `root`."""
        pos = _pack(root.start_mark)
        value, children = self._value(root)
        return value, (pos, pos, children)

    def _value(self, node: yaml.Node) -> tuple[Any, dict[str, _Entry] | list[_Entry] | None]:
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node), None
        ident = id(node)
        if ident in self._open:
            self._report(node, "recursive-alias", "this anchor contains an alias to itself")
            return None, None
        again = ident in self._done
        if again or self._in_alias:
            self._count_aliased(node)
        self._open.add(ident)
        self._in_alias += again
        try:
            if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
                return self._mapping(node)
            if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
                return self._sequence(node)
            message = f"unsupported tag '{node.tag}': use a plain list or mapping"
            self._report(node, "yaml-tag", message)
            return None, None
        finally:
            self._open.discard(ident)
            self._done.add(ident)
            self._in_alias -= again

    def _count_aliased(self, node: yaml.Node) -> None:
        self._aliased += len(node.value)
        if self._aliased > _ALIAS_LIMIT:
            message = f"aliases expand to more than {_ALIAS_LIMIT:,} values; write the data out"
            raise BlueprintError([self._problem(node, "too-many-aliases", message)])

    def _sequence(self, node: yaml.SequenceNode) -> tuple[list[Any], list[_Entry]]:
        items: list[Any] = []
        children: list[_Entry] = []
        path = self._path
        for index, child in enumerate(node.value):
            path.append(index)
            value, sub = self._value(child)
            path.pop()
            pos = _pack(child.start_mark)
            items.append(value)
            children.append((pos, pos, sub))
        return items, children

    def _mapping(self, node: yaml.MappingNode) -> tuple[dict[str, Any], dict[str, _Entry]]:
        data: dict[str, Any] = {}
        children: dict[str, _Entry] = {}
        merges: list[yaml.Node] = []
        path, plain = self._path, not self.json_mode
        for key_node, value_node in node.value:
            # The common case, a string key and a string value, skips the general path.
            if key_node.tag == _STR and type(key_node) is yaml.ScalarNode:
                key = key_node.value
            elif key_node.tag == _MERGE and type(key_node) is yaml.ScalarNode:
                merges.append(value_node)
                continue
            elif (key := self._key(key_node)) is None:
                continue
            if key in children:
                first = _unpack(children[key][0])[0]
                message = f"duplicate key '{key}' (first defined at line {first})"
                self._report(key_node, "duplicate-key", message, key)
                continue
            if plain and value_node.tag == _STR and type(value_node) is yaml.ScalarNode:
                value, sub = value_node.value, None
            else:
                path.append(key)
                value, sub = self._value(value_node)
                path.pop()
            data[key] = value
            children[key] = (_pack(key_node.start_mark), _pack(value_node.start_mark), sub)
        if merges:
            return self._merge(merges, data, children)
        return data, children

    def _merge(
        self, merges: list[yaml.Node], data: dict[str, Any], children: dict[str, _Entry]
    ) -> tuple[dict[str, Any], dict[str, _Entry]]:
        # YAML merge keys: explicit keys win, then earlier merged mappings over later ones.
        sources: list[tuple[dict[str, Any], dict[str, _Entry]]] = []
        self._path.append("<<")
        for merge in merges:
            for source in merge.value if isinstance(merge, yaml.SequenceNode) else [merge]:
                value, sub = self._value(source)
                if isinstance(value, dict) and isinstance(sub, dict):
                    sources.append((value, sub))
                else:
                    self._report(
                        source, "yaml-merge", f"'<<' merges mappings only, found {_kind(value)}"
                    )
        self._path.pop()
        merged: dict[str, Any] = {}
        positions: dict[str, _Entry] = {}
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

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag, text = node.tag, node.value
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
        if not math.isfinite(value):
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


def _pack(mark: yaml.Mark) -> int:
    return (mark.line + 1) * _LINE + mark.column + 1


def _unpack(pos: int) -> tuple[int, int]:
    line, column = divmod(pos, _LINE)
    return line, column


def _locate(root: _Entry | None, path: Sequence[str | int]) -> tuple[int, int, bool]:
    """(key position, value position, whether the whole path exists); else the nearest ancestor."""
    if root is None:
        return _ORIGIN, _ORIGIN, False
    entry = root
    for part in path:
        children = entry[2]
        found: _Entry | None = None
        if isinstance(children, dict) and isinstance(part, str):
            found = children.get(part)
        elif isinstance(children, list) and type(part) is int and 0 <= part < len(children):
            found = children[part]
        if found is None:
            return entry[0], entry[1], False
        entry = found
    return entry[0], entry[1], True


def _kind(value: Any) -> str:
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


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Parsing allocates hundreds of thousands of containers and none of them is garbage;
    # the cyclic collector would rescan them again and again (4x slower on 10,000 nodes).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
