"""Where a streamed batch's items come from (`batch.itemsFrom`): a file read line by line.

A source is opened when the batch's scatter runs. It counts its items first, in one pass that
holds a buffer, not the file (so the progress bars and the store know the total), then hands
out items as the batch takes them, in increasing index order, skipping the ones it is not
asked for (finished in an earlier run) without parsing them. A line that cannot be read is
not an exception: it becomes a `Malformed` value naming `file:line`, and that item fails.

- `.jsonl`: one JSON value per line (every line is an item; an empty line is malformed);
- `.csv`: a header row, then each row a mapping of column to string (`csv.DictReader`);
- `.txt`: each line a string, its line break removed;
- a glob (`data/*.csv`): the sorted matching paths, each a string.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from json.scanner import make_scanner
from pathlib import Path
from typing import IO, Any, Protocol, cast

from flowrun.frozen import Frozen, fast_frozen

SUFFIXES = (".jsonl", ".csv", ".txt")
_COUNT_CHUNK = 1 << 20


@fast_frozen
class Malformed(Frozen):
    """An item whose line could not be read: the item fails with `message`."""

    message: str


class ItemSource(Protocol):
    name: str  # the file (or glob) as it is shown in messages
    total: int

    def read(self, index: int) -> Any:
        """Item `index` (never less than the last one read), or a `Malformed`."""
        ...

    def read_many(self, indices: list[int]) -> tuple[list[Any], bool]:
        """The items at `indices` (increasing, past the last one read), and whether any of
        them is a `Malformed`."""
        ...

    def close(self) -> None: ...


def is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def open_source(text: str, base: Path) -> ItemSource:
    """The source for `itemsFrom: text`, relative to directory `base`; raises `OSError` (the
    file is missing or unreadable) or `ValueError` (an extension no source reads)."""
    path = base / text
    if is_glob(text):
        return GlobSource(str(path))
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return LineSource(path, _json_line)
    if suffix == ".txt":
        return LineSource(path, _text_line)
    if suffix == ".csv":
        return CsvSource(path)
    raise ValueError(f"{path}: unsupported extension {suffix or '(none)'!r}; {_EXT_HELP}")


_EXT_HELP = "itemsFrom reads .jsonl, .csv or .txt files, or a glob of paths"


def input_problem(text: str, base: Path) -> str | None:
    """What is wrong with a literal `itemsFrom` before the run starts, or None."""
    if is_glob(text):
        return None  # no match is an empty batch: the files may come from an upstream node
    path = base / text
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        return f"itemsFrom '{text}' has unsupported extension {suffix or '(none)'!r}; {_EXT_HELP}"
    if not path.exists():
        return f"itemsFrom '{text}': no such file ({path})"
    if path.is_dir():
        return f"itemsFrom '{text}' is a directory; name a file, or a glob such as '{text}/*'"
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return f"itemsFrom '{text}' cannot be read ({exc.strerror or exc})"
    return None


def output_problem(text: str, base: Path) -> str | None:
    """What is wrong with an `outputTo` path before the run starts, or None."""
    path = base / text
    if path.suffix.lower() != ".jsonl":
        return f"outputTo '{text}' must be a .jsonl file (one JSON result per line)"
    parent = path.parent
    if not parent.is_dir():
        return f"outputTo '{text}': directory {parent} does not exist; create it first"
    if path.is_dir():
        return f"outputTo '{text}' is a directory; name a .jsonl file"
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"outputTo '{text}': {path if path.exists() else parent} is not writable"
    return None


def _json_line(line: bytes, where: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return Malformed(f"{where}: not a JSON value ({why})")


_scan = make_scanner(cast(Any, json.JSONDecoder()))  # the C scanner `json.loads` ends in
_BLANK = frozenset(" \t\r\n")


def _json_fast(line: bytes) -> Any:
    """The JSON value on a raw line (its line break included), or `_SLOW` when this fast path
    cannot tell (then `_json_line` decides, with its message): no `json.loads` wrapper (bytes
    detection, two regex matches) for the common line that is one value and a line break."""
    try:
        text = line.decode()
        value, end = _scan(text, 0)
    except (UnicodeDecodeError, StopIteration, ValueError):
        return _SLOW
    n = len(text)
    if end == n or (end == n - 1 and text[end] == "\n") or _BLANK.issuperset(text[end:]):
        return value
    return _SLOW


_SLOW = object()
READ_AHEAD = 1 << 20  # bytes of lines a `.jsonl`/`.txt` source reads at a time


def parse_jsonl(line: bytes, name: str, index: int) -> Any:
    """The value on the raw `.jsonl` line of item `index` of file `name` (as `read_raw` gives
    it), or `Malformed`, with the message `LineSource` gives."""
    value = _json_fast(line)
    return _json_line(_strip(line), f"{name}:{index + 1}") if value is _SLOW else value


def _text_line(line: bytes, where: str) -> Any:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Malformed(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})")


def _strip(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def count_lines(path: Path) -> int:
    """Lines in a file (a last line without a line break counts), reading 1 MiB at a time."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(_COUNT_CHUNK):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


class LineSource:
    """A `.jsonl` or `.txt` file: item i is line i + 1."""

    def __init__(self, path: Path, parse: Any) -> None:
        self.name = str(path)
        self.total = count_lines(path)
        self._file: IO[bytes] = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._parse = parse
        self._fast = _json_fast if parse is _json_line else None
        self._next = 0  # the index of the next line `_take` gives
        self._ahead: list[bytes] = []  # lines read ahead (at most `READ_AHEAD` bytes of them)
        self._at = 0  # the first of them not taken

    def _take(self, n: int) -> list[bytes]:
        """The next `n` lines (fewer at the end of the file), read a block at a time."""
        out: list[bytes] = []
        while len(out) < n:
            if self._at >= len(self._ahead):
                self._ahead, self._at = self._file.readlines(READ_AHEAD), 0
                if not self._ahead:
                    break
            k = min(n - len(out), len(self._ahead) - self._at)
            out += self._ahead[self._at : self._at + k]
            self._at += k
        self._next += len(out)
        return out

    def _skip_to(self, index: int) -> None:
        """Skip, unparsed, the lines before `index` (items finished earlier)."""
        while self._next < index and self._take(min(index - self._next, 1 << 16)):
            pass

    def read(self, index: int) -> Any:
        self._skip_to(index)
        taken = self._take(1)
        line = taken[0] if taken else b""
        if not taken:
            self._next += 1
        if not line:
            return Malformed(
                f"{self.name}: ended before line {index + 1}; it changed during the run"
            )
        return self._parse(_strip(line), f"{self.name}:{index + 1}")

    def read_many(self, indices: list[int]) -> tuple[list[Any], bool]:
        fast = self._fast
        if fast is None or indices[-1] - indices[0] != len(indices) - 1:
            return _read_each(self, indices)
        # A run of consecutive `.jsonl` lines (the usual case): read together, parsed by
        # the C scanner; only the lines it cannot vouch for go through `read`'s path.
        self._skip_to(indices[0])
        lines = self._take(len(indices))
        self._next += len(indices) - len(lines)
        lines += [b""] * (len(indices) - len(lines))  # the file ended early: malformed
        values = list(map(fast, lines))
        bad = False
        if _SLOW in values:
            for n, value in enumerate(values):
                if value is _SLOW:
                    values[n] = self._slow(lines[n], indices[n])
                    bad = bad or isinstance(values[n], Malformed)
        return values, bad

    def read_raw(self, indices: list[int]) -> list[bytes] | None:
        """The `.jsonl` lines at `indices` as read (line breaks included), left for the worker
        to parse (`parse_jsonl`), or None when this source cannot hand out raw lines: not a
        `.jsonl` file, indices not one run, or the file ended early (then `read_many` says so).
        Nothing is read when it answers None."""
        if self._fast is None or indices[-1] - indices[0] != len(indices) - 1:
            return None
        self._skip_to(indices[0])
        lines = self._take(len(indices))
        if len(lines) < len(indices):  # ended early: back to where the run was, parsed
            self._file.seek(0)
            self._next, self._ahead, self._at = 0, [], 0
            return None
        return lines

    def _slow(self, line: bytes, index: int) -> Any:
        if not line:
            return Malformed(
                f"{self.name}: ended before line {index + 1}; it changed during the run"
            )
        return self._parse(_strip(line), f"{self.name}:{index + 1}")

    def close(self) -> None:
        self._file.close()


def _read_each(source: ItemSource, indices: list[int]) -> tuple[list[Any], bool]:
    values = [source.read(i) for i in indices]
    return values, any(isinstance(v, Malformed) for v in values)


class CsvSource:
    """A `.csv` file with a header row: item i is the mapping of data row i + 1."""

    def __init__(self, path: Path) -> None:
        import csv  # only a `.csv` item file needs it

        self.name = str(path)
        self._unreadable = (csv.Error, UnicodeDecodeError)
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            self.total = max(0, sum(1 for row in csv.reader(f) if row) - 1)
        self._file = open(path, newline="", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._reader = csv.reader(self._file)
        self._header: list[str] | None = None
        self._next = 0

    def _row(self) -> list[str] | Malformed | None:
        try:
            row = next(self._reader, None)
            while row == []:  # a blank line is no row (as csv.DictReader has it)
                row = next(self._reader, None)
            return row
        except self._unreadable as exc:
            return Malformed(f"{self.name}:{self._reader.line_num}: unreadable row ({exc})")

    def read(self, index: int) -> Any:
        if self._header is None:
            header = self._row()
            self._header = header if isinstance(header, list) else []
        while self._next < index:
            self._row()
            self._next += 1
        row = self._row()
        self._next += 1
        if row is None:
            return Malformed(
                f"{self.name}: ended before row {index + 1}; it changed during the run"
            )
        if isinstance(row, Malformed):
            return row
        if len(row) != len(self._header):
            where = f"{self.name}:{self._reader.line_num}"
            return Malformed(
                f"{where}: row has {len(row)} fields, the header has {len(self._header)}"
            )
        return dict(zip(self._header, row, strict=True))

    def read_many(self, indices: list[int]) -> tuple[list[Any], bool]:
        return _read_each(self, indices)

    def close(self) -> None:
        self._file.close()


class GlobSource:
    """The sorted paths matching a glob (the paths themselves are the items)."""

    def __init__(self, pattern: str) -> None:
        import glob  # only a glob item source needs it

        self.name = pattern
        self._paths = sorted(glob.glob(pattern))
        self.total = len(self._paths)

    def read(self, index: int) -> Any:
        return self._paths[index]

    def read_many(self, indices: list[int]) -> tuple[list[Any], bool]:
        paths = self._paths
        return [paths[i] for i in indices], False

    def close(self) -> None:
        self._paths = []


def iter_items(source: ItemSource) -> Iterator[Any]:
    """Every item of `source`, in order (for tests and tools)."""
    try:
        for i in range(source.total):
            yield source.read(i)
    finally:
        source.close()
