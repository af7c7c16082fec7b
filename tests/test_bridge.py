"""ONNX -> PyTorch -> ONNX round trip on real exports: outputs, gradients, write-back, extra outputs."""
from __future__ import annotations

import importlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from graphopt.calibration.bridge import converters
from graphopt.calibration.bridge.onnx_torch import to_torch, write_back
from graphopt.errors import GraphoptError
from tests import zoo

# Every architecture through TorchScript; dynamo (slow to export) on those that need the added converters:
# ReduceMean-18 and Reshape allowzero (resnet18), Gelu-20 with layer-scale Mul (convnext), Shape-19 and MatMul (vit).
ARCHITECTURES = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf",
                 "convnext_tiny", "vit")
CASES = [(name, "torchscript") for name in ARCHITECTURES]
CASES += [(name, "dynamo") for name in ("resnet18", "convnext_tiny", "vit")]
BATCH = 3  # not the exported batch of 2: dynamic axes are exercised


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(exported, name: str, exporter: str) -> onnx.ModelProto:
    model = exported(name, exporter)
    model.doc_string = "user doc"
    onnx.helper.set_model_props(model, {"owner": "graphopt tests"})
    return model


def _feature_tensor(model: onnx.ModelProto) -> str:
    """The tensor recovery mimics: what global pooling reads, or for a ViT what its head reads."""
    pools = [node for node in model.graph.node if node.op_type in ("GlobalAveragePool", "ReduceMean")]
    heads = [node for node in model.graph.node if node.op_type == "Gemm"]
    return (pools or heads)[-1].input[0]


def _run_onnx(model: onnx.ModelProto, x: torch.Tensor, extra: tuple[str, ...] = ()) -> list[np.ndarray]:
    """onnxruntime's values of the graph outputs, then of the `extra` intermediate tensors."""
    if extra:
        model = onnx.shape_inference.infer_shapes(model)
        value_info = {value.name: value for value in model.graph.value_info}
        model.graph.output.extend(value_info[name] for name in extra)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _assert_close(actual: torch.Tensor, expected: np.ndarray, tol: float = 1e-4) -> None:
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual.detach().numpy(), expected, rtol=tol, atol=tol * scale)


def _train(module: nn.Module, x: torch.Tensor, steps: int = 2) -> None:
    """A few SGD steps pulling every returned tensor towards a random target, as recovery would, then noise
    on every weight: gradients of some early layers are too small to move float32 values in two steps."""
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    with torch.no_grad():
        targets = [torch.randn_like(value) for value in module(x)]
    for _ in range(steps):
        optimizer.zero_grad()
        loss = sum(nn.functional.mse_loss(value, target) for value, target in zip(module(x), targets))
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter), alpha=1e-3)


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    del stripped.graph.initializer[:]
    return stripped


@pytest.mark.parametrize("name,exporter", CASES)
def test_matches_onnxruntime_and_gradients_reach_every_weight(exported, name, exporter):
    model = _model(exported, name, exporter)
    feature = _feature_tensor(model)
    x = zoo.example_input(name, BATCH)
    graph = to_torch(model, outputs=[feature])
    returned = graph.module(x)
    expected = _run_onnx(model, x, extra=(feature,))
    assert graph.outputs == (model.graph.output[0].name, feature)
    assert len(returned) == len(expected) == 2
    for actual, reference in zip(returned, expected):
        _assert_close(actual, reference)

    sum((value * torch.randn_like(value)).sum() for value in returned).backward()
    parameters = dict(graph.module.named_parameters())
    assert parameters
    assert [name for name, value in parameters.items() if value.grad is None or not value.grad.any()] == []
    # Every float weight of the ONNX graph is trained, and each exactly once.
    float_weights = {tensor.name for tensor in model.graph.initializer
                     if tensor.data_type == onnx.TensorProto.FLOAT and np.prod(tensor.dims) > 1}
    trained = [graph.sources[name] for name in parameters]
    assert sorted(trained) == sorted(float_weights)


@pytest.mark.parametrize("name,exporter", CASES)
def test_write_back_reproduces_trained_module(exported, name, exporter):
    model = _model(exported, name, exporter)
    original = model.SerializeToString()
    graph = to_torch(model, outputs=[_feature_tensor(model)])
    assert write_back(model, graph).SerializeToString() == original  # untrained: byte for byte

    x = zoo.example_input(name, BATCH)
    _train(graph.module, x)
    written = write_back(model, graph)
    assert model.SerializeToString() == original
    onnx.checker.check_model(written, full_check=True)
    assert _without_initializers(written) == _without_initializers(model)  # names, opset, axes, metadata, outputs
    changed = {tensor.name for tensor, before in zip(written.graph.initializer, model.graph.initializer)
               if tensor.SerializeToString() != before.SerializeToString()}
    assert changed == {graph.sources[name] for name, _ in graph.module.named_parameters()}
    _assert_close(graph.module(x)[0], _run_onnx(written, x)[0])


def _tied_weights_model(tmp_path, exporter: str) -> onnx.ModelProto:
    """One matrix used by Gemm (transB=0, alpha), Gemm (transB=1) and MatMul; one bias by two Gemms with
    different beta; two equal zero biases the TorchScript exporter shares through Identity nodes."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))
            self.b = nn.Parameter(torch.randn(4))
            self.first, self.second = nn.Linear(4, 4), nn.Linear(4, 4)
            nn.init.zeros_(self.first.bias)
            nn.init.zeros_(self.second.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.tanh(torch.addmm(self.b, x, self.w, beta=2.0, alpha=0.5))
            y = torch.tanh(nn.functional.linear(y, self.w, self.b))
            return self.second(torch.tanh(self.first(y))) @ self.w

    torch.manual_seed(0)
    path = tmp_path / f"tied-{exporter}.onnx"
    zoo.export(Tied().eval(), torch.randn(2, 4), path, exporter)
    return onnx.load(str(path))


@pytest.mark.parametrize("exporter", zoo.EXPORTERS)
def test_shared_initializers_are_one_tensor_in_every_layout(tmp_path, exporter):
    model = _tied_weights_model(tmp_path, exporter)
    uses = [name for node in model.graph.node for name in node.input]
    assert uses.count("w") == 3 and uses.count("b") == 2
    graph = to_torch(model)
    assert sorted(graph.sources.values()) == sorted(tensor.name for tensor in model.graph.initializer)
    x = torch.randn(5, 4)
    _assert_close(graph.module(x)[0], _run_onnx(model, x)[0])
    _train(graph.module, x)
    written = write_back(model, graph)
    _assert_close(graph.module(x)[0], _run_onnx(written, x)[0])
    assert all(tensor.SerializeToString() != before.SerializeToString()
               for tensor, before in zip(written.graph.initializer, model.graph.initializer))


def test_torchscript_identity_sharing_is_exercised(tmp_path):
    model = _tied_weights_model(tmp_path, "torchscript")
    assert any(node.op_type == "Identity" for node in model.graph.node)


def _single_node_model(op_type: str, opset: int, output_shape: list[int]) -> onnx.ModelProto:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, output_shape)
    graph = onnx.helper.make_graph([onnx.helper.make_node(op_type, ["x"], ["y"], name="n")], "g", [x], [y])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])


def test_unconvertible_operator_is_a_one_line_error():
    model = _single_node_model("Det", 17, [])
    onnx.checker.check_model(model)
    with pytest.raises(GraphoptError, match=r"^cannot convert ONNX Det \(opset 17, node 'n'\) to PyTorch: [^\n]*$"):
        to_torch(model)


def test_converter_refusal_names_the_node():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 2])
    axes = onnx.helper.make_tensor_value_info("axes", onnx.TensorProto.INT64, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    node = onnx.helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="n")
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "g", [x, axes], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 18)])
    with pytest.raises(GraphoptError, match=r"^cannot convert ONNX ReduceMean \(opset 18, node 'n'\) .*run time$"):
        to_torch(model)


def test_unknown_extra_output_is_an_error(exported):
    with pytest.raises(GraphoptError, match="no_such_tensor"):
        to_torch(exported("vit", "torchscript"), outputs=["no_such_tensor"])


def test_converters_register_idempotently():
    importlib.reload(converters)
    model = _single_node_model("ReduceMean", 18, [1, 1])
    x = torch.randn(2, 2)
    _assert_close(to_torch(model).module(x)[0], _run_onnx(model, x)[0])
