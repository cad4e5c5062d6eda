"""`flowrun ARGS` with the durable store replaced by a sink that records nothing.

Only for measuring what the store costs (`make bench`, workload "store"): flowrun itself always
records its runs. Everything else (CLI, validation, driver, display) is the real code path.
"""

from __future__ import annotations

import sys
from typing import Any

from flowrun import store
from flowrun.cli import main


class NullStore:
    """Takes every event and keeps none."""

    failure = None

    def __init__(self, meta: store.RunMeta) -> None:
        self.meta = meta
        self.run_id = meta.run_id
        self.handlers: dict[type, Any] = {}  # the bus hands it nothing (`events.Bus`)

    @classmethod
    def create(cls, state_dir: Any, meta: store.RunMeta, on_failure: Any = None) -> NullStore:
        return cls(meta)

    def __call__(self, event: object) -> None:
        pass

    def close(self) -> None:
        pass


if __name__ == "__main__":
    store.RunStore = NullStore  # type: ignore[misc,assignment]
    sys.argv[0] = "flowrun"
    main()
