"""What onnx2torch 1.5.15 lacks for today's exporters, registered in its converter registry on import.

torch.onnx's dynamo exporter writes opset 18+: ReduceMean takes its axes as an input, Gelu is a
single node, Reshape carries ``allowzero=1``. The TorchScript exporter shares identical weights through
``Identity`` nodes, which onnx2torch's Conv and Gemm converters cannot read. `prepare` rewrites a copy of
the graph for the latter two; the converters cover the rest. onnx2torch knows operator versions up to about
opset 17; every later version that only accepted new element types (float8, int4, bfloat16, ...) is
registered as the version before it: both exporters' default opset 20 (Identity-19, Constant-19,
Shape/Reshape-19) and the newest opset onnxruntime loads (Conv/MaxPool/GlobalAveragePool-22, up to -25).
"""
from __future__ import annotations

import onnx
from onnx2torch.node_converters.registry import TConverter, add_converter, get_converter
from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value, onnx_mapping_from_node
from torch import nn

_REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
               "ReduceMin", "ReduceProd", "ReduceSumSquare")
# (operator, version onnx2torch converts, later versions that only added element types, per the ONNX changelog):
# 19 float8, 21 int4/uint4, 22 bfloat16 for float operators, 23 float4e2m1, 24 float8e8m0, 25 int2/uint2.
_WIDENED = (("Constant", 13, (19, 21, 23, 24, 25)), ("Identity", 16, (19, 21, 23, 24, 25)),
            ("Reshape", 14, (19, 21, 23, 24, 25)), ("Shape", 15, (19, 21, 23, 24, 25)),
            ("Flatten", 13, (21, 23, 24, 25)), ("Conv", 11, (22,)), ("MaxPool", 12, (22,)),
            ("GlobalAveragePool", 1, (22,)))


def _register(operation_type: str, version: int, converter: TConverter) -> None:
    """Register unless a converter exists already (a re-import, or a newer onnx2torch that has its own)."""
    try:
        get_converter(operation_type, version)
    except NotImplementedError:
        add_converter(operation_type, version)(converter)


def _reduce_axes_input(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Reduce* from opset 18: axes moved from an attribute to an optional (here: constant) input."""
    keepdims = node.attributes.get("keepdims", 1)
    axes = None
    if len(node.input_values) > 1 and node.input_values[1]:
        try:
            axes = get_const_value(node.input_values[1], graph).tolist()
        except KeyError:
            raise NotImplementedError(f"{node.operation_type} with axes computed at run time") from None
    if not axes and node.attributes.get("noop_with_empty_axes", 0):
        module: nn.Module = nn.Identity()
    else:
        module = OnnxReduceStaticAxes(operation_type=node.operation_type, axes=axes or None, keepdims=keepdims)
    return OperationConverterResult(module, OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values))


def _gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Gelu (opset 20) maps one to one onto nn.GELU, tanh approximation included."""
    del graph
    module = nn.GELU(approximate=node.attributes.get("approximate", "none"))
    return OperationConverterResult(module, onnx_mapping_from_node(node))


def _same_as(operation_type: str, version: int) -> TConverter:
    """Versions that only widened the accepted element types convert like the previous one."""
    return get_converter(operation_type, version)


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` onnx2torch can convert: Identity-shared weights read directly, no-op allowzero dropped.

    The Identity nodes stay (their outputs may be asked for); only their consumers are rewired.
    ``allowzero=1`` only matters when the shape holds a 0, so it is cleared for constant shapes without one.
    """
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    graph = prepared.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    alias = {node.output[0]: node.input[0] for node in graph.node
             if node.op_type == "Identity" and node.input[0] in initializers}
    constants = dict(initializers)
    constants.update((node.output[0], node.attribute[0].t) for node in graph.node
                     if node.op_type == "Constant" and node.attribute[0].name == "value")
    for node in graph.node:
        if node.op_type != "Identity":
            node.input[:] = [alias.get(name, name) for name in node.input]
        if node.op_type == "Reshape" and node.input[1] in constants:
            if onnx.numpy_helper.to_array(constants[node.input[1]]).all():
                for attribute in [attribute for attribute in node.attribute if attribute.name == "allowzero"]:
                    node.attribute.remove(attribute)
    return prepared


for _op in _REDUCE_OPS:
    _register(_op, 18, _reduce_axes_input)
for _op in ("ReduceMax", "ReduceMin"):  # opset 20 added bool inputs
    _register(_op, 20, _reduce_axes_input)
_register("Gelu", 20, _gelu)
for _op, _base, _versions in _WIDENED:
    for _version in _versions:
        _register(_op, _version, _same_as(_op, _base))
