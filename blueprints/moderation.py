"""Stand-ins for the content-moderation and customer-review examples (ported from flowcraft's
declarative examples): keyword rules where flowcraft asks a model."""

from __future__ import annotations

from typing import Any

from flowrun import Result


def classify(post: str) -> Result:
    """Route a post: `ban` (threats), `redact` (personal data), `review` (unsure), `approve`."""
    text = post.lower()
    if "kill" in text or "threat" in text:
        verdict = "ban"
    elif "@" in text or "phone" in text:
        verdict = "redact"
    elif "?" in text or "maybe" in text:
        verdict = "review"
    else:
        verdict = "approve"
    return Result({"post": post, "verdict": verdict}, action=verdict)


def ban(case: dict[str, Any]) -> str:
    return f"user banned for: {case['post']!r}"


def redact(case: dict[str, Any]) -> str:
    words = ["[redacted]" if "@" in w else w for w in case["post"].split()]
    return "published redacted: " + " ".join(words)


def review(case: dict[str, Any]) -> str:
    return f"queued for a human: {case['post']!r}"


def approve(case: dict[str, Any]) -> str:
    return f"published: {case['post']!r}"


def summarize(outcome: dict[str, str]) -> dict[str, str]:
    """The first (and only) branch that ran, under `action`."""
    ((branch, text),) = outcome.items()
    return {"action": branch, "result": text}


def sentiment(review: dict[str, Any]) -> Result:
    """positive / negative / mixed, from the stars."""
    stars = int(review["stars"])
    mood = "positive" if stars >= 4 else "negative" if stars <= 2 else "mixed"
    return Result({**review, "mood": mood}, action=mood)


def thank(review: dict[str, Any]) -> str:
    return f"thanked {review['author']}"


def apologise(review: dict[str, Any]) -> str:
    return f"apologised to {review['author']} and opened a ticket"


def ask_more(review: dict[str, Any]) -> str:
    return f"asked {review['author']} what we could do better"


def reply(replies: dict[str, str]) -> str:
    """The re-join: exactly one branch ran."""
    ((_, text),) = replies.items()
    return text


def check(state: dict[str, Any] | None = None, *, ready_after: int = 3) -> dict[str, Any]:
    """A job's status, as a polling API would answer: done after a few looks."""
    looks = (state or {}).get("looks", 0) + 1
    return {"looks": looks, "state": "done" if looks >= ready_after else "running"}
