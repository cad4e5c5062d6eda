"""Node functions for `resilience.yaml`: a sync job whose services misbehave on purpose.

Every failure here is scripted from `ctx.attempt` and `ctx.index`, so a run always fails,
retries and recovers in the same way; nothing touches the network.
"""

from __future__ import annotations

from typing import Any

from flowrun import NodeContext

Page = dict[str, Any]


def list_pages(count: int) -> list[str]:
    """Name the pages to download: `page-0` ... `page-<count-1>`."""
    return [f"page-{i}" for i in range(count)]


def check_inventory(ctx: NodeContext, fail_times: int) -> dict[str, int]:
    """A busy service: the first `fail_times` attempts raise ConnectionError, then it answers."""
    if ctx.attempt <= fail_times:
        raise ConnectionError(f"inventory service busy (attempt {ctx.attempt})")
    return {"in_stock": 128, "attempts": ctx.attempt}


def fetch_page(page: str, ctx: NodeContext, hang_index: int, hang_seconds: float) -> Page:
    """Download one page. Item `hang_index` hangs for `hang_seconds` on its first attempt only.

    The hang waits on `ctx.cancelled` rather than sleeping: flowrun sets it when it abandons
    the attempt, and a thread cannot be killed, so a plain sleep would keep it busy.
    """
    if ctx.index == hang_index and ctx.attempt == 1 and ctx.cancelled.wait(hang_seconds):
        raise TimeoutError(f"{page}: attempt abandoned")
    return {"page": page, "records": 50, "attempt": ctx.attempt}


def post_webhook(pages: list[Page], url: str) -> dict[str, Any]:
    """A delivery endpoint that is always down: every attempt raises ConnectionError."""
    raise ConnectionError(f"{url}: connection refused ({len(pages)} pages not sent)")


def write_outbox(pages: list[Page]) -> dict[str, Any]:
    """Fallback for `post_webhook`: queue the pages locally for a later delivery."""
    return {"delivered": False, "queued": len(pages), "via": "outbox"}


def summarize(pages: list[Page], stock: dict[str, int], delivery: dict[str, Any]) -> dict[str, Any]:
    """Report what the sync did and what it took."""
    return {
        "pages": len(pages),
        "records": sum(p["records"] for p in pages),
        "retried_pages": [p["page"] for p in pages if p["attempt"] > 1],
        "in_stock": stock["in_stock"],
        "inventory_attempts": stock["attempts"],
        "delivered": delivery["delivered"],
        "queued": delivery["queued"],
    }
