"""The result of a run, as the `--json` document of SPEC §2 describes it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

RUN_STATUSES = ("completed", "failed", "cancelled")


@dataclass(slots=True)
class NodeReport:
    status: str = "pending"
    attempts: int = 0
    duration_ms: float = 0.0
    items: dict[str, int] | None = None  # batches: total / succeeded / failed

    def as_dict(self) -> dict[str, Any]:
        if self.items is not None:
            return {"status": self.status, "items": dict(self.items)}
        out: dict[str, Any] = {"status": self.status, "attempts": self.attempts}
        out["durationMs"] = round(self.duration_ms, 3)
        return out


@dataclass(slots=True)
class RunReport:
    blueprint: str
    run_id: str
    status: str
    context: dict[str, Any]
    nodes: dict[str, NodeReport]
    errors: list[dict[str, str]] = field(default_factory=list)
    duration_ms: float = 0.0

    @property
    def exit_code(self) -> int:
        return {"completed": 0, "failed": 1, "cancelled": 130}[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {
            "blueprint": self.blueprint,
            "runId": self.run_id,
            "status": self.status,
            "context": self.context,
            "nodes": {k: v.as_dict() for k, v in self.nodes.items()},
            "errors": list(self.errors),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent, allow_nan=False)
