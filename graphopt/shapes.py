"""Static tensor shapes at a concrete batch size, from ONNX shape inference (needed for MACs and droppability)."""
from __future__ import annotations

import onnx
from onnx import shape_inference

from graphopt.runtime.inputs import runtime_inputs

Shape = tuple[int, ...]


def fix_dynamic_batch(model: onnx.ModelProto, batch: int = 1) -> onnx.ModelProto:
    """A copy with every input's dynamic leading dimension set to `batch` (other dims left as they are)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in runtime_inputs(fixed):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch
    return fixed


def typed(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model with value_info for its intermediate tensors (symbolic dims kept)."""
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # best effort: an op shape inference does not know must not stop analysis
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy


def value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every typed tensor of the graph: inputs, intermediate value_info and outputs, by name."""
    graph = model.graph
    return {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}


def infer_shapes(model: onnx.ModelProto, batch: int = 1) -> dict[str, Shape | None]:
    """Map every tensor name to its static shape at `batch`, or None where inference cannot tell."""
    inferred = typed(fix_dynamic_batch(model, batch))
    graph = inferred.graph
    shapes: dict[str, Shape | None] = {name: _static(value) for name, value in value_infos(inferred).items()}
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(attr.t.dims)
    return shapes


def _static(value: onnx.ValueInfoProto) -> Shape | None:
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    dims = value.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)
