"""A node module that starts a non-daemon thread when it is imported."""

from __future__ import annotations

import threading
import time
from typing import Any

threading.Thread(target=time.sleep, args=(600,), name="left-at-import").start()


def work(x: Any = None) -> int:
    return 1
