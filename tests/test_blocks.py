"""Block discovery on real exporter output, and the dropped model against PyTorch with the module removed."""
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from graphopt.blocks import find_blocks
from graphopt.passes import drop_blocks
from tests import zoo
from tests.helpers import assert_close, run_onnx, without_block

CASES = [(name, exporter) for name in zoo.ARCHITECTURES for exporter in zoo.EXPORTERS]
DROPPING = [(name, exporter) for name, exporter in CASES if zoo.ARCHITECTURES[name][3]]


@pytest.mark.parametrize("name,exporter", CASES)
def test_block_counts_match_architecture(exported, name, exporter):
    blocks = find_blocks(exported(name, exporter))
    _, _, total, droppable = zoo.ARCHITECTURES[name]
    assert len(blocks) == total
    assert sum(b.droppable for b in blocks) == droppable
    assert len({b.id for b in blocks}) == total
    for block in blocks:
        assert block.nodes and block.params > 0 and 0 < block.macs_share < 1
        assert block.skip != block.output


@pytest.mark.parametrize("name,exporter", CASES)
def test_ids_are_module_paths(exported, name, exporter):
    """Both exporters name blocks after the torch module, so ids agree across exporters."""
    ids = [b.id for b in find_blocks(exported(name, exporter))]
    model = zoo.torch_model(name)
    for block_id in ids:
        model.get_submodule(block_id.split("[")[0])


@pytest.mark.parametrize("name,exporter", DROPPING)
def test_dropped_block_matches_pytorch_without_it(exported, name, exporter):
    model = exported(name, exporter)
    droppable = [b for b in find_blocks(model) if b.droppable]
    x = zoo.example_input(name)
    for block in {droppable[0].id: droppable[0], droppable[-1].id: droppable[-1]}.values():
        dropped = drop_blocks(model, [block.id])
        onnx.checker.check_model(dropped, full_check=True)
        with torch.no_grad():
            expected = without_block(zoo.torch_model(name), block.id)(x).numpy()
        assert_close(run_onnx(dropped, x), expected)


def test_dropping_several_consecutive_blocks(exported):
    """MobileNetV2 features.5 and features.6 are back to back: the second's skip is the first's output."""
    model = exported("mobilenet_v2", "torchscript")
    dropped = drop_blocks(model, ["features.5", "features.6"])
    reference = without_block(without_block(zoo.torch_model("mobilenet_v2"), "features.5"), "features.6")
    x = zoo.example_input("mobilenet_v2")
    with torch.no_grad():
        assert_close(run_onnx(dropped, x), reference(x).numpy())
    assert [b.id for b in find_blocks(dropped)] == [b.id for b in find_blocks(model)
                                                     if b.id not in ("features.5", "features.6")]


class _NotResidual(torch.nn.Module):
    """Adds that are not residual joins: biases, a tanh-GELU's polynomial, and DenseNet-style concatenation."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.dense = torch.nn.Conv2d(11, 4, 3, padding=1)
        self.gelu = torch.nn.GELU(approximate="tanh")
        self.fc = torch.nn.Linear(11, 10)

    def forward(self, x):
        y = self.gelu(self.conv(x) + 1.0)
        y = torch.cat([x, y], 1)
        y = torch.cat([x, self.dense(y)], 1)
        y = torch.cat([y, x * 2.0], 1).mean((2, 3))
        return self.fc(torch.cat([y, y[:, :1] + 0.5], 1))


def test_non_residual_adds_are_not_blocks(tmp_path):
    path = tmp_path / "plain.onnx"
    zoo.export(_NotResidual().eval(), torch.randn(1, 3, 16, 16), path, "torchscript")
    model = onnx.load(str(path))
    assert {n.op_type for n in model.graph.node} >= {"Add", "Concat", "Tanh"}
    assert find_blocks(model) == []


def test_batchnorm_spelled_as_mul_add_is_not_a_block():
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4, 1, 1], np.eye(4).ravel().tolist())
    scale = helper.make_tensor("s", TensorProto.FLOAT, [1, 4, 1, 1], [2.0] * 4)
    shift = helper.make_tensor("b", TensorProto.FLOAT, [1, 4, 1, 1], [0.5] * 4)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "s"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [weight, scale, shift])
    assert find_blocks(helper.make_model(graph)) == []
