"""How much each channel cut costs the features, after the closed-form refit of its consumers: the filters
method's counterpart of block recoverability (same held-out relative feature error, so the two rank together)."""
from __future__ import annotations

import onnx
import torch
from tqdm.auto import tqdm

from graphopt.calibration.mimic import feature_error
from graphopt.calibration.refit import Consumer, refit
from graphopt.calibration.teacher import Teacher
from graphopt.methods.action import Action
from graphopt.methods.plan import Planner


def score_filters(planner: Planner, actions: list[Action], consumers: dict[str, Consumer], features: list[str],
                  held: torch.Tensor, threads: int | None = None, quiet: bool = False) -> dict[str, dict]:
    """{action id: {"error_pruned", "error"}}: held-out feature error of the cut alone, and after the refit."""
    reference = Teacher(planner.model, features, threads)(held)
    target = [reference[f] for f in features]
    scores = {}
    for action in tqdm(actions, desc="channel cuts", disable=quiet):
        pruned = planner.apply([action])
        refitted = refit(pruned, planner.channels, planner.keep([action]), consumers)
        scores[action.id] = {"error_pruned": _error(pruned, features, held, target, threads),
                             "error": _error(refitted, features, held, target, threads)}
    return scores


def _error(model: onnx.ModelProto, features: list[str], held: torch.Tensor, target: list[torch.Tensor],
           threads: int | None) -> float:
    values = Teacher(model, features, threads)(held)
    return float(feature_error([values[f] for f in features], target))
