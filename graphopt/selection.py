"""Choosing blocks to drop under a latency target, on measured latency.

Savings of single blocks come from the latency table (each dropped model timed against the original, interleaved);
a combination is chosen in score order on predicted savings, then timed for real, and blocks are added until the
measured ratio meets the target. Whether the target is reachable at all is checked first, by timing the model with
every droppable block gone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx

from graphopt.blocks import Block
from graphopt.errors import GraphoptError, TargetUnreachable
from graphopt.passes import drop_blocks
from graphopt.runtime import LatencyBackend, LatencyStats


@dataclass
class LatencyTable:
    base: LatencyStats
    savings_ms: dict[str, float]  # block id -> measured latency saved by dropping it alone

    def to_dict(self) -> dict:
        return {"base": self.base.to_dict(), "savings_ms": self.savings_ms}


@dataclass
class Attempt:
    blocks: list[str]
    predicted_ratio: float
    measured_ratio: float


@dataclass
class Selection:
    blocks: list[Block]
    ratio: float  # measured latency ratio of the combined drop to the original
    attempts: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"blocks": [b.id for b in self.blocks], "ratio": self.ratio,
                "attempts": [asdict(a) for a in self.attempts]}


def latency_table(backend: LatencyBackend, model: onnx.ModelProto, blocks: list[Block],
                  quiet: bool = False) -> LatencyTable:
    """Time the original and each single-block drop in one interleaved run."""
    variants = [drop_blocks(model, [b.id], blocks) for b in blocks]
    stats = backend.measure_many([model, *variants], progress=None if quiet else "latency table")
    base = stats[0]
    return LatencyTable(base, {b.id: base.median_ms - s.median_ms for b, s in zip(blocks, stats[1:])})


def check_reachable(backend: LatencyBackend, model: onnx.ModelProto, blocks: list[Block], target: float) -> float:
    """Measured ratio with every droppable block gone; raises TargetUnreachable if even that misses `target`."""
    ratio = backend.compare(model, drop_blocks(model, [b.id for b in blocks], blocks)).ratio
    if ratio > target:
        raise TargetUnreachable(f"latency target {target:.3f} of the original cannot be met: dropping all "
                                f"{len(blocks)} droppable blocks measures {ratio:.3f}")
    return ratio


def select(backend: LatencyBackend, model: onnx.ModelProto, blocks: list[Block], ranked: list[Block],
           table: LatencyTable, target: float | None = None, count: int | None = None) -> Selection:
    """Blocks in `ranked` order (best to lose first) until the measured ratio meets `target`, or the first `count`.

    `blocks` are the droppable blocks in graph order (what drop passes need).
    """
    if count is not None:
        if not 1 <= count <= len(ranked):
            raise GraphoptError(f"--drop {count}: the model has {len(ranked)} droppable blocks")
        chosen = ranked[:count]
        ratio = _measure(backend, model, chosen, blocks)
        return Selection(_in_graph_order(chosen, blocks), ratio, [Attempt([b.id for b in chosen],
                                                                          _predicted(chosen, table), ratio)])
    assert target is not None
    attempts: list[Attempt] = []
    size = 1
    while size <= len(ranked):
        # smallest prefix predicted to reach the target
        while size < len(ranked) and _predicted(ranked[:size], table) > target:
            size += 1
        chosen = ranked[:size]
        ratio = _measure(backend, model, chosen, blocks)
        attempts.append(Attempt([b.id for b in chosen], _predicted(chosen, table), ratio))
        if ratio <= target:
            return Selection(_in_graph_order(chosen, blocks), ratio, attempts)
        size += 1
    raise TargetUnreachable(f"latency target {target:.3f} was not met: the best measured ratio was "
                            f"{min(a.measured_ratio for a in attempts):.3f} with all {len(ranked)} blocks dropped")


def _predicted(blocks: list[Block], table: LatencyTable) -> float:
    base = table.base.median_ms
    return (base - sum(max(0.0, table.savings_ms[b.id]) for b in blocks)) / base


def _measure(backend: LatencyBackend, model: onnx.ModelProto, chosen: list[Block], blocks: list[Block]) -> float:
    return backend.compare(model, drop_blocks(model, [b.id for b in chosen], blocks)).ratio


def _in_graph_order(chosen: list[Block], blocks: list[Block]) -> list[Block]:
    ids = {b.id for b in chosen}
    return [b for b in blocks if b.id in ids]
