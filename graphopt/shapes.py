"""Static tensor shapes at a concrete batch size and input shape (needed for MACs, droppability and features).

Cheapest source first: ONNX shape inference with data propagation; where that leaves tensors unknown, the same on
a constant-folded working copy (shape-only subgraphs such as TF-style "same" padding become constants); where
tensors are still unknown (shapes that depend on the input's height and width, ops shape inference does not know),
one onnxruntime run of the model with every tensor as an output. The user's model is only read.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import shape_inference

from graphopt.errors import GraphoptError, first_line
from graphopt.folding import fold_constants
from graphopt.runtime.inputs import checked_input_shapes, random_inputs, runtime_inputs
from graphopt.runtime.onnxrt import make_session

Shape = tuple[int, ...]
# Domains onnxruntime's CPU provider implements; a node in any other domain needs a custom-op library.
_RUNTIME_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc")


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


def infer_shapes(model: onnx.ModelProto, batch: int = 1,
                 input_shapes: dict[str, Shape] | None = None) -> dict[str, Shape | None]:
    """Map every tensor of `model` (by its name in `model`) to its static shape at `batch` and `input_shapes`.

    Raises GraphoptError when shapes are unknown and cannot be had by running the model: an input with a dynamic
    dimension other than the batch and no shape in `input_shapes`, or a node onnxruntime cannot run.
    """
    input_shapes = checked_input_shapes(model, input_shapes)
    work = typed(_fix_input_shapes(model, batch, input_shapes))
    shapes = _static_shapes(work)
    if _unknown(work, shapes):
        feeds = random_inputs(model, batch, input_shapes)  # asks for --input-shape before any work is done
        work = typed(fold_constants(work))
        shapes.update((name, shape) for name, shape in _static_shapes(work).items() if shape is not None)
        missing = _unknown(work, shapes)
        if missing:
            shapes.update(_run_shapes(work, missing, feeds))
    names = [*(value.name for value in model.graph.input), *(t.name for t in model.graph.initializer),
             *(name for node in model.graph.node for name in node.output if name)]
    return {name: shapes.get(name) for name in names}


def _fix_input_shapes(model: onnx.ModelProto, batch: int = 1,
                     input_shapes: dict[str, Shape] | None = None) -> onnx.ModelProto:
    """A copy whose inputs have the shapes in `input_shapes`, and `batch` as any other dynamic leading dimension.

    A named dimension so fixed takes its size wherever else the graph's types use the name (value_info an exporter
    wrote for a custom op's output, say); dynamic dimensions not fixed are left as they are.
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    sizes: dict[str, int] = {}
    for value in runtime_inputs(fixed):
        dims = value.type.tensor_type.shape.dim
        wanted = (input_shapes or {}).get(value.name)
        for axis, dim in enumerate(dims):
            size = wanted[axis] if wanted else batch if axis == 0 else None
            if size is not None and not dim.HasField("dim_value"):
                if dim.dim_param:
                    sizes[dim.dim_param] = size
                dim.dim_value = size  # clears dim_param: the two are a oneof
    for value in [*fixed.graph.value_info, *fixed.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in sizes:
                dim.dim_value = sizes[dim.dim_param]
    return fixed


def _static_shapes(model: onnx.ModelProto) -> dict[str, Shape | None]:
    """Shapes shape inference wrote into `model` (a `typed` copy), plus those of its initializers and Constants."""
    shapes: dict[str, Shape | None] = {name: _static(value) for name, value in value_infos(model).items()}
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = tuple(attr.t.dims)
    return shapes


def _unknown(model: onnx.ModelProto, shapes: dict[str, Shape | None]) -> list[str]:
    """The inputs and node outputs of `model` whose shape is not in `shapes`."""
    names = [*(value.name for value in runtime_inputs(model)),
             *(name for node in model.graph.node for name in node.output if name)]
    return [name for name in dict.fromkeys(names) if shapes.get(name) is None]


def _run_shapes(model: onnx.ModelProto, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, Shape]:
    """Shapes of the tensors `names`, read from one onnxruntime run of `model` with them as extra outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {value.name for value in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in present)
    try:
        values = make_session(probe, threads=1).run(names, feeds)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise GraphoptError(f"cannot infer tensor shapes: {_why_not_run(model, exc)}") from None
    return {name: tuple(value.shape) for name, value in zip(names, values) if isinstance(value, np.ndarray)}


def _why_not_run(model: onnx.ModelProto, exc: Exception) -> str:
    """The custom-domain node that stops onnxruntime, if there is one, else onnxruntime's own first line."""
    functions = {(function.domain, function.name) for function in model.functions}
    for node in model.graph.node:
        if node.domain not in _RUNTIME_DOMAINS and (node.domain, node.op_type) not in functions:
            return (f"node '{node.name or node.output[0]}' is op {node.op_type} of custom domain '{node.domain}', "
                    f"which ONNX shape inference cannot see through and onnxruntime cannot run")
    return str(exc) if isinstance(exc, GraphoptError) else f"onnxruntime cannot run the model: {first_line(exc)}"


def _static(value: onnx.ValueInfoProto) -> Shape | None:
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    dims = value.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)
