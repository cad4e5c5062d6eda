"""The exceptions flowrun raises, and the `Problem` record that validation reports.

Tree (each class carries the process exit code the CLI uses for it)::

    FlowrunError                 exit 1
    ├── BlueprintError           exit 2  the blueprint is wrong: load, schema, reference,
    │                                    cycle, expression or resolve problems (a list)
    ├── UsageError               exit 2  bad command-line input (a --set, a --context file)
    └── StateError               exit 2  a run directory that is missing, corrupt or foreign

"Your blueprint is wrong" (exit 2, one line per problem, no traceback) is kept apart from
"your function raised" (the node fails, the run reports it, exit 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from flowrun.frozen import Frozen, fast_frozen

PathT = tuple[str | int, ...]


def closest(word: str, options: Iterable[str], *, ignore_case: bool = False) -> str | None:
    """The option most like `word` (difflib's ratio >= 0.6), or None: the one "did you mean"."""
    import difflib  # only on the error path: `import flowrun` stays light

    if not ignore_case:
        close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
        return close[0] if close else None
    lowered = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def did_you_mean(word: str, options: Iterable[str], *, ignore_case: bool = False) -> str:
    """`" (did you mean 'x'?)"` for the closest option, or ''."""
    found = closest(word, options, ignore_case=ignore_case)
    return f" (did you mean '{found}'?)" if found is not None else ""


def json_path(path: Sequence[str | int]) -> str:
    """Render a document path as a JSON path: ``("nodes", 1, "uses")`` -> ``$.nodes[1].uses``."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}"
        else:
            out += "[" + repr(part) + "]"
    return out


@fast_frozen
class Problem(Frozen):
    """One thing wrong with a blueprint, located in its file."""

    file: str
    line: int
    column: int
    path: str
    code: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message} [{self.code} at {self.path}]"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "code": self.code,
            "message": self.message,
            "severity": self.severity,
        }


class FlowrunError(Exception):
    """Root of every error flowrun raises on purpose."""

    exit_code: int = 1


class BlueprintError(FlowrunError):
    """The blueprint cannot be used; `problems` lists every problem found."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid blueprint")


class UsageError(FlowrunError):
    """Bad command-line input."""

    exit_code = 2


class StateError(FlowrunError):
    """A run's state directory is missing, corrupt, foreign, or does not match the blueprint."""

    exit_code = 2
