"""First-order Taylor importance (Molchanov et al., CVPR 2019) on the calibration images, without labels.

Each prunable group gets a gate of ones; the loss is the cross-entropy of the gated network against the original's
own top-1 classes (the teacher's pseudo-labels: at the original the loss is small but its per-image gradient is
not zero, unlike a distillation loss). A channel's importance is the sum over images of the squared gradient of
the loss with respect to its gate: the first-order estimate of how much removing it changes the loss.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
from torch.nn import functional as F

from graphopt.calibration.scoring.gates import gated_graph
from graphopt.channels import ChannelAnalysis
from graphopt.errors import GraphoptError


def taylor_order(model: onnx.ModelProto, analysis: ChannelAnalysis, logits: str | None,
                 images: torch.Tensor) -> dict[str, np.ndarray]:
    """For each prunable group, its channel indices from most to least important by first-order Taylor."""
    if logits is None:
        raise GraphoptError("Taylor importance needs a model whose first output is class scores")
    masks = {g.id: torch.ones(g.size, requires_grad=True) for g in analysis.prunable}
    graph = gated_graph(model, analysis, [], masks.__getitem__)
    index = graph.outputs.index(logits)
    scores = {name: torch.zeros(len(mask)) for name, mask in masks.items()}
    for image in images:  # one image at a time: the squares of per-image gradients add, they do not cancel
        class_scores = graph.module(image[None])[index]
        loss = F.cross_entropy(class_scores, class_scores.detach().argmax(1))
        grads = torch.autograd.grad(loss, list(masks.values()), allow_unused=True)
        for name, grad in zip(masks, grads):
            if grad is not None:
                scores[name] += grad.detach() ** 2
    return {name: np.argsort(-score.numpy(), kind="stable") for name, score in scores.items()}
