"""`flowrun runs show --html FILE`: one self-contained page for a past run.

Inline CSS and SVG only (the timeline is rectangles on a time axis), one short script that
marks how many bars the browser laid out, nothing fetched: the file opens offline, from a CI
artifact. Every value from the run goes through `html.escape`.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from flowrun.runs.show import document
from flowrun.store import RunDetails

WIDTH = 960  # px of the timeline's plot area
LABEL = 200  # px left of it for node names
ROW = 22
CONC_H = 60  # px of each batch's concurrency chart
_COLOURS = {
    "succeeded": "#2e9e4f",
    "completed": "#2e9e4f",
    "recovered": "#d4a017",
    "failed": "#d43a3a",
    "pending": "#9a9a9a",
    "running": "#4a7bd4",
}
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:24px 0 8px}
table.summary td{padding:2px 12px 2px 0}table.nodes{border-collapse:collapse}
table.nodes td,table.nodes th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}
.status{font-weight:600}pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:400px}
svg text{font:12px system-ui,sans-serif}details{margin:4px 0}summary{cursor:pointer}
"""
# Counts the bars the browser laid out (width > 0) onto the timeline: a check for tests and a
# cheap sign, in the DOM, that the page rendered.
_JS = (
    "addEventListener('load',()=>{const t=document.getElementById('timeline');"
    "t.dataset.rendered=[...t.querySelectorAll('rect.span')]"
    ".filter(r=>r.getBBox().width>0).length});"
)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def render(details: RunDetails, logs: dict[str, list[tuple[int, str]]]) -> str:
    """The page: summary, node table, timeline of spans and batch concurrency, errors, logs."""
    doc = document(details)
    colour = _COLOURS.get(doc["status"], "#555")
    took = "-" if doc["durationMs"] is None else f"{doc['durationMs'] / 1000:.2f} s"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>flowrun run {_e(doc['runId'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>run {_e(doc['blueprint'])} <code>{_e(doc['runId'])}</code></h1>",
        "<table class='summary'>",
        f"<tr><td>status</td><td class='status' style='color:{colour}'>"
        f"{_e(doc['status'])}</td></tr>",
        f"<tr><td>blueprint file</td><td>{_e(doc['file'])}</td></tr>",
        f"<tr><td>started (UTC)</td><td>{_e(_utc(doc['started']))}</td></tr>",
        f"<tr><td>duration</td><td>{_e(took)}</td></tr>",
        f"<tr><td>starts</td><td>{_e(doc['starts'])}</td></tr></table>",
        _node_table(doc),
        "<h2>Timeline</h2>",
        _timeline(details, doc),
        _errors(doc),
        _logs(logs),
        f"<script>{_JS}</script></body></html>",
    ]
    return "\n".join(parts)


def _node_table(doc: dict[str, Any]) -> str:
    rows = ["<h2>Nodes</h2><table class='nodes'><tr><th>node</th><th>status</th>"
            "<th>attempts</th><th>duration</th><th>notes</th></tr>"]  # fmt: skip
    for name, n in doc["nodes"].items():
        ms = "" if n.get("durationMs") is None else f"{n['durationMs']:.1f} ms"
        note = f"{n['error']['type']}: {n['error']['message']}" if "error" in n else ""
        rows.append(_row(name, n["status"], n.get("attempts") or "", ms, note))
    for name, b in doc["batches"].items():
        rows.append(
            _row(
                name,
                b["status"],
                "",
                "",
                f"{b['succeeded']}/{b['total']} items, {b['failed']} failed",
            )
        )
    rows.append("</table>")
    return "".join(rows)


def _row(*cells: Any) -> str:
    name, status, *rest = cells
    colour = _COLOURS.get(str(status), "#555")
    tds = "".join(f"<td>{_e(c)}</td>" for c in rest)
    cell = f"<td class='status' style='color:{colour}'>{_e(status)}</td>"
    return f"<tr><td>{_e(name)}</td>{cell}{tds}</tr>"


def _timeline(details: RunDetails, doc: dict[str, Any]) -> str:
    spans = list(details.spans.values())
    if not spans:
        return "<svg id='timeline' width='0' height='0'></svg><p>No timing recorded.</p>"
    t0 = min(s.started for s in spans)
    ends = [s.finished for s in spans if s.finished is not None] + [s.started for s in spans]
    t1 = max(ends)
    span_s = max(t1 - t0, 1e-3)

    def x(t: float) -> float:
        return LABEL + (t - t0) / span_s * WIDTH

    batches = [s.node for s in spans if s.node in details.samples]
    height = 30 + ROW * len(spans) + (CONC_H + 24) * len(batches) + 10
    out = [f"<svg id='timeline' xmlns='http://www.w3.org/2000/svg' width='{LABEL + WIDTH + 20}'"
           f" height='{height}' role='img' aria-label='timeline of the run'>"]  # fmt: skip
    for i in range(5):  # time axis
        t = t0 + span_s * i / 4
        out.append(f"<line x1='{x(t):.1f}' y1='14' x2='{x(t):.1f}' y2='{height - 10}' "
                   "stroke='#e3e3e3'/>")  # fmt: skip
        digits = 3 if span_s < 0.1 else 2 if span_s < 10 else 1
        label = f"{t - t0:.{digits}f} s"
        out.append(f"<text x='{x(t):.1f}' y='11' text-anchor='middle'>{label}</text>")
    y = 24
    for s in spans:
        status = _status(doc, s.node) or s.status or "pending"
        end = s.finished if s.finished is not None else t1
        w = max(x(end) - x(s.started), 2.0)
        title = f"{s.node}: {status}, {end - s.started:.3f} s"
        out.append(f"<text x='{LABEL - 8}' y='{y + 14}' text-anchor='end'>{_e(s.node)}</text>")
        out.append(
            f"<rect class='span' data-node='{_e(s.node)}' x='{x(s.started):.1f}' y='{y + 2}'"
            f" width='{w:.1f}' height='{ROW - 6}' rx='3' fill='{_COLOURS.get(status, '#555')}'>"
            f"<title>{_e(title)}</title></rect>"
        )
        y += ROW
    for name in batches:
        y += 20
        samples = details.samples[name]
        peak = max([1, *samples.peaks])
        out.append(f"<text x='{LABEL - 8}' y='{y + CONC_H / 2:.0f}' text-anchor='end'>"
                   f"{_e(name)} running (max {peak})</text>")  # fmt: skip
        points = [f"{x(samples.start):.1f},{y + CONC_H}"]
        for i, p in enumerate(samples.peaks):
            top = y + CONC_H - p / peak * CONC_H
            points += [f"{x(samples.start + i * samples.step):.1f},{top:.1f}",
                       f"{x(samples.start + (i + 1) * samples.step):.1f},{top:.1f}"]  # fmt: skip
        end = samples.start + len(samples.peaks) * samples.step
        points.append(f"{x(end):.1f},{y + CONC_H}")
        out.append(
            f"<polygon class='concurrency' data-batch='{_e(name)}' fill='#4a7bd4'"
            f" fill-opacity='0.5' stroke='#4a7bd4' points='{' '.join(points)}'/>"
        )
        y += CONC_H
    out.append("</svg>")
    return "".join(out)


def _status(doc: dict[str, Any], node: str) -> str | None:
    found = doc["nodes"].get(node) or doc["batches"].get(node)
    return None if found is None else str(found["status"])


def _errors(doc: dict[str, Any]) -> str:
    failed = [(k, n) for k, n in doc["nodes"].items() if "error" in n]
    failed += [(k, n) for b in doc["batches"].values() for k, n in b["failedItems"].items()]
    if not failed:
        return "<h2>Errors</h2><p>None.</p>"
    out = ["<h2>Errors</h2>"]
    for name, n in failed:
        err = n["error"]
        head = f"{name} (attempt {n.get('attempts') or '?'}): {err['type']}: {err['message']}"
        body = err["traceback"] or f"{err['type']}: {err['message']}"
        out.append(f"<details open class='error'><summary>{_e(head)}</summary>"
                   f"<pre>{_e(body)}</pre></details>")  # fmt: skip
    return "".join(out)


def _logs(logs: dict[str, list[tuple[int, str]]]) -> str:
    if not logs:
        return "<h2>Output</h2><p>No node printed anything.</p>"
    out = ["<h2>Output</h2>"]
    for node, attempts in logs.items():
        for attempt, text in attempts:
            out.append(f"<details class='logs'><summary>{_e(node)} attempt {attempt}"
                       f"</summary><pre>{_e(text)}</pre></details>")  # fmt: skip
    return "".join(out)


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
