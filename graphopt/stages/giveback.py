"""Giving cuts back after recovery, when the recovered result is over the accuracy floor.

Why: the plan was chosen for latency and its loss is only known once it has been recovered; when that loss is
over the floor, the cheapest way to a model inside it is not a second recovery (minutes) but the recovered model
with its lossiest cut undone: the cut's original weights put back beside the recovered ones (seconds). Each such
model is measured like the result (estimated loss, latency against the original), and the run keeps the first
that is inside the floor and still meets the target; short of that, they are points on the frontier, and the
fastest inside the floor is what --keep-best writes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from graphopt.frontier import Point
from graphopt.methods import Action
from graphopt.quality import DropEstimate
from graphopt.runtime import Comparison
from graphopt.selection import Selection
from graphopt.stages.state import Outcome, Run, say
from graphopt.target import TargetCheck, confirm_target, last_measurement
from graphopt.verify import agreement, check_valid

# Cuts given back at most, one more each time (the lossiest left first), and the seconds a trial needs at least.
GIVE_BACK_TRIES = 3
TRIAL_SECONDS = 20.0
GIVEN_BACK = "graphopt, cuts given back"


@dataclass
class Returned:
    """A recovered model with cuts given back: its frontier point and, when it can be handed back, its outcome."""

    point: Point
    outcome: Outcome

    @property
    def met(self) -> bool:
        """Whether it meets the latency goal (no target: always)."""
        return self.outcome.met


def give_back(run: Run, outcome: Outcome, errors: dict[str, float], floor: float, target: float | None,
              loss: Callable[[onnx.ModelProto], DropEstimate | None]) -> list[Returned]:
    """Give back the plan's cuts one at a time, lossiest (by `errors`, each cut alone) first, into the recovered
    model, until one is inside `floor` (by `loss`), no cut would be left, or the time budget runs out."""
    if outcome.recovered is None or not errors:
        return []
    plan, returned = list(outcome.selection.actions), []
    while len(plan) > 1 and len(returned) < GIVE_BACK_TRIES and run.seconds_left() > TRIAL_SECONDS:
        back = max(plan, key=lambda action: errors.get(action.id, 0.0))
        plan = [action for action in plan if action is not back]
        say(run.quiet, f"over the floor: giving back {back.id} ({len(plan)} cuts left)")
        with run.stages("give back"):
            trial = _trial(run, outcome, plan, target, loss)
        returned.append(trial)
        if trial.point.inside(floor):
            break
    return returned


def _trial(run: Run, outcome: Outcome, plan: list[Action], target: float | None,
           loss: Callable[[onnx.ModelProto], DropEstimate | None]) -> Returned:
    model = restore(run, plan, outcome.recovered.model)
    estimate = loss(model)
    final: Comparison | TargetCheck = run.backend.compare(run.original, model) if target is None else \
        confirm_target(run.backend, run.original, model, target)
    ratio = last_measurement(final).ratio
    selection = Selection(plan, ratio, outcome.selection.attempts, outcome.selection.size, outcome.selection.ranked)
    agreed = agreement(run.original, model, run.held.tensors(), run.settings.work_threads)
    point = Point(GIVEN_BACK, ratio, estimate, [action.id for action in plan])
    return Returned(point, Outcome(model, selection, outcome.recovered, agreed, final))


def restore(run: Run, plan: list[Action], recovered: onnx.ModelProto) -> onnx.ModelProto:
    """The smaller `plan` applied to the original as recovery's was (consumers of pruned channels refit), its
    weights taken from the `recovered` model wherever it has them (same name, shape and type) and from the original
    where the given-back cuts were; quantized when the output is INT8. Checked by onnx.checker."""
    model = run.apply(plan, weights_from=recovered)
    if run.int8 is not None:
        from graphopt.calibration.quantize.static import quantize_int8
        model = quantize_int8(model, run.train)
    check_valid(model)
    return model
