"""Imports flow one way (STYLE.md): primitives <- blueprint, expr <- engine, sinks <- api <- cli."""

from __future__ import annotations

import ast
from pathlib import Path

import flowrun

PKG = Path(flowrun.__file__).parent

# Each top-level module's or package's layer; one may import only from its own layer or lower.
LAYERS: dict[str, int] = {
    "errors": 0, "model": 0, "events": 0, "node": 0, "frozen": 0,
    "blueprint": 1, "expr": 1, "diagram": 1, "std": 1,
    "engine": 3, "store": 3, "report": 3, "display": 3, "eventlog": 3, "ci": 3,
    "api": 4, "runs": 4,
    "cli": 5, "entry": 5, "__main__": 5,
}  # fmt: skip
# Packages that never import each other, whatever their layers say: the engine emits events,
# and the store and the display are sinks of them.
APART: dict[str, set[str]] = {"engine": {"store", "display"}, "store": {"display", "engine"}}
STDLIB_ONLY = {"errors", "frozen", "model", "events", "node", "engine", "report", "store", "std",
               "ci"}  # fmt: skip
# ...but the optional extra's backend, which is imported only for `--executor dask`.
THIRD_PARTY_OK = {"engine/backends/dask.py"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    return rel.parts[0]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "flowrun":
                found.update(f"flowrun.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def sources() -> list[Path]:
    return [p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG]


def test_every_module_has_a_layer() -> None:
    assert {module_name(p) for p in sources()} <= set(LAYERS)


def test_imports_point_down() -> None:
    wrong = []
    for path in sources():
        me = module_name(path)
        for name in imports(path):
            parts = name.split(".")
            if parts[0] != "flowrun" or len(parts) < 2 or parts[1] not in LAYERS:
                continue
            if LAYERS[parts[1]] > LAYERS[me] or parts[1] in APART.get(me, set()):
                wrong.append(f"{path.relative_to(PKG)} imports {name}")
    assert wrong == []


def test_lower_layers_use_only_the_stdlib() -> None:
    third_party = {"typer", "rich", "yaml", "jsonschema", "distributed", "dask", "click"}
    wrong = [
        f"{p.relative_to(PKG)} imports {n}"
        for p in sources()
        if module_name(p) in STDLIB_ONLY and str(p.relative_to(PKG)) not in THIRD_PARTY_OK
        for n in imports(p)
        if n.split(".")[0] in third_party
    ]
    assert wrong == []


def test_the_engine_never_imports_rich() -> None:
    for path in (PKG / "engine").rglob("*.py"):
        assert not any(n.split(".")[0] == "rich" for n in imports(path)), path


def test_public_surface() -> None:
    assert sorted(flowrun.__all__) == sorted(
        [
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
    )
    for name in flowrun.__all__:
        assert getattr(flowrun, name) is not None


def test_python_api_runs_a_blueprint(tmp_path: Path) -> None:
    report = flowrun.run("blueprints/batch-workflow.yaml", state_dir=tmp_path)
    assert report.status == "completed"
    assert report.context["sum-results"] == 120
    assert flowrun.validate(["blueprints/batch-workflow.yaml"]) == []
    graph = flowrun.load("blueprints/batch-workflow.yaml")
    assert "double-items_scatter" in graph.nodes


def test_hot_path_events_keep_their_field_order() -> None:
    """The driver and the batch kind build these positionally on the per-item path."""
    from dataclasses import fields

    from flowrun import events as ev

    def names(cls: type) -> list[str]:
        return [f.name for f in fields(cls)]

    assert names(ev.NodeStarted) == ["ts", "node", "attempt", "batch", "index"]
    assert names(ev.NodeSucceeded) == [
        "ts", "node", "attempt", "duration_ms", "batch", "index", "action", "output",
        "output_json", "reused", "context_updates", "status", "logs",
    ]  # fmt: skip
    assert names(ev.NodeFailed) == [
        "ts", "node", "attempt", "duration_ms", "error_type", "message", "traceback", "batch",
        "index", "final", "fallback_for", "logs",
    ]  # fmt: skip
    assert names(ev.ItemsStarted) == ["ts", "batch", "indices"]
    assert names(ev.ItemsSucceeded) == [
        "ts", "batch", "indices", "durations_ms", "outputs", "outputs_json",
    ]  # fmt: skip
    assert names(ev.NodeRetry) == [
        "ts", "node", "attempt", "delay_s", "error_type", "message", "traceback", "batch",
        "index", "logs", "attempts",
    ]  # fmt: skip


def test_the_dask_worker_preload_names_the_setup_hook() -> None:
    """A wrong preload string fails only on a worker, far from here."""
    import importlib
    import re

    source = (PKG / "engine" / "backends" / "dask.py").read_text()
    preload = re.search(r'^WORKER_PRELOAD = "([\w.]+)"$', source, re.M)
    assert preload is not None
    assert "preload=[WORKER_PRELOAD]" in source
    module = importlib.import_module(preload.group(1))
    assert callable(module.dask_setup)


def test_every_blueprint_node_has_a_kind() -> None:
    from flowrun.engine.kinds import kind_for

    graph = flowrun.load("blueprints/batch-workflow.yaml")
    assert [kind_for(s).name for s in graph.blueprint.nodes] == ["task", "batch", "task"]
    for node in graph.nodes.values():
        assert node.node_kind == kind_for(node.spec).name
