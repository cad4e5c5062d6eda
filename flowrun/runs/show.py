"""`flowrun runs show`: one past run as a JSON document or as text, from its store."""

from __future__ import annotations

import time
from typing import Any

from flowrun.store import RunDetails, StoredNode


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _node(node: StoredNode, details: RunDetails, name: str) -> dict[str, Any]:
    span = details.spans.get(name)
    out: dict[str, Any] = {
        "status": node.status,
        "attempts": node.attempts,
        "durationMs": _ms(node.duration_ms),
    }
    if span is not None:
        out["started"], out["finished"] = span.started, span.finished
    if node.fallback:
        out["fallback"] = node.fallback
    if node.error is not None:
        out["error"] = {
            "type": node.error.type,
            "message": node.error.message,
            "traceback": node.error.traceback,
        }
    if name in details.logged:
        out["logs"] = details.logged[name]  # attempts with captured output
    return out


def document(details: RunDetails) -> dict[str, Any]:
    """`runs show --json`: the run, each task node, each batch with its failed items."""
    run, meta, summary = details.run, details.run.meta, details.summary
    nodes = {k: _node(n, details, k) for k, n in run.nodes.items()}
    for name, span in details.spans.items():  # started but never settled
        if name not in nodes and name not in run.batches:
            nodes[name] = {"status": "pending", "started": span.started, "finished": None}
    batches: dict[str, Any] = {}
    for name, b in run.batches.items():
        items = run.items.get(name, {})
        failed = {f"{name}[{i}]": n for i, n in sorted(items.items()) if n.status == "failed"}
        bspan = details.spans.get(name)
        batches[name] = {
            "status": "pending" if b.status == "running" else b.status,
            "total": b.total,
            "succeeded": b.succeeded if b.succeeded is not None else _count(items, "succeeded"),
            "failed": b.failed if b.failed is not None else len(failed),
            "started": bspan.started if bspan else None,
            "finished": bspan.finished if bspan else None,
            "failedItems": {k: _node(n, details, k) for k, n in failed.items()},
        }
    errors = [
        {"node": k, "type": n["error"]["type"], "message": n["error"]["message"]}
        for k, n in [
            *nodes.items(),
            *(i for b in batches.values() for i in b["failedItems"].items()),
        ]
        if "error" in n
    ]
    return {
        "runId": meta.run_id,
        "blueprint": meta.blueprint_id,
        "file": meta.blueprint_path,
        "status": summary.status,
        "started": meta.started,
        "durationMs": None if summary.duration_s is None else round(summary.duration_s * 1000, 3),
        "starts": len(details.starts),
        "options": meta.options,
        "nodes": nodes,
        "batches": batches,
        "errors": errors,
    }


def _count(items: dict[int, StoredNode], status: str) -> int:
    return sum(1 for n in items.values() if n.status == status)


def text(details: RunDetails) -> str:
    """The run as a few readable lines: header, a line per node and batch, the errors."""
    doc = document(details)
    took = "-" if doc["durationMs"] is None else f"{doc['durationMs'] / 1000:.2f} s"
    lines = [
        f"run {doc['runId']}  {doc['blueprint']} ({doc['file']})",
        f"status {doc['status']}, started {_utc(doc['started'])} UTC, took {took}"
        + (f", {doc['starts']} starts (resumed)" if doc["starts"] > 1 else ""),
        "",
    ]
    width = max([16, *map(len, doc["nodes"]), *map(len, doc["batches"])])
    for name, n in doc["nodes"].items():
        ms = "" if n.get("durationMs") is None else f"{n['durationMs']:.1f} ms"
        note = f"{n['error']['type']}: {_first(n['error']['message'])}" if "error" in n else ""
        note = f"fallback {n['fallback']}" if n.get("fallback") else note
        attempts = n.get("attempts") or ""
        lines.append(
            f"{name:<{width}}  {n['status']:<10}  {attempts!s:>3}  {ms:>10}  {note}".rstrip()
        )
    for name, b in doc["batches"].items():
        counts = f"{b['succeeded']}/{b['total']} items, {b['failed']} failed"
        lines.append(f"{name:<{width}}  {b['status']:<10}  {'':>3}  {'':>10}  {counts}".rstrip())
    for e in doc["errors"]:
        lines.append(f"error: {e['node']}: {e['type']}: {_first(e['message'])}")
    logged = list(details.logged)
    if logged:
        shown = ", ".join(logged[:10]) + (", ..." if len(logged) > 10 else "")
        lines.append(f"output captured for: {shown} (flowrun runs show {doc['runId']} --logs NODE)")
    return "\n".join(lines)


def _first(message: str) -> str:
    lines = message.strip().splitlines()
    return (lines[0] + (" …" if len(lines) > 1 else "")) if lines else ""


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
