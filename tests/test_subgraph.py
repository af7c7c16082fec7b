"""The part of a model after a cut (graphopt/subgraph.py suffix), which recovery trains: a classifier that
reshapes by the input's batch size (`x.view(inputs.size(0), -1)`, as EfficientNet does) must not tie it to the
graph input, or every step trains and runs the whole network (measured on Lite0: 1.35 s a step from the input,
0.50 s from the cut)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from graphopt.subgraph import suffix, with_outputs
from tests import zoo
from tests.helpers import run_onnx


class _ViewHead(zoo.TinyResNet):
    """The tiny ResNet with the head EfficientNet has: flatten by the input's batch size; `index` is the input
    dimension read (0: the batch, which a cut shares; 2: the height, which it does not)."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x):
        features = self.layer3(self.layer2(self.layer1(self.stem(x))))
        pooled = torch.nn.functional.adaptive_avg_pool2d(features, 1)
        rows = x.size(0) if self.index == 0 else pooled.shape[0] * (x.size(2) // 16)  # 16 px inputs: x 1
        return self.fc(pooled.view(rows, -1))


def _exported(index: int, folder) -> onnx.ModelProto:
    torch.manual_seed(0)
    return onnx.load(str(zoo.export(_ViewHead(index).eval(), torch.randn(2, 3, 16, 16), folder / f"v{index}.onnx",
                                    "torchscript")))


def _cut(model: onnx.ModelProto) -> str:
    """The output of layer2's last block (the input of layer3)."""
    return [n.output[0] for n in model.graph.node if n.op_type == "Relu" and "layer2.1" in n.name][-1]


def test_a_head_that_reads_the_batch_size_of_the_input_still_separates(tmp_path):
    model = _exported(0, tmp_path)
    assert any(n.op_type == "Shape" and n.input[0] == "input" for n in model.graph.node)
    part = suffix(model, _cut(model), ["logits"])
    assert part is not None and [i.name for i in part.graph.input] == [_cut(model)]
    assert not any("input" in n.input for n in part.graph.node)
    x = torch.randn(3, 3, 16, 16).numpy()
    session = ort.InferenceSession(with_outputs(model, [_cut(model)]).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    logits, cut_value = session.run(None, {"input": x})
    np.testing.assert_allclose(run_onnx(part, cut_value), logits, rtol=1e-5, atol=1e-5)
    assert any(n.op_type == "Shape" and n.input[0] == "input" for n in model.graph.node), "the model is unchanged"


def test_a_head_that_reads_another_input_dimension_does_not_separate(tmp_path):
    model = _exported(2, tmp_path)
    if not any(n.op_type == "Shape" and n.input[0] == "input" for n in model.graph.node):
        pytest.skip("the exporter folded the height to a constant: nothing reads the input after the cut")
    assert suffix(model, _cut(model), ["logits"]) is None
