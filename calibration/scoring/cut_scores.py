"""What cuts cost the network, measured without training: the held-out relative feature error (the counterpart of
block recoverability for the filters and basis methods, so all cuts rank together) or, for models with class
scores, the KL divergence of the cut model's class scores from the original's. Channel cuts are scored after the
closed-form refit of their consumers, which is how they will be recovered."""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from graphopt.calibration.recovery.mimic import feature_error
from graphopt.calibration.scoring.refit import Consumer, refit
from graphopt.calibration.bridge.teacher import Teacher
from graphopt.methods.action import Action
from graphopt.methods.plan import Planner


class PlanError:
    """What a plan of cuts (consumers refit) costs on held-out images: the relative error of `features`, or with
    `logits` (a graph output of class scores) the mean KL divergence of the plan's class distribution from the
    original's, which weighs what the predictions depend on rather than every feature channel alike."""

    def __init__(self, planner: Planner, consumers: dict[str, Consumer], features: list[str], held: torch.Tensor,
                 threads: int | None = None, logits: str | None = None):
        self.planner, self.consumers, self.held, self.threads = planner, consumers, held, threads
        self.tensors, self.logits = ([logits] if logits else features), logits
        reference = Teacher(planner.model, self.tensors, threads)(held)
        self.target = [reference[name] for name in self.tensors]

    def __call__(self, actions: list[Action]) -> float:
        if not actions:
            return 0.0
        model = self.planner.apply(actions, refit=refitter(self.planner, self.consumers))
        values = Teacher(model, self.tensors, self.threads)(self.held)
        if self.logits:
            return kl_divergence(values[self.logits], self.target[0])
        return float(feature_error([values[name] for name in self.tensors], self.target))


def kl_divergence(scores: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean KL(reference || scores) of the softmax distributions over classes, per image."""
    reference, scores = reference.double().log_softmax(1), scores.double().log_softmax(1)
    return float((reference.exp() * (reference - scores)).sum(1).mean())


def score_cuts(error: PlanError, actions: list[Action], quiet: bool = False,
               stop: Callable[[], bool] | None = None, cluster=None) -> dict[str, dict]:
    """{action id: {"error"}}: what each cut alone costs on held-out images, channel cuts after the refit of their
    consumers (how they will be recovered), in the order given. Each cut is evaluated once: on Lite0 the scoring of
    every cut takes a fifth of the time budget, and what it does not take goes to recovery; `stop()`, asked before
    each cut after the first (on a Ray `cluster`, before each wave of as many cuts as it has CPUs), ends scoring
    early (the rest are not scored)."""
    scores = {}
    wave = 1 if cluster is None else cluster.cpus
    with tqdm(total=len(actions), desc="cuts", disable=quiet) as bar:
        for first in range(0, len(actions), wave):
            if scores and stop is not None and stop():
                break
            chunk = actions[first:first + wave]
            errors = [error([a]) for a in chunk] if cluster is None else cluster.map(_score_alone, error, chunk)
            scores.update({a.id: {"error": e} for a, e in zip(chunk, errors)})
            bar.update(len(chunk))
    return scores


def _score_alone(error: PlanError, action: Action) -> float:
    """One cut's score, as a Ray task (the PlanError comes from the object store)."""
    return error([action])


def refitter(planner: Planner, consumers: dict[str, Consumer]) -> Callable:
    """The refit `Planner.apply` runs on a pruned model: its consumers re-solved from the channels kept."""
    return lambda pruned, keep: refit(pruned, planner.channels, keep, consumers)
