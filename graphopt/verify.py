"""Checks on what accelerate hands back: the ONNX model is valid, onnxruntime computes what the trained PyTorch
model computes, and how often its top-1 prediction agrees with the original's on held-out images."""
from __future__ import annotations

import numpy as np
import onnx
import torch

from graphopt.errors import GraphoptError



def check_valid(model: onnx.ModelProto) -> None:
    """onnx.checker with full_check (shape inference included); a failure is graphopt's bug, said so."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise GraphoptError(f"internal error: the accelerated model fails onnx.checker: {exc}") from None


def check_recovered(original: onnx.ModelProto, recovered, images: torch.Tensor, threads: int | None) -> None:
    """Refuse a written-back model that differs from the PyTorch student it was trained as."""
    from graphopt.calibration.bridge.teacher import Teacher
    model, student = recovered.model, recovered.student
    check_valid(model)
    outputs = [o.name for o in model.graph.output]
    ours = Teacher(model, outputs, threads)(images)
    reference = Teacher(original, [student.cut], threads)(images)
    with torch.no_grad():
        trained = student.outputs(reference[student.cut])
    for name in outputs:
        expected = trained[name].cpu().numpy()
        scale = max(1.0, float(np.abs(expected).max()))
        if not np.allclose(ours[name].numpy(), expected, rtol=1e-3, atol=1e-3 * scale):
            raise GraphoptError(f"internal error: onnxruntime's '{name}' differs from the recovered PyTorch model")


def agreement(original: onnx.ModelProto, model: onnx.ModelProto, images: torch.Tensor,
              threads: int | None) -> float | None:
    """Share of `images` on which `model`'s top-1 class equals the original's, both run in onnxruntime (None when
    the first output is not a vector of class scores)."""
    scores = _class_scores(original, model, images, threads)
    if scores is None:
        return None
    theirs, ours = scores
    return float((ours.argmax(1) == theirs.argmax(1)).float().mean())


def _class_scores(original: onnx.ModelProto, model: onnx.ModelProto, images: torch.Tensor,
                  threads: int | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first output of the original and of `model` on `images`, run in onnxruntime; None (the original not
    run) when `model`'s first output is not a vector of class scores."""
    ours = class_scores_of(model, images, threads)
    if ours is None:
        return None
    return class_scores_of(original, images, threads, model.graph.output[0].name), ours


def class_scores_of(model: onnx.ModelProto, images: torch.Tensor, threads: int | None,
                    output: str | None = None) -> torch.Tensor | None:
    """`model`'s first output (or `output`) on `images`, run in onnxruntime; None when it is not a vector of class
    scores per image."""
    from graphopt.calibration.bridge.teacher import Teacher
    name = output or model.graph.output[0].name
    scores = Teacher(model, [name], threads)(images)[name]
    return scores if scores.dim() == 2 and scores.shape[1] >= 2 else None
