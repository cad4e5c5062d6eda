"""Node functions for `review.yaml`: route a document to approval, rejection or a human.

The documents come from a small built-in catalogue, so every run is deterministic; a real
`fetch` would read them from a CMS.
"""

from __future__ import annotations

from typing import Any

from flowrun import Result

Doc = dict[str, Any]
Decision = dict[str, Any]

CATALOGUE: dict[str, Doc] = {
    "rfc-42": {
        "title": "RFC 42: Retry budgets for batch workers",
        "author": "m.okafor",
        "body": "Proposes a failure budget per batch, so one bad item cannot sink a run.",
        "score": 0.55,
    },
    "guide-7": {
        "title": "Getting started with blueprints",
        "author": "l.berg",
        "body": "Walks through nodes, edges and batches with a runnable example.",
        "score": 0.91,
    },
    "draft-3": {
        "title": "Notes on join strategies",
        "author": "p.silva",
        "body": "TODO: write this up.",
        "score": 0.25,
    },
    "promo-9": {
        "title": "Win a free cruise!!!",
        "author": "promo-desk",
        "body": "Click here to claim your prize.",
        "score": 0.12,
    },
}


def fetch(doc_id: str) -> Doc:
    """Return the document `doc_id` with its `id`, `title`, `author`, `body` and `score`."""
    if doc_id not in CATALOGUE:
        known = ", ".join(sorted(CATALOGUE))
        raise ValueError(f"no document {doc_id!r} (known: {known})")
    return {"id": doc_id, **CATALOGUE[doc_id]}


def classify(doc: Doc, approve_at: float, reject_below: float) -> Result:
    """Choose the route: `approve` at or above `approve_at`, `reject` below `reject_below`,
    `escalate` in between. The document itself is passed on as the output."""
    if reject_below > approve_at:
        raise ValueError(f"reject_below ({reject_below}) is above approve_at ({approve_at})")
    score = doc["score"]
    if score >= approve_at:
        return Result(doc, action="approve")
    if score < reject_below:
        return Result(doc, action="reject")
    return Result(doc, action="escalate")


def auto_approve(doc: Doc) -> Decision:
    """Approve without a human: the score is high enough."""
    return {"id": doc["id"], "title": doc["title"], "decision": "approved", "by": "auto"}


def reject(doc: Doc) -> Decision:
    """Reject without a human; the score is kept so an edge condition can test it."""
    return {
        "id": doc["id"],
        "title": doc["title"],
        "score": doc["score"],
        "decision": "rejected",
        "by": "auto",
    }


def human_review(doc: Doc, reviewer: str, min_score: float) -> Decision:
    """Stand-in for a review queue: `reviewer` approves a document scoring at least `min_score`."""
    decision = "approved" if doc["score"] >= min_score else "rejected"
    return {"id": doc["id"], "title": doc["title"], "decision": decision, "by": reviewer}


def notify_author(message: str, channel: str) -> dict[str, str]:
    """Pretend to send `message`; return what would have been sent."""
    return {"channel": channel, "message": message}


def finalize(decisions: dict[str, Decision]) -> dict[str, Any]:
    """Publish or archive the document, whichever branch decided.

    `decisions` maps the id of each predecessor that ran to its output. The branches exclude
    each other, so exactly one is present; the others were skipped.
    """
    if len(decisions) != 1:
        raise ValueError(f"expected one decision, got {sorted(decisions)}")
    (route, decision), *_ = decisions.items()
    return {
        "id": decision["id"],
        "title": decision["title"],
        "status": "published" if decision["decision"] == "approved" else "archived",
        "route": route,
        "by": decision["by"],
    }
