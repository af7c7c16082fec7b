"""Actions: one candidate cut at one level, whatever method made it. Selection, the latency table, the report
and recovery only see actions."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Action:
    """`method` "blocks": the residual block `target` is dropped. `method` "filters": the channel group `target`
    keeps `keep` of its channels (the most important ones). `method` "basis": the node making tensor `target` is
    split through `keep` bases of its output space."""

    method: str
    target: str
    keep: int = 0
    macs_share: float = field(default=0.0, compare=False)  # share of the model's multiply-adds the action removes

    @property
    def id(self) -> str:
        """Block ids as the user knows them; a channel cut as `group@channels kept`; a basis cut as
        `tensor@r<rank>`."""
        if self.method == "blocks":
            return self.target
        return f"{self.target}@r{self.keep}" if self.method == "basis" else f"{self.target}@{self.keep}"
