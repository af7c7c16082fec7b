"""Per-channel gates on a PyTorch copy of the original: the producers of each prunable channel group see their
output channels scaled by one gate vector per group (1 = the original), so a loss can say which channels matter.

Gating a producer's weights and bias scales its output channels; a group with several producers (a residual
stage, an SE gate beside its expansion) gets the same gate on each, which is the same as gating the tensor they
make together. Used by first-order Taylor importance and by Dagger's learned gates.
"""
from __future__ import annotations

from collections.abc import Callable

import onnx
import torch
from torch.nn.utils import parametrize

from graphopt.calibration.bridge.onnx_torch import TorchGraph, to_torch
from graphopt.channels import ChannelAnalysis


class _Gate(torch.nn.Module):
    """weight * gate along `axis`, the gate read fresh from `source` on every forward."""

    def __init__(self, source: Callable[[], torch.Tensor], axis: int):
        super().__init__()
        self.source, self.axis = source, axis

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        gate = self.source()
        shape = [1] * weight.dim()
        shape[self.axis] = -1
        return weight * gate.view(shape)


def gated_graph(model: onnx.ModelProto, analysis: ChannelAnalysis, outputs: list[str],
                gates: Callable[[str], torch.Tensor]) -> TorchGraph:
    """`model` in PyTorch (eval mode, every parameter frozen) returning `outputs`, with each prunable group's
    producers scaled by `gates(group id)` (a vector of the group's size, recomputed on every forward)."""
    graph = to_torch(model, outputs)
    for param in graph.module.parameters():
        param.requires_grad_(False)
    by_initializer = {name: qualified for qualified, name in graph.sources.items()}
    nodes = {n.output[0]: n for n in model.graph.node if n.output}
    ids = {g.root: g.id for g in analysis.prunable}
    for edit in analysis.edits:
        group = ids.get(analysis.table.find(edit.layouts[0][0].group))
        qualified = by_initializer.get(nodes[edit.node].input[edit.input])
        if edit.kind != "out" or group is None or qualified is None:
            continue
        owner, _, attribute = qualified.rpartition(".")
        parametrize.register_parametrization(graph.module.get_submodule(owner), attribute,
                                             _Gate(lambda group=group: gates(group), edit.axis))
    return graph
