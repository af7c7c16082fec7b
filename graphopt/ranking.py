"""Ranking cuts by what they cost together, not only alone.

Single-cut scores (held-out cost per millisecond saved: KL of class scores or feature error) miss how cuts
interact: two cuts that each cost little can cost much together (adjacent blocks on Lite0 compound), most of all
where one changes what the other's refit was solved for.
`rerank_by_plan` walks the single-cut ranking lazily (CELF-style greedy): a candidate's cost is re-measured as the
rise in the plan's error when it joins the cuts accepted so far; if that re-measured cost per millisecond is no
longer the best, the candidate goes back in line and the next one is looked at. Only as many cuts as the target
needs (with some slack) are re-measured; the rest follow in their single-cut order.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable

from graphopt.methods.action import Action


def rerank_by_plan(ranked: list[Action], cost: dict[str, float], saved_ms: dict[str, float],
                   plan_error: Callable[[list[Action]], float], enough: Callable[[list[Action]], bool],
                   joins: Callable[[Action], bool] = lambda action: True) -> list[Action]:
    """`ranked` (best to lose first by single-cut `cost` per `saved_ms`) reordered by marginal plan error.

    `plan_error(actions)` is the error of the plan the actions make; `enough(accepted)` says when the accepted
    cuts are predicted to reach the target, after which the rest keep their order; cuts for which `joins` is
    false (dropped blocks, whose scores already come from training) keep their single-cut score and are never
    re-measured."""
    queue = [(cost[a.id] / max(saved_ms[a.id], 1e-3), index, a, True) for index, a in enumerate(ranked)]
    heapq.heapify(queue)
    accepted: list[Action] = []
    base = 0.0
    while queue and not enough(accepted):
        score, index, action, fresh = heapq.heappop(queue)
        if not fresh and joins(action):
            rise = max(plan_error([*_joined(accepted, joins), action]) - base, 0.0)
            heapq.heappush(queue, (rise / max(saved_ms[action.id], 1e-3), index, action, True))
            continue
        accepted.append(action)
        if joins(action):
            base = plan_error(_joined(accepted, joins))
        queue = [(s, i, a, False) for s, i, a, _ in queue]  # every cost is relative to the plan: stale now
        heapq.heapify(queue)
    rest = sorted(queue, key=lambda item: item[1])
    return accepted + [a for _, _, a, _ in rest]


def _joined(actions: list[Action], joins: Callable[[Action], bool]) -> list[Action]:
    return [a for a in actions if joins(a)]
