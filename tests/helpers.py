"""Small shared helpers for tests: running ONNX models on onnxruntime and building reference torch models."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import torch


def planner_for(path, bases: dict | None = None):
    """(model, shapes, Planner over its blocks and channel groups in L1 order, with `bases`) for an exported model."""
    from graphopt.blocks import find_blocks
    from graphopt.channels import find_channel_groups
    from graphopt.channels.importance import l1_order
    from graphopt.features import feature_tensors
    from graphopt.methods import Planner
    from graphopt.shapes import infer_shapes
    model = onnx.load(str(path))
    shapes = infer_shapes(model)
    channels = find_channel_groups(model, shapes, fixed=feature_tensors(model))
    return model, shapes, Planner(model, find_blocks(model, shapes), channels, l1_order(model, channels), bases)


# accelerate() keyword arguments that keep an end-to-end run on the tiny ResNet to a second or two
FAST_ACCELERATE = dict(score_iterations=2, recover_iterations=3, lr=1e-3, threads=1, work_threads=1, use_cache=False,
                       quiet=True)


def run_onnx(model: onnx.ModelProto, x: np.ndarray | torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = x.numpy() if isinstance(x, torch.Tensor) else x
    return session.run(None, {session.get_inputs()[0].name: feed})[0]


class _Zero(torch.nn.Module):
    """Stands in for a residual branch: the block then computes x + 0."""

    def __init__(self, returns_tuple: bool = False):
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, x, *args, **kwargs):
        zero = torch.zeros_like(x)
        return (zero, None) if self.returns_tuple else zero


def without_block(model: torch.nn.Module, block_id: str) -> torch.nn.Module:
    """The torch model with the block removed: the module replaced by Identity, or for a transformer's
    `layer[0]` / `layer[1]` residual, its attention / MLP branch replaced by zero."""
    reference = copy.deepcopy(model)
    if block_id.endswith("]"):
        layer, index = block_id[:-1].split("[")
        branch = "self_attention" if index == "0" else "mlp"
        reference.get_submodule(layer).set_submodule(branch, _Zero(returns_tuple=branch == "self_attention"))
    else:
        reference.set_submodule(block_id, torch.nn.Identity())
    return reference.eval()


def assert_close(actual: np.ndarray, expected: np.ndarray, tol: float = 1e-4) -> None:
    """Float32 agreement relative to the output's scale (deep nets with random weights have large logits)."""
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)
