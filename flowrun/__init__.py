"""flowrun: run YAML/JSON workflow blueprints with batch fan-out, retries and durable resume."""

from flowrun.errors import BlueprintError, FlowrunError
from flowrun.node import NodeContext, Result

__version__ = "0.1.0"

__all__ = [
    "BlueprintError",
    "FlowrunError",
    "NodeContext",
    "Result",
    "__version__",
]
