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
from graphopt.quality import DropEstimate
from graphopt.settings import KL_VIEWS
from graphopt.stages.state import Outcome, Run
from graphopt.target import TargetCheck
from graphopt.verify import accuracy_drop


def check_floor(run: Run, outcome: Outcome, int8_ratio: float | None) -> dict:
    """The report's `quality`: the floor and the outcome's estimated loss. Raises AccuracyFloorMissed, with the
    original, INT8 alone (when the output is INT8 and something was cut) and the outcome side by side, when the
    estimate's upper bound is over the floor. A model without class scores is not judged (said so)."""
    floor = run.settings.max_accuracy_drop
    estimate = _estimate(run, outcome.model)
    record = {"floor_points": floor, "estimate": None if estimate is None else estimate.to_dict(),
              "judged": floor is not None and estimate is not None,
              "met": None if floor is None or estimate is None else estimate.within(floor)}
    if estimate is None:
        record["note"] = "the model's first output is not class scores: top-1 loss cannot be estimated"
    if not record["judged"] or record["met"]:
        return record
    ratio = _ratio(outcome)
    frontier = [{"model": "original", "ratio": 1.0, "estimate": DropEstimate(0.0, 0.0, 1.0, 0, 0).to_dict()},
                {"model": "graphopt", "ratio": ratio, "estimate": estimate.to_dict()}]
    alternative = ""
    if run.int8 is not None and outcome.model is not run.int8:
        int8 = _estimate(run, run.int8)
        frontier.insert(1, {"model": "int8 alone", "ratio": int8_ratio, "estimate": int8.to_dict()})
        alternative = (f"; INT8 alone (ratio {int8_ratio:.3f}) loses an estimated {int8.points:.2f} "
                       f"(upper bound {int8.upper:.2f})")
    raise AccuracyFloorMissed(
        f"the model that meets the goal (measured ratio {ratio:.3f}) loses an estimated {estimate.points:.2f} points "
        f"of top-1 (95% upper bound {estimate.upper:.2f}, {estimate.images} held-out images), over "
        f"--max-accuracy-drop {floor:g}{alternative}; ask for less speed, give more calibration images, or pass "
        f"--max-accuracy-drop none to accept it", frontier)


def _estimate(run: Run, model) -> DropEstimate | None:
    with run.stages("quality"):
        return accuracy_drop(run.original, model, run.held.with_views(KL_VIEWS, run.settings.seed), len(run.held),
                             run.settings.threads, run.settings.seed)


def _ratio(outcome: Outcome) -> float:
    final = outcome.final
    return final.final.ratio if isinstance(final, TargetCheck) else final.ratio
