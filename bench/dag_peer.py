"""The plain-Python peer of a DAG of task nodes: read the blueprint with PyYAML, order it with
`graphlib.TopologicalSorter`, run ready nodes on a `ThreadPoolExecutor` (the parallel recipe
of the graphlib docs: submit what is ready, wait for the first to finish, mark it done), print
each final node's output as `id: <json>` as flowrun does.

    python bench/dag_peer.py BLUEPRINT CONCURRENCY
"""

from __future__ import annotations

import concurrent.futures
import graphlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def load_callable(dotted: str) -> Any:
    module, _, name = dotted.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module), name)


def main() -> None:
    path, concurrency = Path(sys.argv[1]), int(sys.argv[2])
    with path.open("rb") as f:
        blueprint = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    sys.path.insert(0, str(path.parent))
    nodes = {n["id"]: n for n in blueprint["nodes"]}
    preds: dict[str, set[str]] = {node: set() for node in nodes}
    has_succ: set[str] = set()
    for edge in blueprint.get("edges", []):
        preds[edge["target"]].add(edge["source"])
        has_succ.add(edge["source"])
    fns = {node: load_callable(spec["uses"]) for node, spec in nodes.items()}
    outputs: dict[str, Any] = {}
    sorter = graphlib.TopologicalSorter(preds)
    sorter.prepare()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as ex:
        running: dict[concurrent.futures.Future[Any], str] = {}
        while sorter.is_active():
            for node in sorter.get_ready():
                inputs = [outputs[p] for p in sorted(preds[node])]
                running[ex.submit(fns[node], *inputs)] = node
            done, _ = concurrent.futures.wait(running, return_when="FIRST_COMPLETED")
            for future in done:
                node = running.pop(future)
                outputs[node] = future.result()
                sorter.done(node)
    for node in nodes:
        if node not in has_succ:
            print(f"{node}: {json.dumps(outputs[node])}")


if __name__ == "__main__":
    main()
