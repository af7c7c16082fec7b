"""The trainable student: the part of a (pruned) model after a cut, converted to PyTorch.

Everything before the cut is the same in teacher and student, so the teacher computes it once and only the part
after it is trained. Where nothing separates the network there (a later node also reads the graph input), the
cut falls back to the graph input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch

from graphopt.calibration.bridge.onnx_torch import TorchGraph, to_torch
from graphopt.folding import fold_constants
from graphopt.passes import apply_passes
from graphopt.passes.insert_adaptors import InsertAdaptors
from graphopt.runtime.inputs import runtime_inputs
from graphopt.subgraph import suffix, with_outputs

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
               onnx.TensorProto.DOUBLE}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Student:
    graph: TorchGraph
    cut: str  # the tensor the student starts from (a block's skip, or the graph input)
    features: list[str]
    adaptors: list[str]  # initializer names of temporary adaptors, if any
    onnx_model: onnx.ModelProto  # the ONNX model that was converted

    def outputs(self, inputs: torch.Tensor, module: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Every tensor the student returns, by ONNX name, for `inputs` (values of the cut tensor); `module` runs
        the graph module in a wrapper (DistributedDataParallel)."""
        inputs = inputs.to(device())
        if inputs.dim() == 4:  # the layout the student's convolutions run fastest in (see build_student)
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return dict(zip(self.graph.outputs, (module or self.graph.module)(inputs)))

    def forward(self, inputs: torch.Tensor, module: torch.nn.Module | None = None) -> list[torch.Tensor]:
        """The feature tensors, in the order of `features`."""
        outputs = self.outputs(inputs, module)
        return [outputs[name] for name in self.features]

    def parameters(self, initializers: set[str]) -> list[torch.nn.Parameter]:
        """The trainable parameters holding the given initializers; everything else is frozen."""
        module = self.graph.module
        chosen = []
        for qualified, name in self.graph.sources.items():
            try:
                param = module.get_parameter(qualified)
            except AttributeError:
                continue  # a buffer: not a weight
            param.requires_grad_(name in initializers)
            if name in initializers:
                chosen.append(param)
        return chosen

    def feature_weights(self, tensors: list[str] | None = None) -> set[str]:
        """Initializers that the feature tensors (or the given `tensors`) depend on, so a classifier head after them
        stays frozen."""
        graph = self.onnx_model.graph
        producer = {out: node for node in graph.node for out in node.output}
        initializers = {t.name for t in graph.initializer}
        seen, stack, used = set(), list(self.features if tensors is None else tensors), set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in initializers:
                used.add(name)
            elif name in producer:
                stack.extend(n for n in producer[name].input if n)
        return used


def build_student(model: onnx.ModelProto, cut: str, features: list[str], extra_outputs: tuple[str, ...] | list[str] = (),
                  adaptors_at: str | None = None) -> Student:
    """Convert the part of `model` after `cut` that computes `features` (and `extra_outputs`)."""
    outputs = list(dict.fromkeys([*features, *extra_outputs]))
    part = suffix(model, cut, outputs)
    if part is None:
        cut = runtime_inputs(model)[0].name
        part = with_outputs(model, outputs)
    names: list[str] = []
    if adaptors_at is not None:
        inserter = InsertAdaptors(adaptors_at)
        part, _ = apply_passes(part, [inserter])
        names = inserter.weights
    folded = _folded(part)
    graph = to_torch(folded)
    own = {tensor.name for tensor in part.graph.initializer}
    graph.sources = {qualified: name for qualified, name in graph.sources.items() if name in own}
    for param in graph.module.parameters():
        param.requires_grad_(False)  # `Student.parameters` chooses what trains
    # channels-last: oneDNN's convolutions, forward and backward, skip their layout conversions (Lite0 after a
    # 3-block drop, batch 16, 1 thread: 0.45 s a step in NCHW, 0.38 s channels-last; bfloat16 autocast was slower)
    graph.module.to(device(), memory_format=torch.channels_last)
    return Student(graph, cut, list(features), names, folded)


def _folded(part: onnx.ModelProto) -> onnx.ModelProto:
    """`part` with its constant-only subgraphs computed once (graphopt/folding.py), when every weight survives:
    exporters compute TF-style "same" padding from constants through a dozen nodes per convolution (Lite0's part
    after a cut: 375 nodes, 183 of them Constant), each a Python-level module call on every training step. Folding
    that merged a weight into a new tensor would leave it untrainable, so then the part is converted as it is."""
    folded = fold_constants(part)
    kept = {tensor.name for tensor in folded.graph.initializer}
    weights = {t.name for t in part.graph.initializer
               if t.data_type in FLOAT_TYPES and int(np.prod(t.dims, dtype=np.int64)) > 1}
    return folded if weights <= kept else part
