"""How much channel and basis cuts cost the features: the counterpart of block recoverability for the filters
and basis methods (the same held-out relative feature error, so all cuts rank together). Channel cuts are scored
after the closed-form refit of their consumers, which is how they will be recovered."""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from graphopt.calibration.mimic import feature_error
from graphopt.calibration.refit import Consumer, refit
from graphopt.calibration.teacher import Teacher
from graphopt.methods.action import Action
from graphopt.methods.plan import Planner


class PlanError:
    """Held-out relative feature error of plans of channel and basis cuts, consumers refit."""

    def __init__(self, planner: Planner, consumers: dict[str, Consumer], features: list[str], held: torch.Tensor,
                 threads: int | None = None):
        self.planner, self.consumers, self.features, self.held, self.threads = (planner, consumers, features, held,
                                                                                threads)
        reference = Teacher(planner.model, features, threads)(held)
        self.target = [reference[f] for f in features]

    def __call__(self, actions: list[Action]) -> float:
        if not actions:
            return 0.0
        model = self.planner.apply(actions, refit=refitter(self.planner, self.consumers))
        values = Teacher(model, self.features, self.threads)(self.held)
        return float(feature_error([values[f] for f in self.features], self.target))


def score_cuts(error: PlanError, actions: list[Action], quiet: bool = False) -> dict[str, dict]:
    """{action id: {"error"}}: held-out feature error of each cut alone, channel cuts after the refit of their
    consumers (how they will be recovered). Each cut is evaluated once: on Lite0 the scoring of every cut takes
    a fifth of the time budget, and what it does not take goes to recovery."""
    return {action.id: {"error": error([action])} for action in tqdm(actions, desc="cuts", disable=quiet)}


def refitter(planner: Planner, consumers: dict[str, Consumer]) -> Callable:
    """The refit `Planner.apply` runs on a pruned model: its consumers re-solved from the channels kept."""
    return lambda pruned, keep: refit(pruned, planner.channels, keep, consumers)
