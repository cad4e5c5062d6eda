"""Import every `uses` of a graph: dotted paths become callables, or problems that name the file.

A path is `package.module.function` (the longest importable module prefix wins, the rest are
attributes) or `package.module:function`. Modules are imported from the blueprint file's
directory, the current directory and `PYTHONPATH`, in that order.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

from flowrun.errors import BlueprintError, Problem, closest
from flowrun.errors import did_you_mean as suggest
from flowrun.frozen import Frozen, fast_frozen
from flowrun.model import Blueprint


@fast_frozen
class Target(Frozen):
    """A resolved `uses`: the callable and how to call it."""

    uses: str
    fn: Callable[..., Any]
    wants_ctx: bool
    is_async: bool


class ResolveError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def search_path(blueprint_file: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """Directories put in front of `sys.path`: the blueprint's own, then the current one."""
    dirs = []
    if blueprint_file is not None:
        dirs.append(str(Path(blueprint_file).resolve().parent))
    dirs.append(os.getcwd())
    return tuple(dict.fromkeys(dirs))


def use_search_path(dirs: Sequence[str]) -> None:
    """Put `dirs` first on `sys.path` (idempotent; keeps their order)."""
    for d in reversed(dirs):
        if d in sys.path:
            sys.path.remove(d)
        sys.path.insert(0, d)


def _split(uses: str) -> list[tuple[str, list[str]]]:
    """Candidate (module, attribute chain) pairs, longest module first."""
    if ":" in uses:
        mod, _, attrs = uses.partition(":")
        return [(mod, attrs.split("."))]
    parts = uses.split(".")
    return [(".".join(parts[:i]), parts[i:]) for i in range(len(parts) - 1, 0, -1)]


def _module_file(mod: ModuleType) -> str:
    file = getattr(mod, "__file__", None)
    return f" ({os.path.relpath(file)})" if file else ""


def _a(obj: object) -> str:
    """'an int', 'a str': the kind of a value, with its article."""
    name = type(obj).__name__
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _nearby_modules(dirs: Sequence[str]) -> list[str]:
    """Top-level modules and packages in `dirs`: what a mistyped module name is compared with."""
    import pkgutil  # only a `uses` that cannot be imported gets here

    try:
        return sorted({m.name for m in pkgutil.iter_modules(list(dirs))})
    except OSError:
        return []


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # A missing *dependency* of an existing module is the module's own error, not a miss.
        missing = exc.name
        if missing is not None and missing != name and not name.startswith(missing + "."):
            raise ResolveError("resolve.import-error", _import_failure(name, exc)) from exc
        return None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit(7) in a module is its error, not flowrun's exit
        raise ResolveError("resolve.import-error", _import_failure(name, exc)) from exc


def _import_failure(name: str, exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({os.path.relpath(last[0].filename)}:{last[0].lineno})" if last else ""
    return f"importing '{name}' raised {type(exc).__name__}: {exc}{where}"


def load_callable(uses: str, *, dirs: Sequence[str] = ()) -> Callable[..., Any]:
    """Import `uses` and return the object; `ResolveError` says what was tried.

    `dirs` (the blueprint's search directories) only feed the "did you mean" of a module that
    is not found.
    """
    tried: list[str] = []
    for mod_name, attrs in _split(uses):
        module = _import(mod_name)
        if module is None:
            tried.append(mod_name)
            continue
        obj: Any = module
        for i, attr in enumerate(attrs):
            if not hasattr(obj, attr):
                names = [n for n in dir(obj) if not n.startswith("_")]
                where = f"module '{mod_name}'{_module_file(module)} has"
                if i:  # the attribute is missing on something inside the module
                    inner = ".".join(attrs[:i])
                    where = (
                        f"'{inner}' in module '{mod_name}'{_module_file(module)} is {_a(obj)} with"
                    )
                raise ResolveError(
                    "resolve.no-attribute",
                    f"'{uses}': {where} no attribute '{attr}'{suggest(attr, names)}",
                )
            obj = getattr(obj, attr)
        if not callable(obj):
            raise ResolveError(
                "resolve.not-callable",
                f"'{uses}' is {_a(obj)}, not a function: `uses` must name something "
                f"callable in module '{mod_name}'{_module_file(module)}",
            )
        return obj  # type: ignore[no-any-return]
    top = tried[-1] if tried else uses
    close = closest(top, _nearby_modules(dirs))
    hint = f"; did you mean '{close}'?" if close else ""
    raise ResolveError(
        "resolve.not-found",
        f"cannot import '{uses}': no module '{top}' in the blueprint's directory, the "
        f"current directory or PYTHONPATH (tried {', '.join(repr(t) for t in tried)}{hint})",
    )


def describe(uses: str, fn: Callable[..., Any]) -> Target:
    """How to call `fn`: does it take `ctx`, is it a coroutine function."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature take no ctx
        params = MappingProxyType({})
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an async __call__ on an instance
    )
    return Target(uses, fn, "ctx" in params, is_async)


ALLOW_ENV = "FLOWRUN_ALLOW_MODULES"


def allowed_modules(given: Iterable[str] = ()) -> tuple[str, ...]:
    """`--allow-module` prefixes, else those in `FLOWRUN_ALLOW_MODULES` (comma-separated);
    empty: every module may be imported."""
    given = tuple(p.strip() for p in given if p.strip())
    if given:
        return given
    return tuple(p.strip() for p in os.environ.get(ALLOW_ENV, "").split(",") if p.strip())


def disallowed(bp: Blueprint, allow: Sequence[str]) -> list[Problem]:
    """Every `uses` outside the `allow` prefixes (`pkg` allows `pkg.mod.f` and `pkg:f`), found
    before anything is imported: a blueprint from a less-trusted source names only code that
    is allowed to run."""
    if not allow:
        return []
    problems: list[Problem] = []
    for spec in bp.nodes:
        for uses, field in spec.calls:
            module = uses.partition(":")[0]
            if any(module == p or module.startswith(p + ".") for p in allow):
                continue
            message = (
                f"'{uses}' is outside the allowed modules ({', '.join(allow)}); allow it with "
                f"--allow-module or {ALLOW_ENV}"
            )
            path = (*spec.path, *field)
            if bp.document is not None:
                problems.append(bp.document.problem(path, "resolve.not-allowed", message))
            else:
                problems.append(Problem(bp.file, 1, 1, "$", "resolve.not-allowed", message))
    return problems


def resolve(bp: Blueprint, dirs: Iterable[str]) -> dict[str, Target]:
    """Import every `uses` (nodes and batch workers); raise `BlueprintError` listing failures."""
    dirs = list(dirs)
    use_search_path(dirs)
    # What a module prints while it is imported goes to stderr: stdout carries flowrun's own
    # output (`validate --format json`, `run --json`).
    with contextlib.redirect_stdout(sys.stderr):
        return _resolve(bp, dirs)


def _resolve(bp: Blueprint, dirs: list[str]) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    problems: list[Problem] = []
    for spec in bp.nodes:
        if not spec.calls:
            continue
        ((uses, field),) = spec.calls
        if uses in targets:
            continue
        try:
            targets[uses] = describe(uses, load_callable(uses, dirs=dirs))
        except ResolveError as exc:
            path = (*spec.path, *field)
            if bp.document is not None:
                problems.append(bp.document.problem(path, exc.code, exc.message))
            else:
                problems.append(Problem(bp.file, 1, 1, "$", exc.code, exc.message))
    for spec in bp.nodes:
        for index, name in enumerate(spec.config.retry_on or ()):
            own = spec.calls[0][0] if spec.calls else None
            message = _unknown_exception(name, targets.get(own) if own else None)
            if message is None:
                continue
            path = (*spec.path, "config", "retryOn", index)
            code = "resolve.unknown-exception"
            if bp.document is not None:
                problems.append(bp.document.problem(path, code, message))
            else:
                problems.append(Problem(bp.file, 1, 1, "$", code, message))
    if problems:
        raise BlueprintError(problems)
    return targets


def _is_exception(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseException)


def _unknown_exception(name: str, target: Target | None) -> str | None:
    """Why `config.retryOn` entry `name` names no exception class, or None when it does (or
    when where it would live could not be imported: that is reported on its own)."""
    if "." in name:
        try:
            if _is_exception(load_callable(name)):
                return None
        except ResolveError:
            pass
        return f"retryOn: '{name}' does not import as an exception class"
    if _is_exception(getattr(builtins, name, None)):
        return None
    if target is None:
        return None  # the node's module did not import: nothing more can be checked
    module = sys.modules.get(getattr(target.fn, "__module__", "") or "")
    if module is not None and _is_exception(getattr(module, name, None)):
        return None
    known = [n for n in dir(builtins) if _is_exception(getattr(builtins, n))]
    where = f"builtins or module '{module.__name__}'" if module is not None else "builtins"
    if module is not None:
        known += [n for n in dir(module) if _is_exception(getattr(module, n, None))]
    return (
        f"retryOn: '{name}' is not an exception class of {where}{suggest(name, known)}; "
        "write a builtin name (ConnectionError) or a dotted path (package.module.Class)"
    )
