"""flowrun: run YAML/JSON workflow blueprints with batch fan-out, retries and durable resume.

The Python API mirrors the CLI: `run(path, **options)` returns a `RunReport`,
`validate(paths)` returns the problems found, `load(path)` returns the expanded graph.
Node functions use `Result` (to choose an edge) and `NodeContext` (the `ctx` parameter).
"""

from __future__ import annotations

import importlib

# Not `typing.TYPE_CHECKING`: importing typing (and re) would be most of `flowrun --version`.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from flowrun.api import load, run, validate
    from flowrun.errors import BlueprintError, FlowrunError
    from flowrun.node import FatalError, NodeContext, Result

__version__ = "0.1.0"

__all__ = [
    "BlueprintError",
    "FatalError",
    "FlowrunError",
    "NodeContext",
    "Result",
    "__version__",
    "load",
    "run",
    "validate",
]

# Every name is imported on first use: `flowrun --version` and a node module that only needs
# `Result` skip the API's yaml, jsonschema and engine imports.
_HOMES = {
    "BlueprintError": "flowrun.errors",
    "FlowrunError": "flowrun.errors",
    "FatalError": "flowrun.node",
    "NodeContext": "flowrun.node",
    "Result": "flowrun.node",
    "load": "flowrun.api",
    "run": "flowrun.api",
    "validate": "flowrun.api",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'flowrun' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
