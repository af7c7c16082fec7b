"""The latency-table stage: time the cuts a target could need, in the order a plan would take them, and stop once
the timed ones save enough, or the search's share of the time budget is spent (recovery's is kept).

Why: on EfficientNet-Lite2 at INT8 the table of all 68 cuts took 259 s of a 10-minute budget, leaving recovery
53 s; a target of 0.85x INT8 alone's latency needs a few of them. Cuts are timed in the order of what each loses
per share of multiply-adds it removes (scored before timing), TABLE_CHUNK per interleaved run, until the timed cuts
together save TIMED_SAVINGS_MARGIN times the room between the starting ratio and the target. If the timed cuts
all at once still miss the target, the rest are timed too before anything is given up.
"""
from __future__ import annotations

from graphopt.errors import TargetUnreachable
from graphopt.selection import LatencyTable, check_reachable, latency_table
from graphopt.settings import AccelerateSettings
from graphopt.methods.registry import describe
from graphopt.stages.rank import Ranking, timing_order
from graphopt.stages.state import Run, say

# Timed savings, summed, as a multiple of the room to the target: summed savings overstate what cuts save together
# (on Lite0 two blocks measured 87% of their sum), cuts overlap (a block and the channels inside it), and ranking by
# measured saving reorders the cuts a little.
TIMED_SAVINGS_MARGIN = 3.0


def build_table(run: Run, ranking: Ranking) -> tuple[LatencyTable, float | None]:
    """The latency table and the target ratio; TargetUnreachable when every cut at once misses the target."""
    settings, order = run.settings, timing_order(run.actions, ranking)
    with run.stages("latency table"):
        say(run.quiet, f"timing {describe(run.actions)} on {run.backend.name} at batch {settings.batch}, "
                       f"the cuts a plan would take first")
        table = latency_table(run.backend, run.planner, order, run.quiet, start=run.int8,
                              enough=lambda partial: _enough(settings, partial) or run.search_over())
        target = settings.target_ratio(lambda: table.base.median_ms)
        if table.untimed:
            why = "the search's share of the time budget is spent" if run.search_over() else \
                "they save enough for the target"
            say(run.quiet, f"{len(table.timed(order))} of {len(order)} cuts timed: {why}")
    if target is None:
        return table, None
    with run.stages("latency table"):
        try:
            check_reachable(run.backend, run.planner, table.timed(order), target)
        except TargetUnreachable:
            if not table.untimed:
                raise
            say(run.quiet, "the cuts timed cannot reach the target together: timing the rest")
            table = complete_table(run, ranking)
            check_reachable(run.backend, run.planner, order, target)
    return table, target


def complete_table(run: Run, ranking: Ranking) -> LatencyTable:
    """Every cut timed, for when the cuts timed so far cannot reach the target (inside the caller's "latency
    table" stage)."""
    return latency_table(run.backend, run.planner, timing_order(run.actions, ranking), run.quiet, start=run.int8)


def _enough(settings: AccelerateSettings, table: LatencyTable) -> bool:
    """Whether the cuts timed so far save enough for the target (never with a number of blocks to drop)."""
    target = settings.target_ratio(lambda: table.base.median_ms)
    if target is None or settings.drop is not None or settings.blocks is not None:
        return False
    return sum(max(0.0, saving) for saving in table.savings.values()) >= TIMED_SAVINGS_MARGIN * (table.start - target)
