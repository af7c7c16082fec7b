"""The trainable student: the part of a (pruned) model after a cut, converted to PyTorch.

Everything before the cut is the same in teacher and student, so the teacher computes it once and only the part
after it is trained. Where nothing separates the network there (a later node also reads the graph input), the
cut falls back to the graph input.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx
import torch

from graphopt.calibration.bridge import TorchGraph, to_torch
from graphopt.passes import apply_passes
from graphopt.passes.insert_adaptors import InsertAdaptors
from graphopt.runtime.inputs import runtime_inputs
from graphopt.subgraph import suffix, with_outputs


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class Student:
    graph: TorchGraph
    cut: str  # the tensor the student starts from (a block's skip, or the graph input)
    features: list[str]
    adaptors: list[str]  # initializer names of temporary adaptors, if any
    onnx_model: onnx.ModelProto  # the ONNX model that was converted

    def outputs(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tensor the student returns, by ONNX name, for `inputs` (values of the cut tensor)."""
        return dict(zip(self.graph.outputs, self.graph.module(inputs.to(device()))))

    def forward(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """The feature tensors, in the order of `features`."""
        outputs = self.outputs(inputs)
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
    graph = to_torch(part)
    graph.module.to(device())
    return Student(graph, cut, list(features), names, part)
