"""`flowrun ARGS` with output capture switched off: no stream proxies, no per-attempt buffer.

Only for measuring what capture costs (`make bench`, workload "capture"): flowrun itself always
captures node output. Everything else is the real code path.
"""

from __future__ import annotations

import sys

from flowrun.cli import main
from flowrun.engine import capture


def _begin() -> None:
    pass


def _end() -> str:
    return ""


if __name__ == "__main__":
    capture.install = lambda: None  # type: ignore[assignment,return-value]
    capture.uninstall = lambda token: None  # type: ignore[assignment]
    capture.begin = _begin
    capture.end = _end
    capture.attach = lambda buf: None  # type: ignore[assignment]
    sys.argv[0] = "flowrun"
    main()
