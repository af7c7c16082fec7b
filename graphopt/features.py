"""The feature tensor that recovery mimics: the last feature map before global pooling, else the graph outputs."""
from __future__ import annotations

import onnx
from onnx import numpy_helper

from graphopt.errors import GraphoptError
from graphopt.shapes import Shape, infer_shapes


def feature_tensors(model: onnx.ModelProto, override: str | None = None,
                    shapes: dict[str, Shape | None] | None = None) -> list[str]:
    """Names of the tensors to mimic. A classifier's last global spatial pooling input wins; else the graph outputs."""
    graph = model.graph
    if override:
        known = {name for node in graph.node for name in node.output} | {i.name for i in graph.input}
        if override not in known:
            raise GraphoptError(f"--feature-tensor '{override}' is not a tensor of this model")
        return [override]
    shapes = shapes if shapes is not None else infer_shapes(model)
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT64}
    for node in reversed(graph.node):
        shape = shapes.get(node.input[0]) if node.input else None
        if shape is not None and len(shape) == 4 and _pools_hw(node, constants):
            return [node.input[0]]
    return [o.name for o in graph.output]


def _pools_hw(node: onnx.NodeProto, constants: dict) -> bool:
    """Global pooling over H and W of an NCHW map, in any spelling exporters use."""
    if node.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        return True
    if node.op_type not in ("ReduceMean", "ReduceMax"):
        return False
    axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1 and node.input[1] in constants:
        axes = constants[node.input[1]].ravel().tolist()
    return axes is not None and sorted(a % 4 for a in axes) == [2, 3]


def class_scores(model: onnx.ModelProto, features: list[str]) -> str | None:
    """The first graph output when it is a (batch, classes) score vector other than the features themselves."""
    output = model.graph.output[0]
    dims = output.type.tensor_type.shape.dim
    if output.name in features or len(dims) != 2 or not dims[1].dim_value > 1:
        return None
    return output.name
