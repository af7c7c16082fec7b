"""The DropBlocks pass: graph contract (names, dynamic dims, opset, metadata, checker) and old-style graphs."""
import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from graphopt.blocks import find_blocks
from graphopt.errors import GraphoptError
from graphopt.passes import DropBlocks, apply_passes, drop_blocks
from tests import zoo
from tests.helpers import assert_close, run_onnx, without_block


def test_drop_keeps_interface_and_metadata(exported):
    model = exported("resnet18", "dynamo")
    helper.set_model_props(model, {"author": "graphopt-test"})
    before = model.SerializeToString()
    dropped = drop_blocks(model, ["layer1.1", "layer3.1"])
    assert model.SerializeToString() == before, "the input model must not change"
    onnx.checker.check_model(dropped, full_check=True)
    onnx.shape_inference.infer_shapes(dropped, strict_mode=True)
    assert [i.name for i in dropped.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in dropped.graph.output] == [o.name for o in model.graph.output]
    assert dropped.graph.input[0].type == model.graph.input[0].type  # dynamic batch kept
    assert dropped.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert list(dropped.opset_import) == list(model.opset_import)
    assert {p.key: p.value for p in dropped.metadata_props} == {"author": "graphopt-test"}
    assert dropped.producer_name == model.producer_name
    # node metadata survives, so ids stay module paths after a drop
    assert [b.id for b in find_blocks(dropped)] == ["layer1.0", "layer2.0", "layer2.1", "layer3.0", "layer4.0",
                                                    "layer4.1"]
    x = zoo.example_input("resnet18", batch=3)  # a batch size other than the export's
    reference = without_block(without_block(zoo.torch_model("resnet18"), "layer1.1"), "layer3.1")
    with torch.no_grad():
        assert_close(run_onnx(dropped, x), reference(x).numpy())


class _EndsInBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return x + self.conv(torch.relu(x))


def test_block_whose_output_is_the_graph_output(tmp_path):
    path = zoo.export(_EndsInBlock().eval(), torch.randn(1, 4, 8, 8), tmp_path / "m.onnx", "torchscript")
    model = onnx.load(str(path))
    (block,) = find_blocks(model)
    dropped = drop_blocks(model, [block.id])
    onnx.checker.check_model(dropped, full_check=True)
    assert [n.op_type for n in dropped.graph.node] == ["Identity"]
    assert dropped.graph.output[0].name == model.graph.output[0].name
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(run_onnx(dropped, x), x)


def test_unknown_and_undroppable_ids_are_errors(exported):
    model = exported("resnet18", "torchscript")
    with pytest.raises(GraphoptError, match="unknown block id.*nope.*droppable blocks: layer1.0"):
        drop_blocks(model, ["layer1.1", "nope"])
    with pytest.raises(GraphoptError, match="layer2.0.*projection"):
        drop_blocks(model, ["layer2.0"])
    with pytest.raises(GraphoptError, match="no blocks"):
        drop_blocks(model, [])
    with pytest.raises(GraphoptError, match="more than once: layer1.1$"):
        drop_blocks(model, ["layer1.1", "layer3.1", "layer1.1"])


def test_pass_reports_whether_it_changed(exported):
    model = exported("resnet18", "torchscript")
    unchanged, changed = apply_passes(model, [DropBlocks([])])
    assert not changed and len(unchanged.graph.node) == len(model.graph.node)
    block = find_blocks(model)[1]
    _, changed = apply_passes(model, [DropBlocks([block])])
    assert changed


def _model_zoo_style(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite a real opset-9 export the way old model-zoo graphs look: Sum joins, unnamed nodes and
    convolution weights held by Constant nodes instead of initializers (which stay listed as graph inputs)."""
    graph = model.graph
    conv_weights = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    constants = [helper.make_node("Constant", [], [t.name], value=t) for t in graph.initializer
                 if t.name in conv_weights]
    kept = [t for t in graph.initializer if t.name not in conv_weights]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [i for i in graph.input if i.name not in conv_weights]
    del graph.input[:]
    graph.input.extend(inputs)
    nodes = constants + list(graph.node)
    del graph.node[:]
    for node in nodes:
        node.name = ""
        if node.op_type == "Add":
            node.op_type = "Sum"
        graph.node.append(node)
    return model


def test_old_model_zoo_graph(tmp_path):
    torch_model = zoo.torch_model("resnet18")
    x = zoo.example_input("resnet18")
    path = tmp_path / "old.onnx"
    torch.onnx.export(torch_model, (x,), str(path), dynamo=False, opset_version=9, keep_initializers_as_inputs=True,
                      do_constant_folding=False, input_names=["data"], dynamic_axes={"data": {0: "N"}})
    model = _model_zoo_style(onnx.load(str(path)))
    onnx.checker.check_model(model)
    assert {"BatchNormalization", "Sum", "Constant"} <= {n.op_type for n in model.graph.node}
    blocks = find_blocks(model)
    assert (len(blocks), sum(b.droppable for b in blocks)) == (8, 5)
    assert all(b.params > 0 for b in blocks)
    second = [b for b in blocks if b.droppable][1]  # layer1.1
    dropped = drop_blocks(model, [second.id])
    onnx.checker.check_model(dropped, full_check=True)
    with torch.no_grad():
        assert_close(run_onnx(dropped, x), without_block(torch_model, "layer1.1")(x).numpy())
