"""Read a blueprint (or a `--context` file) from YAML or JSON into a `Document`.

The only module that parses YAML or JSON. Every failure becomes a `BlueprintError` whose
problems name `file:line:column`; no yaml, json, OS or Unicode exception escapes.

YAML is composed once by `yamlwalk.CoreLoader`, a `CSafeLoader` subclass with YAML 1.2
core-schema scalars (only `true`/`false` are booleans, `2024-01-01` and `12:30` stay strings);
one `yamlwalk.Walker` pass over the node tree builds both the plain data and the source
positions. This module reads the bytes, picks the format and translates every yaml/json
exception into a `BlueprintError`.
JSON is parsed by the stdlib; its positions are only needed when something is wrong, so they
are computed on first use by composing the same text as YAML.
"""

from __future__ import annotations

import gc
import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml

from flowrun import errors
from flowrun.blueprint.yamlwalk import (
    LIBYAML,
    MAX_DEPTH,
    CoreLoader,
    Entry,
    Walker,
    kind_of,
    locate,
    unpack,
)
from flowrun.errors import BlueprintError, Problem
from flowrun.frozen import Frozen

EXTENSIONS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
Format = Literal["yaml", "json"]


class _Marks:
    """Source positions of a document's values; built lazily from `text` when not given."""

    __slots__ = ("_root", "_text")

    def __init__(self, root: Entry | None, text: str | None = None) -> None:
        self._root = root
        self._text = text

    def root(self) -> Entry | None:
        if self._root is None and self._text is not None:
            self._root = _positions_of(self._text)
            self._text = None
        return self._root


@dataclass(frozen=True, eq=False, repr=False)
class Document(Frozen):
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
        return unpack(locate(self._root(), path)[1])

    def where_key(self, path: Sequence[str | int]) -> tuple[int, int]:
        """1-based (line, column) of the mapping key naming the last element of `path`."""
        key, value, found = locate(self._root(), path)
        return unpack(key if found and path else value)

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

    def _root(self) -> Entry | None:
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
        found = f"the top level must be a mapping (key: value pairs), found {kind_of(data)}"
        position = unpack(locate(marks.root(), ())[1])
        raise BlueprintError([Problem(name, *position, "$", "not-a-mapping", found)])
    return Document(name, Path(name).resolve(), text, fmt, data, marks)


# -- reading bytes -----------------------------------------------------------------------------


MAX_BYTES = 20 * 1024 * 1024  # a larger file is refused; FLOWRUN_MAX_BLUEPRINT_BYTES changes it
MAX_BYTES_ENV = "FLOWRUN_MAX_BLUEPRINT_BYTES"


def max_bytes(name: str) -> int:
    """The largest file `load` reads: `MAX_BYTES`, or FLOWRUN_MAX_BLUEPRINT_BYTES when set."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return MAX_BYTES
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        _fail(name, "file-too-large", f"{MAX_BYTES_ENV}={text[:40]!r}: expected a number of bytes")
    return int(text)


def _read(name: str) -> bytes:
    limit = max_bytes(name)
    try:  # a regular file too large is refused unread; any error is read_bytes' to report
        size = os.stat(name).st_size
    except OSError:
        size = 0
    if size > limit:
        _too_large(name, size, limit)
    try:
        raw = Path(name).read_bytes()
    except FileNotFoundError as exc:
        _fail(name, "file-not-found", f"file not found: '{name}'", exc)
    except IsADirectoryError as exc:
        _fail(name, "file-unreadable", f"cannot read '{name}': it is a directory, not a file", exc)
    except PermissionError as exc:
        _fail(name, "file-unreadable", f"cannot read '{name}': permission denied", exc)
    except OSError as exc:
        _fail(name, "file-unreadable", f"cannot read '{name}': {exc.strerror or exc}", exc)
    if len(raw) > limit:  # not a regular file (a pipe), or it grew
        _too_large(name, len(raw), limit)
    return raw


def _too_large(name: str, size: int, limit: int) -> NoReturn:
    _fail(
        name,
        "file-too-large",
        f"'{name}' is {size:,} bytes, over the {limit:,} bytes a blueprint or context file may "
        f"have; set {MAX_BYTES_ENV} to read a larger one",
    )


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
    walker = Walker(name)
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
            parse_int=_json_int,
        )
    except json.JSONDecodeError as exc:
        problem = Problem(
            name, exc.lineno, exc.colno, "$", "json-syntax", f"invalid JSON: {exc.msg}"
        )
        raise BlueprintError([problem]) from exc
    except (_Rejected, ValueError, RecursionError) as exc:  # ValueError: over 4300 digits
        if isinstance(exc, _Rejected):
            code, message = exc.code, exc.message
        else:
            code, message = _TOO_DEEP if isinstance(exc, RecursionError) else _TOO_LONG
        raise BlueprintError(
            _json_problems(text, name) or [Problem(name, 1, 1, "$", code, message)]
        ) from exc
    if _deeper_than(data, MAX_DEPTH):
        code, message = _TOO_DEEP
        raise BlueprintError(
            _json_problems(text, name) or [Problem(name, 1, 1, "$", code, message)]
        )
    return data, _Marks(None, text)


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether lists and mappings nest more than `limit` levels in `data` (no recursion)."""
    level: list[Any] = [data] if type(data) is dict or type(data) is list else []
    for _ in range(limit):
        level = [
            child
            for value in level
            for child in (value.values() if type(value) is dict else value)
            if type(child) is dict or type(child) is list
        ]
        if not level:
            return False
    return True


_TOO_LONG = ("bad-number", "a number has too many digits to read")
_TOO_DEEP = ("too-deep", f"values are nested more than {MAX_DEPTH} levels deep")


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


def _json_int(token: str) -> int:
    value = int(token)
    try:
        float(value)
    except OverflowError:
        raise _Rejected("bad-number", f"the integer {token[:20]}... is too large") from None
    return value


def _json_problems(text: str, name: str) -> list[Problem]:
    """Locate what `json` rejected by walking the same text composed as YAML (JSON is YAML)."""
    root = _compose_quietly(text, untab=True)
    if root is None:
        return []
    walker = Walker(name, json_mode=True)
    try:
        walker.walk(root)
    except (RecursionError, BlueprintError):
        return []
    return walker.problems


def _positions_of(text: str) -> Entry | None:
    """Positions for a document whose data came from elsewhere (JSON, or built by hand)."""
    with _gc_paused():
        root = _compose_quietly(text, untab=True) or _compose_quietly(text, untab=False)
        if root is None:
            return None
        try:
            return Walker("", json_mode=True).walk(root)[1]
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
        loader = CoreLoader(text)
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
        offset = exc.position if LIBYAML else len(text[: exc.position].encode("utf-8", "replace"))
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
