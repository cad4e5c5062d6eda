"""Node functions of the HTTP fan-out example (`fanout.yaml`): stdlib only."""

from __future__ import annotations

import urllib.request
from typing import Any


def fetch(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """GET `url`; its status and body size (a failed request fails the item)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read()
    return {"url": url, "status": response.status, "bytes": len(body)}
