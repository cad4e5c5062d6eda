"""`kill -9` in the middle of a batch of subflows (SPEC §4, §6): a real `flowrun run` process
is killed once some children finished; `--resume` gives the result an uninterrupted run gives,
and no child node the store had recorded as finished runs again."""

from __future__ import annotations

import json
import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from tests.test_durability import DURABLE, Completed, Workdir, wait_for

N_ITEMS = 40  # subflows.yaml
CONCURRENCY = 4
GATE = 20  # items from this index on wait for the release file (Workdir.gate)


def _workdir(root: Path) -> Workdir:
    root.mkdir()
    w = Workdir(root, "subflows.yaml")
    shutil.copy(DURABLE / "one-item.yaml", root / "one-item.yaml")
    return w


def _comparable(result: Completed) -> dict[str, Any]:
    """The `--json` document without what differs between any two runs (id, durations)."""
    assert result.code == 0, result
    doc = result.json()
    doc.pop("runId")
    doc.pop("durationMs", None)
    for node in doc["nodes"].values():
        node.pop("durationMs", None)
    return doc


def _child_calls(w: Workdir) -> Counter[str]:
    return Counter(c.split()[1] for c in w.calls() if c.startswith("child "))


def test_kill_9_in_a_batch_of_subflows_loses_no_finished_child_node(tmp_path: Path) -> None:
    reference = _workdir(tmp_path / "reference")
    expected = _comparable(reference.run("--json", "-c", str(CONCURRENCY)))
    assert expected["context"]["results"] == [i * 10 for i in range(N_ITEMS)]
    assert expected["nodes"]["each[7]/scale"]["status"] == "succeeded"

    w = _workdir(tmp_path / "killed")
    w.gate(GATE)  # never released in the first process: it cannot finish before the kill
    proc = w.start("-c", str(CONCURRENCY))
    wait_for(proc, lambda: len(w.item_successes()) >= 12, "12 children finished")
    proc.kill()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    w.release()

    (run,) = w.runs_json()
    assert run["status"] == "interrupted"
    shown = w.cli("runs", "show", run["run_id"], "--json")
    assert shown.code == 0, shown
    recorded = {
        name
        for name, node in json.loads(shown.stdout)["nodes"].items()
        if "/" in name and node["status"] == "succeeded"
    }
    # what the store had committed (the events file showed 12 children finished; the store
    # may be a commit window behind it)
    assert recorded
    before = _child_calls(w)
    assert recorded <= set(before)

    resumed = w.run("--resume", "latest", "--json", "-c", str(CONCURRENCY))
    assert _comparable(resumed) == expected

    after = _child_calls(w)
    ran_again = {name for name in recorded if after[name] > before[name]}
    assert ran_again == set(), sorted(ran_again)
    assert all(after[name] == 1 for name in recorded)
    # every child node ran; only those running (or not yet recorded) at the kill ran twice
    assert set(after) == {f"each[{i}]/{n}" for i in range(N_ITEMS) for n in ("check", "scale")}
    twice = {name for name, count in after.items() if count > 1}
    assert twice <= set(before) - recorded
    print(
        f"kill -9 in a batch of subflows: {len(recorded)} child nodes recorded before the "
        f"kill, {len(twice)} ran again (none of them recorded)"
    )
