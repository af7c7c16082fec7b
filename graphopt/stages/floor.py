"""The accuracy floor: graphopt never hands back, with exit 0, a model whose top-1 loss could exceed what the user
allows (--max-accuracy-drop, points).

The loss is estimated without labels on the held-out calibration images and augmented views of each
(graphopt/quality.py) and judged by its one-sided 95% upper bound, not its point value. On EfficientNet-Lite0 with
labelled ImageNet photos (docs/studies/floor_lite0.md) that estimate ranked seven models' labelled losses with
Spearman 0.83 and missed them by 0.38 points on average (Lite2, five models: 0.80 and 0.37); counting flips would
have failed INT8 alone (2.6% of predictions flip, 0.1 points lost).
"""
from __future__ import annotations

from graphopt.errors import AccuracyFloorMissed
from graphopt.frontier import INT8_ALONE, ORIGINAL, RESULT, Point, best_inside, plan_points
from graphopt.quality import DropEstimate
from graphopt.settings import KL_VIEWS
from graphopt.stages.state import Outcome, Run
from graphopt.target import TargetCheck
from graphopt.verify import accuracy_drop


def check_floor(run: Run, outcome: Outcome, int8_ratio: float | None) -> tuple[dict, list[Point]]:
    """The report's `quality` (the floor and the outcome's estimated loss) and the frontier of what was measured.
    Raises AccuracyFloorMissed, with the frontier and INT8 alone as the best model inside the floor when it is,
    when the estimate's upper bound is over the floor. A model without class scores is not judged (said so)."""
    floor = run.settings.max_accuracy_drop
    estimate = _estimate(run, outcome.model)
    record = {"floor_points": floor, "estimate": None if estimate is None else estimate.to_dict(),
              "judged": floor is not None and estimate is not None,
              "met": None if floor is None or estimate is None else estimate.within(floor)}
    if estimate is None:
        record["note"] = "the model's first output is not class scores: top-1 loss cannot be estimated"
    points = _frontier(run, outcome, estimate, int8_ratio)
    if not record["judged"] or record["met"]:
        return record, points
    points[-1].chosen = False  # nothing is handed back, unless --keep-best hands back `best`
    best = best_inside(points, floor)
    alternative = "" if best is None else (f"; {best.model} (ratio {best.ratio:.3f}) loses an estimated "
                                           f"{best.estimate.points:.2f} (upper bound {best.estimate.upper:.2f}), "
                                           f"inside the floor: --keep-best writes it")
    raise AccuracyFloorMissed(
        f"the model that meets the goal (measured ratio {_ratio(outcome):.3f}) loses an estimated "
        f"{estimate.points:.2f} points of top-1 (95% upper bound {estimate.upper:.2f}, {estimate.images} held-out "
        f"images), over --max-accuracy-drop {floor:g}{alternative}; ask for less speed, give more calibration "
        f"images, or pass --max-accuracy-drop none to accept it", points,
        best=run.int8 if best is not None and best.model == INT8_ALONE else None)


def _frontier(run: Run, outcome: Outcome, estimate: DropEstimate | None, int8_ratio: float | None) -> list[Point]:
    """The original, INT8 alone (when the output is INT8), each plan selection timed, and the outcome, last and
    chosen."""
    points = [Point(ORIGINAL, 1.0, DropEstimate(0.0, 0.0, 1.0, len(run.held), 0))]
    if outcome.model is run.int8:
        return [*points, Point(INT8_ALONE, _ratio(outcome), estimate, chosen=True)]
    if run.int8 is not None:
        points.append(Point(INT8_ALONE, int8_ratio, _estimate(run, run.int8)))
    return [*points, *plan_points(outcome.selection.attempts),
            Point(RESULT, _ratio(outcome), estimate, [a.id for a in outcome.selection.actions], chosen=True)]


def _estimate(run: Run, model) -> DropEstimate | None:
    with run.stages("quality"):
        return accuracy_drop(run.original, model, run.held.with_views(KL_VIEWS, run.settings.seed), len(run.held),
                             run.settings.threads, run.settings.seed)


def _ratio(outcome: Outcome) -> float:
    final = outcome.final
    return final.final.ratio if isinstance(final, TargetCheck) else final.ratio
