"""Choosing blocks to drop under a latency target, on measured latency.

Savings of single blocks come from the latency table (each dropped model timed against the original, interleaved,
with the run's own noise estimate); a saving that is negative beyond the noise or larger than plausible for the
block's share of multiply-adds is re-measured before it is used. A combination is chosen in score order on
predicted savings, then timed for real, and blocks are added until the measured ratio meets the target. Whether the
target is reachable at all is checked first, by timing the model with every droppable block gone. The final model
is checked again by `confirm_target` (see graphopt/target.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx

from graphopt.blocks import Block
from graphopt.errors import GraphoptError, TargetUnreachable
from graphopt.passes import drop_blocks
from graphopt.runtime import Comparison, LatencyBackend, LatencyStats

# A block's measured saving above this multiple of its share of multiply-adds (plus the run's noise) is suspect;
# measured across torchvision CNNs, savings stay within about 1.5x of the MAC share (docs/blocks_latency.md).
PLAUSIBLE_MACS_MULTIPLE = 2.0
REMEASURE_TRIES = 2
# Predictions add up several single-block savings, so the table is timed to this share of the noise threshold.
TABLE_NOISE_SHARE = 0.5


@dataclass
class LatencyTable:
    """Measured savings of single blocks, as fractions of the original's latency: a fraction comes from the ratio of
    one interleaved run, so it stays right when a re-measurement runs at another machine load than the table."""

    base: LatencyStats
    savings: dict[str, float]  # block id -> fraction of the original's latency saved by dropping it alone
    noise: float  # relative noise of the table's ratios
    noisy: bool
    start: float = 1.0  # ratio before any block is dropped: below 1 when every variant is timed in INT8
    remeasured: dict[str, list[float]] = field(default_factory=dict)  # block id -> implausible savings replaced
    implausible: list[str] = field(default_factory=list)  # still implausible after re-measuring

    @property
    def savings_ms(self) -> dict[str, float]:
        return {block: share * self.base.median_ms for block, share in self.savings.items()}

    def to_dict(self) -> dict:
        return {"base": self.base.to_dict(), "start_ratio": self.start, "savings": self.savings,
                "savings_ms": self.savings_ms, "noise": self.noise, "noisy": self.noisy, "remeasured": self.remeasured,
                "implausible": self.implausible}


@dataclass
class Attempt:
    """One measured candidate: the blocks dropped, the ratio the table predicted and the ratio measured."""

    blocks: list[str]
    predicted_ratio: float
    measured_ratio: float
    noise: float
    noisy: bool
    stage: str = "selection"  # "selection" (the drop alone) or "final" (the recovered model)


@dataclass
class Selection:
    blocks: list[Block]
    ratio: float  # measured latency ratio of the combined drop to the original
    attempts: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"blocks": [b.id for b in self.blocks], "ratio": self.ratio,
                "attempts": [asdict(a) for a in self.attempts]}


def latency_table(backend: LatencyBackend, model: onnx.ModelProto, blocks: list[Block], quiet: bool = False,
                  start: onnx.ModelProto | None = None) -> LatencyTable:
    """Time the original and each single-block drop in one interleaved run; re-time implausible savings.

    `start` is the model the drops are cut from when that is not the original itself (its INT8 form): it is timed
    in the same run, and each saving is the fall in ratio from it.
    """
    variants = {b.id: drop_blocks(model, [b.id], blocks) for b in blocks}
    firsts = [model] if start is None else [model, start]
    threshold = TABLE_NOISE_SHARE * backend.settings.noise_threshold
    run = backend.time_run([*firsts, *variants.values()], None if quiet else "latency table", threshold)
    origin = 1.0 if start is None else run.ratio(1)
    table = LatencyTable(run.stats[0], {b.id: origin - run.ratio(i + len(firsts)) for i, b in enumerate(blocks)},
                         run.noise, run.noisy, origin)
    for _ in range(REMEASURE_TRIES):
        suspects = [b for b in blocks if not _plausible(table, b)]
        if not suspects:
            return table
        rerun = backend.time_run([*firsts, *(variants[b.id] for b in suspects)], noise_threshold=threshold)
        origin = 1.0 if start is None else rerun.ratio(1)
        for index, block in enumerate(suspects, start=len(firsts)):
            table.remeasured.setdefault(block.id, []).append(table.savings[block.id])
            table.savings[block.id] = origin - rerun.ratio(index)
    table.implausible = [b.id for b in blocks if not _plausible(table, b)]
    return table


def _plausible(table: LatencyTable, block: Block) -> bool:
    """A saving within the noise of zero or more, and (where the block's MAC share is known) within the noise of
    PLAUSIBLE_MACS_MULTIPLE times that share."""
    share = table.savings[block.id]
    upper = PLAUSIBLE_MACS_MULTIPLE * block.macs_share + table.noise if block.macs_share > 0 else 1.0
    return -table.noise <= share <= upper


def check_reachable(backend: LatencyBackend, model: onnx.ModelProto, blocks: list[Block], target: float) -> float:
    """Measured ratio with every droppable block gone; raises TargetUnreachable if even that misses `target`."""
    comparison = backend.compare(model, drop_blocks(model, [b.id for b in blocks], blocks))
    if comparison.ratio > target + comparison.noise:
        raise TargetUnreachable(f"latency target {target:.3f} of the original cannot be met: dropping all "
                                f"{len(blocks)} droppable blocks measures {_figure(comparison)}")
    return comparison.ratio


def select(backend: LatencyBackend, model: onnx.ModelProto, blocks: list[Block], ranked: list[Block],
           table: LatencyTable, target: float | None = None, count: int | None = None,
           start: int = 1, attempts: list[Attempt] | None = None) -> Selection:
    """Blocks in `ranked` order (best to lose first) until the measured ratio meets `target`, or the first `count`.

    `blocks` are the droppable blocks in graph order (what drop passes need). `start` is the fewest blocks to try
    (after a final model missed the target, one more than it had); `attempts` are earlier attempts to keep.
    """
    attempts = list(attempts or [])
    if count is not None:
        if not 1 <= count <= len(ranked):
            raise GraphoptError(f"--drop {count}: the model has {len(ranked)} droppable blocks")
        comparison = _attempt(backend, model, ranked[:count], blocks, table, attempts)
        return Selection(_in_graph_order(ranked[:count], blocks), comparison.ratio, attempts)
    assert target is not None
    size = start
    while size <= len(ranked):
        # smallest prefix predicted to reach the target
        while size < len(ranked) and predicted_ratio(ranked[:size], table, attempts) > target:
            size += 1
        comparison = _attempt(backend, model, ranked[:size], blocks, table, attempts)
        if comparison.ratio <= target:
            return Selection(_in_graph_order(ranked[:size], blocks), comparison.ratio, attempts)
        size += 1
    measured = [a for a in attempts if a.stage == "selection"] or attempts
    raise TargetUnreachable(f"latency target {target:.3f} was not met: the best measured ratio was "
                            f"{min(a.measured_ratio for a in measured):.3f} with up to {len(ranked)} blocks dropped")


def predicted_ratio(blocks: list[Block], table: LatencyTable, attempts: list[Attempt] = ()) -> float:
    """The ratio predicted for dropping `blocks` together: their single-block savings added up, scaled by how the
    combinations already measured in this run compared with their own sums (savings do not add exactly: on
    EfficientNet-Lite0 two blocks measured 87% of their summed saving)."""
    return table.start - _summed([b.id for b in blocks], table) * additivity(table, attempts)


def additivity(table: LatencyTable, attempts: list[Attempt]) -> float:
    """Measured saving over summed single-block saving, across the selection attempts so far (1 before any),
    kept within [0.5, 1.5] so one odd measurement cannot swing later predictions far."""
    measured = [a for a in attempts if a.stage == "selection"]
    summed = sum(_summed(a.blocks, table) for a in measured)
    if not measured or summed <= 0:
        return 1.0
    return min(1.5, max(0.5, sum(table.start - a.measured_ratio for a in measured) / summed))


def _summed(ids: list[str], table: LatencyTable) -> float:
    return sum(max(0.0, table.savings[i]) for i in ids)


def _attempt(backend: LatencyBackend, model: onnx.ModelProto, chosen: list[Block], blocks: list[Block],
             table: LatencyTable, attempts: list[Attempt]) -> Comparison:
    comparison = backend.compare(model, drop_blocks(model, [b.id for b in chosen], blocks))
    predicted = predicted_ratio(chosen, table, attempts)
    attempts.append(Attempt([b.id for b in chosen], predicted, comparison.ratio,
                            comparison.noise, comparison.noisy))
    return comparison


def _figure(comparison: Comparison) -> str:
    return f"{comparison.ratio:.3f} (noise ±{comparison.noise:.3f})"


def _in_graph_order(chosen: list[Block], blocks: list[Block]) -> list[Block]:
    ids = {b.id for b in chosen}
    return [b for b in blocks if b.id in ids]
