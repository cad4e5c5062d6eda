"""Hostile input, failing storage and deep graphs: the run always ends with its document.

Each test drives the CLI as a user would and asserts what comes back: the exit code, the
`--json` document, and that no flowrun traceback is printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.test_cli import cli, write

# Deeper than the recursion limit (1,000); tests/test_scheduler.py drives 10,000 by hand,
# without the schema check of a 10,000-node file (seconds) in the way.
CHAIN = 2_000


def chain(tmp_path: Path, head: dict[str, Any], first_edge: dict[str, Any]) -> Path:
    """A JSON blueprint of `CHAIN` nodes in a line after `head`."""
    nodes = [head] + [{"id": f"n{i}", "uses": "tests.nodes.ident"} for i in range(CHAIN)]
    edges = [{"source": "head", "target": "n0", **first_edge}]
    edges += [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(CHAIN - 1)]
    doc = {"id": "chain", "nodes": nodes, "edges": edges}
    return write(tmp_path, "chain.json", json.dumps(doc))


def test_a_long_chain_whose_head_fails_ends_with_its_document(tmp_path: Path) -> None:
    path = chain(tmp_path, {"id": "head", "uses": "tests.nodes.always_fails"}, {})
    state = tmp_path / "state"
    out = cli("run", path, "--json", "--no-progress", "--state-dir", state, traceback=True)
    assert out.code == 1, out
    doc = out.json()
    assert doc["status"] == "failed"
    assert doc["nodes"]["head"]["status"] == "failed"
    assert doc["nodes"][f"n{CHAIN - 1}"]["status"] == "pending"
    again = cli("run", path, "--json", "--no-progress", "--state-dir", state,
                "--resume", "latest", traceback=True)  # fmt: skip
    assert again.code == 1, again
    assert again.json()["nodes"][f"n{CHAIN - 1}"]["status"] == "pending"


def test_a_long_chain_whose_first_edge_is_not_taken_is_skipped(tmp_path: Path) -> None:
    head = {"id": "head", "uses": "tests.nodes.route", "params": {"to": "left"}}
    path = chain(tmp_path, head, {"action": "right"})
    state = tmp_path / "state"
    out = cli("run", path, "--json", "--no-progress", "--state-dir", state)
    assert out.code == 0, out
    nodes = out.json()["nodes"]
    assert nodes["head"]["status"] == "succeeded"
    assert {nodes[f"n{i}"]["status"] for i in range(CHAIN)} == {"skipped"}
    again = cli("run", path, "--json", "--no-progress", "--state-dir", state, "--resume", "latest")
    assert again.code == 0, again
    assert again.json()["nodes"][f"n{CHAIN - 1}"]["status"] == "skipped"
