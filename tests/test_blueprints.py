"""The example blueprints in `blueprints/`: each validates, and each run gives exactly the result
its trailing comment promises, at concurrency 1 and 4.

Runs go through the Python API (`flowrun.run`), except the `--set` variants, which go through
the command line because that is what the comments show. The expected values are written out
here from those comments, so a change to an example's behaviour fails until the comment (and
this file) say the same thing.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flowrun
from flowrun import events as ev
from flowrun.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "blueprints"
BLUEPRINTS = sorted([*EXAMPLES.glob("*.yaml"), *EXAMPLES.glob("*.json")])
ENV = {"NO_COLOR": "1", "FORCE_COLOR": None, "CI": None}


def run(path: Path, concurrency: int, state_dir: Path) -> tuple[dict[str, Any], list[ev.Event]]:
    """Run through the API; the report as the `--json` document, and every event in order."""
    seen: list[ev.Event] = []
    report = flowrun.run(path, concurrency=concurrency, state_dir=state_dir, sinks=[seen.append])
    return report.as_dict(), seen


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, [str(a) for a in args], env=ENV, catch_exceptions=False, prog_name="flowrun"
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result.exit_code, result.stdout, result.stderr


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {node: rep["status"] for node, rep in doc["nodes"].items()}


def attempts(events: list[ev.Event], node: str) -> int:
    """How many attempts of `node` started."""
    return sum(isinstance(e, ev.NodeStarted) and e.node == node for e in events)


def retried(events: list[ev.Event]) -> Counter[str]:
    return Counter(e.node for e in events if isinstance(e, ev.NodeRetry))


# -- every example -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", BLUEPRINTS, ids=lambda p: p.name)
def test_every_example_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    relative = path.relative_to(ROOT)
    pools = " (pools: web: 4 at once, 20/s)" if path.name == "fanout.yaml" else ""
    assert cli("validate", relative) == (0, f"{relative}: ok{pools}\n", "")


def test_every_example_has_its_expected_result_checked_here() -> None:
    checked = {
        "batch-workflow.yaml",
        "batch-workflow.json",
        "ci.yaml",
        "etl.yaml",
        "resilience.yaml",
        # composition (tests/test_composition_examples.py)
        "job-application.yaml",
        "interview.yaml",
        "rejection.yaml",
        "moderation.yaml",
        "customer-reviews.yaml",
        "customer-review.yaml",
        "polling.yaml",
        "review.yaml",
        "fanout.yaml",  # in tests/test_pools.py, against a local HTTP server
    }
    assert {p.name for p in BLUEPRINTS} == checked


# -- batch-workflow (the seed) -----------------------------------------------------------------

SEED_CONTEXT = {"factor": 2, "start": [10, 20, 30], "doubled": [20, 40, 60], "sum-results": 120}


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("name", ["batch-workflow.yaml", "batch-workflow.json"])
def test_seed(name: str, concurrency: int, tmp_path: Path) -> None:
    doc, events = run(EXAMPLES / name, concurrency, tmp_path)
    assert doc["blueprint"] == "batch-workflow"
    assert doc["status"] == "completed"
    assert doc["context"] == SEED_CONTEXT
    assert statuses(doc) == {
        "start": "succeeded",
        "double-items": "succeeded",
        "sum-results": "succeeded",
    }
    assert doc["nodes"]["double-items"]["items"] == {"total": 3, "succeeded": 3, "failed": 0}
    assert doc["nodes"]["start"]["attempts"] == doc["nodes"]["sum-results"]["attempts"] == 1
    assert doc["errors"] == []
    assert retried(events) == Counter()


def test_seed_yaml_and_json_give_the_same_result(tmp_path: Path) -> None:
    from_yaml, _ = run(EXAMPLES / "batch-workflow.yaml", 4, tmp_path / "yaml")
    from_json, _ = run(EXAMPLES / "batch-workflow.json", 4, tmp_path / "json")
    assert from_yaml["context"] == from_json["context"]
    assert statuses(from_yaml) == statuses(from_json)
    assert from_yaml["errors"] == from_json["errors"] == []


def test_seed_set_factor_from_its_comment(tmp_path: Path) -> None:
    """From the comment: `--set factor=3  # doubled [30, 60, 90], sum 180`."""
    code, out, _ = cli(
        "run", EXAMPLES / "batch-workflow.yaml", "--set", "factor=3", "--json",
        "--state-dir", tmp_path,
    )  # fmt: skip
    assert code == 0
    context = json.loads(out)["context"]
    assert context == {**SEED_CONTEXT, "factor": 3, "doubled": [30, 60, 90], "sum-results": 180}


# -- ci ----------------------------------------------------------------------------------------

CI_FILES = ["project/mathlib/__init__.py", "project/mathlib/stats.py",
            "project/mathlib/text.py", "project/test_mathlib.py"]  # fmt: skip


@pytest.mark.parametrize("concurrency", [1, 4])
def test_ci(concurrency: int, tmp_path: Path) -> None:
    """From the comment: the file list, one `ok` per file, the tests' verdict, the package."""
    dist = tmp_path / "dist"
    code, out, _ = cli(
        "run", EXAMPLES / "ci.yaml", "--set", f"dist={dist}", "--json", "-c", str(concurrency),
        "--state-dir", tmp_path / "state",
    )  # fmt: skip
    assert code == 0
    context = json.loads(out)["context"]
    assert context == {
        "dist": str(dist),
        "files": CI_FILES,
        "lint": [f"ok {f}" for f in CI_FILES],
        "test": "OK",
        "package": f"{dist}/mathlib.tar.gz",
        "report": "ci finished",
    }
    assert (dist / "mathlib.tar.gz").stat().st_size > 0
    assert not list((EXAMPLES / "project").rglob("__pycache__"))


def test_ci_report_step_runs_after_a_failure(tmp_path: Path) -> None:
    """`runIf: always`: the report step runs at the end even when packaging failed."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, _ = cli(
        "run", EXAMPLES / "ci.yaml", "--set", f"dist={blocker}/dist", "--json",
        "--state-dir", tmp_path / "state",
    )  # fmt: skip
    assert code == 1
    doc = json.loads(out)
    assert doc["nodes"]["package"]["status"] == "failed"
    assert doc["nodes"]["report"]["status"] == "succeeded"
    assert doc["context"]["report"] == "ci finished"


# -- etl ---------------------------------------------------------------------------------------

ETL_REJECTED = {
    "clean[11]": "order ORD-1012: amount 'n/a' is not a number",
    "clean[22]": "order ORD-1023: region is missing",
    "clean[30]": "order ORD-1031: '2024-02-30' is not a valid date (YYYY-MM-DD)",
}
ETL_AGGREGATE = {
    "East": {"orders": 10, "total": 10578.1},
    "North": {"orders": 10, "total": 11759.84},
    "South": {"orders": 9, "total": 5194.55},
    "West": {"orders": 8, "total": 1181.26},
}
ETL_REPORT = {
    "rows_read": 40,
    "rows_loaded": 37,
    "rows_rejected": 3,
    "rejected_orders": ["ORD-1012", "ORD-1023", "ORD-1031"],
    "period": {"from": "2024-03-01", "to": "2024-03-15"},
    "currency": "EUR",
    "grand_total": 28713.75,
    "top_region": "North",
}


@pytest.mark.parametrize("concurrency", [1, 4])
def test_etl(concurrency: int, tmp_path: Path) -> None:
    doc, events = run(EXAMPLES / "etl.yaml", concurrency, tmp_path)
    assert doc["status"] == "completed"
    assert statuses(doc) == {
        "extract": "succeeded",
        "clean": "succeeded",
        "aggregate": "succeeded",
        "report": "succeeded",
    }
    assert doc["nodes"]["clean"]["items"] == {"total": 40, "succeeded": 37, "failed": 3}
    errors = sorted(doc["errors"], key=lambda e: e["node"])
    assert errors == [
        {"node": node, "type": "ValueError", "message": message}
        for node, message in ETL_REJECTED.items()
    ]
    for node in ETL_REJECTED:  # maxRetries: 2, so each bad row is tried three times
        assert attempts(events, node) == 3, node

    context = doc["context"]
    assert set(context) == {"extract", "orders", "aggregate", "report"}
    with (EXAMPLES / "data" / "orders.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert context["extract"] == rows
    orders = context["orders"]
    assert len(orders) == 40
    assert [i for i, order in enumerate(orders) if order is None] == [11, 22, 30]
    assert orders[3] == {
        "order_id": "ORD-1004",
        "date": "2024-03-02",
        "region": "West",
        "customer": "Harbour Lane Books",
        "amount": 68.74,
        "currency": "EUR",
        "source_amount": 58.75,
        "source_currency": "GBP",
    }
    # gathered in CSV order, whatever order the workers finished in
    loaded = [(i, order["order_id"]) for i, order in enumerate(orders) if order is not None]
    assert loaded == [(i, rows[i]["order_id"]) for i, _ in loaded]
    assert context["aggregate"] == ETL_AGGREGATE
    assert context["report"] == ETL_REPORT


# -- resilience --------------------------------------------------------------------------------

PAGES = [
    {"page": "page-0", "records": 50, "attempt": 1},
    {"page": "page-1", "records": 50, "attempt": 1},
    {"page": "page-2", "records": 50, "attempt": 2},
    {"page": "page-3", "records": 50, "attempt": 1},
]
OUTBOX = {"delivered": False, "queued": 4, "via": "outbox"}
RESILIENCE_CONTEXT = {
    "list-pages": ["page-0", "page-1", "page-2", "page-3"],
    "inventory": {"in_stock": 128, "attempts": 3},
    "downloaded": PAGES,
    "publish": OUTBOX,
    "write-outbox": OUTBOX,
    "summary": {
        "pages": 4,
        "records": 200,
        "retried_pages": ["page-2"],
        "in_stock": 128,
        "inventory_attempts": 3,
        "delivered": False,
        "queued": 4,
    },
}


@pytest.mark.parametrize("concurrency", [1, 4])
def test_resilience(concurrency: int, tmp_path: Path) -> None:
    doc, events = run(EXAMPLES / "resilience.yaml", concurrency, tmp_path)
    assert doc["status"] == "completed"
    assert doc["context"] == RESILIENCE_CONTEXT
    nodes = doc["nodes"]
    assert statuses(doc) == {
        "list-pages": "succeeded",
        "inventory": "succeeded",
        "download": "succeeded",
        "publish": "recovered",
        "write-outbox": "succeeded",
        "summary": "succeeded",
    }
    assert nodes["list-pages"]["attempts"] == 1
    assert nodes["inventory"]["attempts"] == 3
    assert nodes["download"]["items"] == {"total": 4, "succeeded": 4, "failed": 0}
    assert nodes["publish"]["attempts"] == 2
    assert nodes["write-outbox"]["attempts"] == 1
    assert attempts(events, "write-outbox") == 1  # ran once, in place of publish

    assert retried(events) == Counter({"inventory": 2, "download[2]": 1, "publish": 1})
    (timeout,) = [e for e in events if isinstance(e, ev.NodeRetry) and e.node == "download[2]"]
    assert timeout.attempt == 1
    (failed,) = [e for e in events if isinstance(e, ev.NodeFailed)]
    assert (failed.node, failed.error_type, failed.message) == (
        "publish",
        "ConnectionError",
        "https://hooks.example.invalid/sync: connection refused (4 pages not sent)",
    )
    (recovered,) = [e for e in events if isinstance(e, ev.NodeRecovered)]
    assert (recovered.node, recovered.fallback) == ("publish", "write-outbox")


# -- review, with the --set variants of its comment --------------------------------------------


def _review_catalogue() -> dict[str, dict[str, Any]]:
    """The documents `review.fetch` serves, read from the example's own module."""
    spec = importlib.util.spec_from_file_location("_review_example", EXAMPLES / "review.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.CATALOGUE)


DOCS = _review_catalogue()
REVIEW_NODES = (
    "fetch",
    "classify",
    "auto-approve",
    "reject",
    "human-review",
    "notify-author",
    "finalize",
)


def review_expected(
    doc_id: str, branch: str, *, approve: float = 0.8, notified: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """The context and node statuses the comment of review.yaml gives for one run."""
    doc = {"id": doc_id, **DOCS[doc_id]}
    title = doc["title"]
    decision = {
        "human-review": {"decision": "approved", "by": "editorial-desk"},
        "auto-approve": {"decision": "approved", "by": "auto"},
        "reject": {"score": doc["score"], "decision": "rejected", "by": "auto"},
    }[branch]
    context: dict[str, Any] = {
        "doc_id": doc_id,
        "approve_threshold": approve,
        "reject_threshold": 0.3,
        "fetch": doc,
        "classify": doc,
        branch: {"id": doc_id, "title": title, **decision},
    }
    ran = {"fetch", "classify", branch, "finalize"}
    if notified:
        message = f"Rejected: {title} (score {doc['score']})"
        context["notify-author"] = {"channel": "email", "message": message}
        ran.add("notify-author")
    context["finalize"] = {
        "id": doc_id,
        "title": title,
        "status": "archived" if branch == "reject" else "published",
        "route": branch,
        "by": decision["by"],
    }
    nodes = {node: "succeeded" if node in ran else "skipped" for node in REVIEW_NODES}
    return context, nodes


REVIEW_VARIANTS = {
    "default": ([], review_expected("rfc-42", "human-review")),
    "approve_threshold=0.5": (
        ["--set", "approve_threshold=0.5"],
        review_expected("rfc-42", "auto-approve", approve=0.5),
    ),
    "doc_id=guide-7": (["--set", "doc_id=guide-7"], review_expected("guide-7", "auto-approve")),
    "doc_id=draft-3": (["--set", "doc_id=draft-3"], review_expected("draft-3", "reject")),
    "doc_id=promo-9": (
        ["--set", "doc_id=promo-9"],
        review_expected("promo-9", "reject", notified=True),
    ),
}


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("variant", list(REVIEW_VARIANTS))
def test_review(variant: str, concurrency: int, tmp_path: Path) -> None:
    sets, (context, nodes) = REVIEW_VARIANTS[variant]
    code, out, _ = cli(
        "run", EXAMPLES / "review.yaml", *sets, "--json", "-c", str(concurrency),
        "--state-dir", tmp_path,
    )  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["status"] == "completed"
    assert doc["context"] == context
    assert statuses(doc) == nodes
    assert doc["errors"] == []
