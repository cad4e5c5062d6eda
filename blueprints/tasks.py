"""Node functions for `batch-workflow.yaml` / `batch-workflow.json`, the tutorial example.

Each function is an ordinary Python callable; flowrun imports it by its dotted path
(`tasks.numbers`) from the blueprint's directory and calls it with the node's input.
"""

from __future__ import annotations

from flowrun import NodeContext


def numbers() -> list[int]:
    """Produce the list the batch fans out over.

    The `start` node has no predecessors and no `inputs`, so flowrun calls it with no arguments.
    """
    return [10, 20, 30]


def double(item: int, ctx: NodeContext) -> int:
    """Multiply one item by the run context's `factor`; called once per item of the batch.

    Declaring a parameter named `ctx` is what asks flowrun for the `NodeContext`, so the
    factor can be changed per run: `flowrun run blueprints/batch-workflow.yaml --set factor=3`.
    """
    factor: int = ctx.get("factor", 2)
    return item * factor
