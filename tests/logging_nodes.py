"""A node module that configures logging when it is imported (a common pattern)."""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger("tests.logging_nodes")
log.addHandler(logging.StreamHandler(sys.stderr))  # bound to sys.stderr as it is at import
log.setLevel(logging.INFO)
log.propagate = False


def logs_and_fails(x: Any = None) -> None:
    log.info("logged by the node")
    raise ValueError("after logging")
