"""The plain-Python peer of a one-shot `flowrun run blueprints/batch-workflow.yaml`: read the
blueprint with PyYAML, call the same node functions (blueprints/tasks.py) with a bare
`ThreadPoolExecutor`, print the same result line.

    python bench/oneshot_peer.py blueprints/batch-workflow.yaml
"""

from __future__ import annotations

import concurrent.futures
import sys
from pathlib import Path
from typing import Any

import yaml


class Ctx:
    """The one thing `tasks.double` asks of its `ctx`."""

    def __init__(self, context: dict[str, Any]) -> None:
        self.context = context

    def get(self, key: str, default: Any = None) -> Any:
        return self.context.get(key, default)


def main() -> None:
    path = Path(sys.argv[1])
    with path.open("rb") as f:
        blueprint = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    sys.path.insert(0, str(path.parent))
    import tasks

    ctx = Ctx(dict(blueprint.get("context", {})))
    items = tasks.numbers()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
        doubled = list(ex.map(lambda item: tasks.double(item, ctx), items))
    print(f"sum-results: {sum(doubled)}")


if __name__ == "__main__":
    main()
