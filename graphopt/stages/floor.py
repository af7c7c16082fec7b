"""The accuracy floor: graphopt never hands back, with exit 0, a model whose top-1 loss could exceed what the user
allows (--max-accuracy-drop, points).

The loss is estimated without labels on the held-out calibration images and augmented views of each
(graphopt/quality.py) and judged by its one-sided 95% upper bound, not its point value. On EfficientNet-Lite0 with
labelled ImageNet photos (docs/studies/floor_lite0.md) that estimate ranked seven models' labelled losses with
Spearman 0.83 and missed them by 0.38 points on average (Lite2, five models: 0.80 and 0.37); counting flips would
have failed INT8 alone (2.6% of predictions flip, 0.1 points lost).
"""
from __future__ import annotations

import numpy as np
import onnx

from graphopt.errors import AccuracyFloorMissed
from graphopt.frontier import INT8_ALONE, ORIGINAL, RESULT, Point, best_inside, plan_points
from graphopt.quality import DropEstimate, expected_drop, labelled_drop
from graphopt.settings import KL_VIEWS, USEFUL_RECOVERY_STEPS
from graphopt.stages.giveback import give_back
from graphopt.stages.report import recovery_steps, under_recovered
from graphopt.stages.state import Outcome, Run
from graphopt.verify import class_scores_of


def check_floor(run: Run, outcome: Outcome, int8_ratio: float | None, errors: dict[str, float] | None = None,
                target: float | None = None) -> tuple[dict, list[Point], Outcome]:
    """The report's `quality` (the floor and the loss of what is handed back), the frontier of what was measured,
    and the outcome to hand back: `outcome`, or, when it is over the floor, the recovered model with its lossiest
    cuts given back (stages/giveback.py, ordered by `errors`) if one is inside the floor and meets `target`.
    Raises AccuracyFloorMissed when none is, with the frontier and the fastest model inside the floor (a given-back
    model or INT8 alone) as `best`. A model without class scores is not judged (said so)."""
    floor, losses = run.settings.max_accuracy_drop, Losses(run)
    int8 = run.int8 is not None and outcome.model is not run.int8
    estimate, *others = losses([outcome.model, *([run.int8] if int8 else [])])
    record = {"floor_points": floor, "estimate": None if estimate is None else estimate.to_dict(),
              "judged_on": _judged_on(run), "judged": floor is not None and estimate is not None,
              "met": None if floor is None or estimate is None else estimate.within(floor), "given_back": []}
    if estimate is None:
        record["note"] = "the model's first output is not class scores: top-1 loss cannot be estimated"
    points = _frontier(run, outcome, estimate, int8_ratio, others[0] if others else None)
    if not record["judged"] or record["met"]:
        return record, points, outcome
    points[-1].chosen = False  # not handed back: over the floor
    # with --drop or --blocks the user named the cuts: none is given back
    returned = [] if target is None else give_back(run, outcome, errors or {}, floor, target,
                                                   lambda model: losses([model])[0])
    points += [trial.point for trial in returned]
    kept = {id(trial.point): trial.outcome.model for trial in returned}
    landed = next((trial for trial in returned if trial.point.inside(floor) and trial.met), None)
    if landed is not None:
        landed.point.chosen = True
        given = [a.id for a in outcome.selection.actions if a not in landed.outcome.selection.actions]
        return {**record, "estimate": landed.point.estimate.to_dict(), "met": True, "given_back": given,
                "over_floor_before": estimate.to_dict()}, points, landed.outcome
    best = best_inside(points, floor)
    if best is not None and best.model == INT8_ALONE:
        kept[id(best)] = run.int8
    alternative = "" if best is None else (f"; {best.model} (ratio {best.ratio:.3f}) loses {best.estimate.points:.2f} "
                                           f"(upper bound {best.estimate.upper:.2f}), inside the floor: --keep-best "
                                           f"writes it")
    raise AccuracyFloorMissed(
        f"the model that meets the goal (measured ratio {outcome.latency.ratio:.3f}) loses "
        f"{'' if estimate.labelled else 'an estimated '}{estimate.points:.2f} points of top-1 (95% upper bound "
        f"{estimate.upper:.2f}, {estimate.images} {record['judged_on']}), over --max-accuracy-drop {floor:g}"
        f"{_given_back(returned)}{alternative}{_under_recovered(outcome)}; ask for less speed, give more calibration "
        f"images (or --eval images to judge on), or pass --max-accuracy-drop none to accept it", points,
        best=None if best is None else kept.get(id(best)), best_point=best)


def _given_back(returned: list) -> str:
    if not returned:
        return ""
    last = returned[-1].point
    return (f"; with {len(returned)} cut(s) given back after recovery, {last.ratio:.3f} and "
            f"{last.estimate.points:.2f} points (bound {last.estimate.upper:.2f})" if last.estimate else "")


def _frontier(run: Run, outcome: Outcome, estimate: DropEstimate | None, int8_ratio: float | None,
              int8: DropEstimate | None) -> list[Point]:
    """The original, INT8 alone (when the output is INT8), each plan selection timed, and the outcome, last and
    chosen."""
    points = [Point(ORIGINAL, 1.0, DropEstimate(0.0, 0.0, 1.0, len(run.held), 0))]
    if outcome.model is run.int8:
        return [*points, Point(INT8_ALONE, outcome.latency.ratio, estimate, chosen=True)]
    if run.int8 is not None:
        points.append(Point(INT8_ALONE, int8_ratio, int8))
    return [*points, *plan_points(outcome.selection.attempts),
            Point(RESULT, outcome.latency.ratio, estimate, [a.id for a in outcome.selection.actions], chosen=True)]


def _under_recovered(outcome: Outcome) -> str:
    steps = recovery_steps(outcome)
    if steps is None or steps >= USEFUL_RECOVERY_STEPS:
        return ""
    return f"; {under_recovered(outcome)}"


def _judged_on(run: Run) -> str:
    settings = run.settings
    if settings.eval_images is None:
        return "held-out calibration images (with augmented views)"
    return f"--eval images in {settings.eval_images}"


class Losses:
    """Each model's top-1 loss against the original: on the --eval images when given (measured where they are
    labelled), else estimated on the held-out calibration images and their augmented views. The original's class
    scores (and the views) are computed once per run, however many models are judged (the result, INT8 alone, each
    model with cuts given back)."""

    def __init__(self, run: Run):
        self.run = run
        self._views = None
        self._reference: tuple | None = None  # the original's class scores (None: not class scores), the labels

    def __call__(self, models: list[onnx.ModelProto]) -> list[DropEstimate | None]:
        with self.run.stages("quality"):
            return self._on_eval(models) if self.run.settings.eval_images else self._on_held(models)

    def _on_held(self, models: list[onnx.ModelProto]) -> list[DropEstimate | None]:
        run, settings = self.run, self.run.settings
        if self._views is None:
            self._views = run.held.with_views(KL_VIEWS, settings.seed)
        groups = np.arange(len(self._views)) % len(run.held)
        losses = []
        for model in models:
            ours = class_scores_of(model, self._views, settings.work_threads)
            if ours is not None and self._reference is None:
                self._reference = (class_scores_of(run.original, self._views, settings.work_threads,
                                                   model.graph.output[0].name), None)
            losses.append(None if ours is None else
                          expected_drop(self._reference[0].numpy(), ours.numpy(), groups, settings.seed))
        return losses

    def _on_eval(self, models: list[onnx.ModelProto]) -> list[DropEstimate | None]:
        from graphopt.evaluate import evaluate
        run, settings = self.run, self.run.settings
        first = self._reference is None
        result = evaluate([*([run.original] if first else []), *models], settings.eval_images,
                          labels=settings.eval_labels, classes=settings.eval_classes, preprocess=settings.preprocess,
                          threads=settings.work_threads, progress=not run.quiet, keep_scores=True)
        scores = list(result.scores)
        if first:
            self._reference = (scores.pop(0), result.truth)
        original, truth = self._reference
        if truth is not None:
            return [labelled_drop(original, other, truth, settings.seed) for other in scores]
        return [expected_drop(original, other, seed=settings.seed) for other in scores]
