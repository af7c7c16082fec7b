"""How much each channel or basis cut costs the features: the counterpart of block recoverability for the filters
and basis methods (the same held-out relative feature error, so all cuts rank together). Channel cuts are scored
after the closed-form refit of their consumers, which is how they will be recovered."""
from __future__ import annotations

import onnx
import torch
from tqdm.auto import tqdm

from graphopt.calibration.mimic import feature_error
from graphopt.calibration.refit import Consumer, refit
from graphopt.calibration.teacher import Teacher
from graphopt.methods.action import Action
from graphopt.methods.plan import Planner


def score_cuts(planner: Planner, actions: list[Action], consumers: dict[str, Consumer], features: list[str],
               held: torch.Tensor, threads: int | None = None, quiet: bool = False) -> dict[str, dict]:
    """{action id: {"error_pruned", "error"}}: held-out feature error of the cut alone, and after the refit of
    its consumers (the same for basis cuts, which need none)."""
    reference = Teacher(planner.model, features, threads)(held)
    target = [reference[f] for f in features]
    scores = {}
    for action in tqdm(actions, desc="cuts", disable=quiet):
        alone = _error(planner.apply([action]), features, held, target, threads)
        refitted = alone if action.method != "filters" else _error(
            planner.apply([action], refit=refitter(planner, consumers)), features, held, target, threads)
        scores[action.id] = {"error_pruned": alone, "error": refitted}
    return scores


def refitter(planner: Planner, consumers: dict[str, Consumer]):
    """The refit `Planner.apply` runs on a pruned model: its consumers re-solved from the channels kept."""
    return lambda pruned, keep: refit(pruned, planner.channels, keep, consumers)


def _error(model: onnx.ModelProto, features: list[str], held: torch.Tensor, target: list[torch.Tensor],
           threads: int | None) -> float:
    values = Teacher(model, features, threads)(held)
    return float(feature_error([values[f] for f in features], target))
