"""flowrun: run YAML/JSON workflow blueprints with batch fan-out, retries and durable resume.

The Python API mirrors the CLI: `run(path, **options)` returns a `RunReport`,
`validate(paths)` returns the problems found, `load(path)` returns the expanded graph.
Node functions use `Result` (to choose an edge), `NodeContext` (the `ctx` parameter) and
`FatalError` (a failure never retried).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowrun.errors import BlueprintError, FlowrunError
from flowrun.node import FatalError, NodeContext, Result

if TYPE_CHECKING:
    from flowrun.api import load, run, validate

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


def __getattr__(name: str) -> Any:
    # The API pulls in yaml and jsonschema; node modules that only need `Result` skip that cost.
    if name in ("load", "run", "validate"):
        from flowrun import api

        return getattr(api, name)
    raise AttributeError(f"module 'flowrun' has no attribute {name!r}")
