"""Shapes of graphs that ONNX static shape inference cannot see through, as real exporters write them.

EfficientNet-Lite from the `efficientnet_lite_pytorch` package pads TF-style: with a fixed image size the pads are
computed from constants through a reversed Slice ("static"), without one from the input's Shape ("dynamic").
"""
import copy
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet
from onnx import helper

import graphopt.shapes
from graphopt.blocks import find_blocks
from graphopt.calibration.bridge.onnx_torch import to_torch, write_back
from graphopt.errors import GraphoptError
from graphopt.features import feature_tensors
from graphopt.passes import drop_blocks
from graphopt.shapes import infer_shapes
from graphopt.subgraph import with_outputs
from tests import zoo
from tests.helpers import assert_close, run_onnx

SIZE = 64
PADDINGS = {"static": {}, "dynamic": {"image_size": None}}  # EfficientNet.from_name overrides


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """padding -> (torch model, its plain TorchScript export with a dynamic batch), as a user would export it."""
    folder = tmp_path_factory.mktemp("lite0")
    models = {}
    for padding, overrides in PADDINGS.items():
        torch.manual_seed(0)
        model = EfficientNet.from_name("efficientnet-lite0", **overrides).eval()
        zoo._randomise_batchnorm(model)  # non-zero folded biases, as trained weights have
        path = folder / f"{padding}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter warns that the padding defeats its constant folding
            zoo.export(model, torch.randn(1, 3, SIZE, SIZE), path, "torchscript")
        models[padding] = (model, onnx.load(str(path)))
    return models


def _identity_shortcuts(model: torch.nn.Module) -> list[str]:
    """The blocks whose forward adds its input back: stride 1 and as many channels out as in."""
    return [f"_blocks.{i}" for i, block in enumerate(model._blocks)
            if block.id_skip and block._block_args.stride == 1
            and block._block_args.input_filters == block._block_args.output_filters]


@pytest.mark.parametrize("padding", PADDINGS)
def test_lite0_blocks_are_all_droppable(lite0, padding):
    model, exported = lite0[padding]
    shapes = infer_shapes(exported)
    assert [name for name, shape in shapes.items() if shape is None] == []
    blocks = find_blocks(exported, shapes)
    assert [b.id for b in blocks] == _identity_shortcuts(model)
    assert len(blocks) == 9
    for block in blocks:
        assert block.droppable and block.macs_share > 0 and block.params > 0
        assert block.shape is not None and block.shape[0] == 1
    pad_input = next(n.input[0] for n in exported.graph.node if n.op_type == "Pad")
    assert shapes[pad_input] == (1, 3, SIZE, SIZE)


@pytest.mark.parametrize("padding", PADDINGS)
def test_dropping_leaves_the_model_it_was_given_byte_for_byte(lite0, padding):
    """Lite0's export holds Constant nodes, which graphsurgeon edits in place when it imports them."""
    _, exported = lite0[padding]
    before = exported.SerializeToString(deterministic=True)
    dropped = drop_blocks(exported, ["_blocks.2", "_blocks.10"])
    assert exported.SerializeToString(deterministic=True) == before
    assert len(dropped.graph.node) < len(exported.graph.node)


def test_constant_padding_needs_folding_not_a_run(lite0, monkeypatch):
    """Static padding is arithmetic on constants: folding a working copy gives every shape without running."""
    def refuse(*args):
        raise AssertionError("constant folding should have been enough")
    monkeypatch.setattr(graphopt.shapes, "_run_shapes", refuse)
    _, exported = lite0["static"]
    original = exported.SerializeToString()
    assert None not in infer_shapes(exported).values()
    assert exported.SerializeToString() == original  # folded in a copy only


def test_dynamic_padding_belongs_to_its_block(lite0):
    """The Shape->...->Pad subgraph of a block's depthwise conv reads the block's own tensors, so it is part of the
    block (dropped with it) while the graph keeps every other block's padding subgraph."""
    _, exported = lite0["dynamic"]
    block = find_blocks(exported)[0]
    assert {"Shape", "Pad", "Conv"} <= {n.op_type for n in exported.graph.node if n.name in block.nodes}
    dropped = drop_blocks(exported, [block.id])
    in_block = [n for n in exported.graph.node if n.name in block.nodes]
    for op in ("Pad", "Shape"):
        assert _count(dropped.graph.node, op) == _count(exported.graph.node, op) - _count(in_block, op)


def _count(nodes, op_type: str) -> int:
    return sum(node.op_type == op_type for node in nodes)


@pytest.mark.parametrize("padding", PADDINGS)
def test_lite0_dropped_block_matches_pytorch_without_it(lite0, padding):
    """Compared on the features before pooling (a random Lite0's logits hardly depend on its input), for the last
    block (in a random Lite0, early blocks change the features by less than float32 noise)."""
    model, exported = lite0[padding]
    block_id = "_blocks.14"
    dropped = drop_blocks(exported, [block_id])
    onnx.checker.check_model(dropped, full_check=True)
    reference = copy.deepcopy(model)
    reference.get_submodule(block_id).forward = lambda inputs, drop_connect_rate=None: inputs
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, full = reference.extract_features(x).numpy(), model.extract_features(x).numpy()
    features = feature_tensors(dropped)
    got = ort.InferenceSession(with_outputs(dropped, features).SerializeToString()).run(features, {"input": x.numpy()})
    assert_close(got[0], expected)
    assert np.abs(got[0] - full).max() > 1e-2  # the block did something, so dropping it is seen


def test_lite0_feature_tensor_is_the_map_before_pooling(lite0):
    _, exported = lite0["static"]
    pooling = next(n for n in exported.graph.node if n.op_type == "GlobalAveragePool")
    assert feature_tensors(exported) == [pooling.input[0]]


def test_static_inference_alone_when_it_knows_every_tensor(exported, monkeypatch):
    """The common case neither folds constants nor runs the model."""
    def refuse(*args):
        raise AssertionError("not needed for a model static inference sees through")
    monkeypatch.setattr(graphopt.shapes, "fold_constants", refuse)
    monkeypatch.setattr(graphopt.shapes, "_run_shapes", refuse)
    shapes = infer_shapes(exported("resnet18", "torchscript"), batch=3)
    assert shapes["input"] == (3, 3, 64, 64) and shapes["logits"] == (3, 1000)


@pytest.fixture(scope="module")
def resnet_dynamic_hw(tmp_path_factory):
    path = tmp_path_factory.mktemp("hw") / "resnet18-hw.onnx"
    torch.onnx.export(zoo.torch_model("resnet18"), (zoo.example_input("resnet18"),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})
    return onnx.load(str(path))


def test_dynamic_height_and_width_need_an_input_shape(resnet_dynamic_hw):
    with pytest.raises(GraphoptError, match="--input-shape input:"):
        infer_shapes(resnet_dynamic_hw)
    shapes = infer_shapes(resnet_dynamic_hw, input_shapes={"input": (1, 3, 96, 80)})
    blocks = find_blocks(resnet_dynamic_hw, shapes)
    assert sum(b.droppable for b in blocks) == zoo.ARCHITECTURES["resnet18"][3]
    assert blocks[0].shape == [1, 64, 24, 20]


def _with_custom_relu(model: onnx.ModelProto, typed_output: tuple[int, ...] | None = None) -> onnx.ModelProto:
    """`model` with its first Relu replaced by an op of a custom domain (onnxruntime has no kernel for it),
    optionally with a value_info giving the op's output shape as a custom-op exporter would."""
    custom = copy.deepcopy(model)
    node = next(n for n in custom.graph.node if n.op_type == "Relu")
    node.op_type, node.domain = "FancyRelu", "com.example.ops"
    custom.opset_import.append(helper.make_opsetid("com.example.ops", 1))
    if typed_output:
        custom.graph.value_info.append(
            helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, ["batch", *typed_output[1:]]))
    return custom


def test_custom_op_that_hides_shapes_is_named(exported):
    with pytest.raises(GraphoptError, match=r"FancyRelu of custom domain 'com.example.ops'") as error:
        find_blocks(_with_custom_relu(exported("resnet18", "torchscript")))
    assert "cannot infer tensor shapes" in str(error.value) and "\n" not in str(error.value)


def test_custom_op_that_static_inference_sees_through_is_fine(exported):
    model = exported("resnet18", "torchscript")
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    custom = _with_custom_relu(model, typed_output=infer_shapes(model)[relu.output[0]])
    blocks = find_blocks(custom)
    assert sum(b.droppable for b in blocks) == zoo.ARCHITECTURES["resnet18"][3]


@pytest.mark.parametrize("padding", PADDINGS)
def test_lite0_converts_to_torch_and_writes_back(lite0, padding):
    """Recovery trains the converted user graph, padding subgraphs and all, and writes into that same graph."""
    _, exported = lite0[padding]
    graph = to_torch(exported)
    with torch.no_grad():
        for parameter in graph.module.parameters():
            parameter.mul_(1.5)
    written = write_back(exported, graph)
    assert list(written.graph.node) == list(exported.graph.node)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        trained = graph.module(x)[0].numpy()
    assert_close(run_onnx(written, x), trained)
    assert np.abs(run_onnx(exported, x) - trained).max() > 1e-2
