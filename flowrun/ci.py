"""CI output (SPEC §9), sinks of the event stream like the display and the store.

`Failures` collects each final failure (node, type, message, traceback) as the run goes; at the
end `github_report` turns them into GitHub Actions workflow commands (an `::error` annotation
at the node's line in the blueprint, the traceback folded in `::group::`) and a Markdown summary
for `$GITHUB_STEP_SUMMARY`, and `junit_xml` into a JUnit report (one testcase per node, a failed
batch item its own testcase) as GitLab, Jenkins and CircleCI read it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from flowrun import events as ev
from flowrun.model import Graph
from flowrun.report import RunReport

if TYPE_CHECKING:  # imported by `junit_xml` only: a run without --junit never loads xml
    import xml.etree.ElementTree as ET

MAX_PER_BATCH = 20  # tracebacks shown per batch, as the display does
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class Failure:
    node: str  # `B[3]` for an item
    user: str  # the blueprint node: `B` for an item
    error_type: str
    message: str
    traceback: str
    duration_ms: float


@dataclass(slots=True)
class Failures:
    """An event sink keeping every final failure, in order."""

    items: list[Failure] = field(default_factory=list)

    def __call__(self, event: ev.Event) -> None:
        if type(event) is ev.NodeFailed:
            user = event.batch if event.batch is not None else event.node
            self.items.append(Failure(event.node, user, event.error_type, event.message,
                                      event.traceback, event.duration_ms))  # fmt: skip


def locator(graph: Graph) -> Callable[[str], tuple[str, int]]:
    """node id -> (blueprint file, line of the node's entry)."""
    specs = {s.id: s for s in graph.blueprint.nodes}
    doc = graph.blueprint.document

    def where(node: str) -> tuple[str, int]:
        spec = specs.get(node)
        if doc is None or spec is None:
            return graph.blueprint.file, 1
        return graph.blueprint.file, doc.where(spec.path)[0]

    return where


# -- GitHub Actions ------------------------------------------------------------------------------


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def _shown(failures: list[Failure], report: RunReport) -> Iterator[Failure]:
    """Failures the run reports (not those a fallback recovered), at most 20 per batch."""
    reported = {e["node"] for e in report.errors}
    per_batch: dict[str, int] = {}
    for f in failures:
        if f.node not in reported:
            continue
        per_batch[f.user] = per_batch.get(f.user, 0) + 1
        if f.node == f.user or per_batch[f.user] <= MAX_PER_BATCH:
            yield f


def github_report(
    report: RunReport, failures: Failures, where: Callable[[str], tuple[str, int]], out: TextIO
) -> None:
    """`::error` per failure at its node's line, each traceback in a `::group::` fold."""
    for f in _shown(failures.items, report):
        file, line = where(f.user)
        title = f"node {f.node} failed"
        print(f"::error file={_prop(file)},line={line},title={_prop(title)}::"
              f"{_data(f'{f.error_type}: {f.message}')}", file=out)  # fmt: skip
        if f.traceback:
            print(f"::group::{f.node}: {f.error_type} (traceback)", file=out)
            print(f.traceback.rstrip("\n"), file=out)
            print("::endgroup::", file=out)
    reported = {e["node"] for e in report.errors}
    total = sum(f.node in reported for f in failures.items)
    hidden = total - len(list(_shown(failures.items, report)))
    if hidden:
        print(f"::warning::{hidden} more failed batch items not annotated", file=out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(report: RunReport, failures: Failures) -> str:
    """The Markdown appended to `$GITHUB_STEP_SUMMARY`: status, node table, failures."""
    icon = {"completed": "✅", "failed": "❌", "cancelled": "⏹️"}.get(report.status, "")
    lines = [
        f"## {icon} flowrun `{report.blueprint}`: {report.status}",
        "",
        f"Run `{report.run_id}` in {report.duration_ms / 1000:.2f} s.",
        "",
        "| node | status | attempts | duration | items |",
        "|---|---|---:|---:|---|",
    ]
    for node, rep in report.nodes.items():
        items = rep.items
        counts = ""
        if items:
            counts = f"{items['succeeded']}/{items['total']} ok, {items['failed']} failed"
        attempts = str(rep.attempts) if items is None and rep.attempts else ""
        took = f"{rep.duration_ms:.1f} ms" if items is None and rep.attempts else ""
        lines.append(f"| `{_cell(node)}` | {rep.status} | {attempts} | {took} | {counts} |")
    if failures.items:
        lines += ["", "### Failures", ""]
        for f in _shown(failures.items, report):
            lines += [f"**`{f.node}`**: {f.error_type}: {_cell(f.message)}", ""]
            if f.traceback:
                lines += ["<details><summary>traceback</summary>", "", "```",
                          f.traceback.rstrip("\n"), "```", "", "</details>", ""]  # fmt: skip
    return "\n".join(lines) + "\n"


# -- JUnit XML -----------------------------------------------------------------------------------


def _x(text: str) -> str:
    return _XML_ILLEGAL.sub("\ufffd", text)


def junit_xml(report: RunReport, failures: Failures) -> ET.ElementTree[ET.Element]:
    """`<testsuites><testsuite><testcase>…` with `<failure message type>text</failure>`."""
    import xml.etree.ElementTree as ET

    by_node = {f.node: f for f in failures.items}
    suite = ET.Element("testsuite", name=_x(report.blueprint), id=_x(report.run_id))
    counts = {"tests": 0, "failures": 0, "skipped": 0}

    def case(
        name: str, seconds: float, status: str, failure: Failure | None, why: str = "failed"
    ) -> None:
        tc = ET.SubElement(suite, "testcase", classname=_x(report.blueprint), name=_x(name),
                           time=f"{seconds:.3f}")  # fmt: skip
        counts["tests"] += 1
        if failure is not None or status == "failed":
            counts["failures"] += 1
            kind = failure.error_type if failure else "Failed"
            message = f"{kind}: {failure.message}" if failure else why
            el = ET.SubElement(tc, "failure", message=_x(message[:1000]), type=_x(kind))
            el.text = _x((failure.traceback or failure.message) if failure else message)
        elif status in ("skipped", "pending"):
            counts["skipped"] += 1
            reason = "not taken" if status == "skipped" else "never started"
            ET.SubElement(tc, "skipped", message=reason)

    for node, rep in report.nodes.items():
        own = by_node.get(node)
        why = "failed"
        if rep.items is not None:
            why = f"{rep.items['failed']} of {rep.items['total']} items failed"
        failed = own if rep.status == "failed" else None
        case(node, rep.duration_ms / 1000, rep.status, failed, why)
        if rep.items is not None:
            for f in failures.items:
                if f.user == node and f.node != node:
                    case(f.node, f.duration_ms / 1000, "failed", f)
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("errors", "0")
    suite.set("time", f"{report.duration_ms / 1000:.3f}")
    root = ET.Element("testsuites", name="flowrun", tests=str(counts["tests"]),
                      failures=str(counts["failures"]), errors="0",
                      time=f"{report.duration_ms / 1000:.3f}")  # fmt: skip
    root.append(suite)
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: str, report: RunReport, failures: Failures) -> None:
    junit_xml(report, failures).write(path, encoding="utf-8", xml_declaration=True)
