"""Actions: one candidate cut at one level, whatever method made it. Selection, the latency table, the report
and recovery only see actions."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Action:
    """A cut the method named `method` makes at `target` (a block id, a channel group, a node's output), at level
    `keep` (channels kept, bases kept; 0 for a cut without levels). What it means is the method's
    (methods/registry.py)."""

    method: str
    target: str
    keep: int = 0
    macs_share: float = field(default=0.0, compare=False)  # share of the model's multiply-adds the action removes

    @property
    def id(self) -> str:
        """The cut's name in tables and reports, as its method spells it (a block id; `group@channels kept`)."""
        from graphopt.methods.registry import method  # the registry imports the methods, which import Action
        return method(self.method).label(self)
