"""ONNX -> PyTorch with onnx2torch, remembering which initializer every tensor came from.

Recovery trains the converted network; `write_back` then puts the trained values into the user's own
graph, so everything the user chose (names, opset, dynamic axes, metadata, node order) survives.
Each ONNX initializer becomes exactly one torch tensor, kept in the initializer's layout: weights
onnx2torch stores transposed or scaled (Gemm -> nn.Linear) get a parametrization instead of a
transform at write-back, so a tensor shared by several nodes can be tied whatever layout each node wants.
"""
from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass
from itertools import chain

import numpy as np
import onnx
import onnx2torch
import torch
from onnx import numpy_helper
from onnx2torch.node_converters.registry import get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.safe_shape_inference import safe_shape_inference
from torch import fx, nn
from torch.nn.utils import parametrize

from graphopt.calibration.bridge.converters import prepare
from graphopt.errors import GraphoptError, first_line

# Converters that move initializers into a module (Conv, ConvTranspose, Gemm, LayerNormalization,
# BatchNormalization, InstanceNormalization) all take them at these ONNX input positions.
_INPUT_OF_ATTRIBUTE = {"weight": 1, "bias": 2, "running_mean": 3, "running_var": 4}
# Float inputs that are not weights: trained, they would change what the operator means.
_NOT_WEIGHTS = {"Resize": {1, 2}, "BatchNormalization": {3, 4}}
_WEIGHTS_MODULE = "onnx_weights"


@dataclass
class TorchGraph:
    """A converted model.

    `module(*inputs)` (eval mode) returns a tuple of tensors named by `outputs`: the ONNX graph
    outputs in order, then the tensors asked for with ``to_torch(outputs=...)``. `sources` maps the
    qualified name of each parameter or buffer that holds an ONNX initializer (resolve it with
    ``module.get_parameter`` / ``get_buffer``) to that initializer's name; its value is in the
    initializer's layout. Trainable are the initializers that are weights: floating point, more than
    one element (scalars are operator constants such as GELU's sqrt(2)), not a Resize scale or a
    BatchNormalization statistic.
    """

    module: fx.GraphModule
    outputs: tuple[str, ...]
    sources: dict[str, str]


def to_torch(model: onnx.ModelProto, outputs: list[str] | None = None) -> TorchGraph:
    """Convert `model` (left untouched); `outputs` names intermediate tensors to return after the graph outputs."""
    prepared = prepare(model)
    try:
        module = onnx2torch.convert(prepared, attach_onnx_mapping=True)
    except Exception as exc:  # converters raise anything from KeyError to NotImplementedError
        raise GraphoptError(_why_unconvertible(prepared, exc)) from None
    nodes = OnnxGraph(prepared.graph).nodes  # onnx2torch names its submodules after these keys
    names = tuple(value.name for value in model.graph.output) + tuple(outputs or ())
    _return_tensors(module, prepared.graph, names)
    sources = _bind_initializers(module, nodes, {tensor.name: tensor for tensor in prepared.graph.initializer})
    return TorchGraph(module.eval(), names, sources)


def write_back(model: onnx.ModelProto, graph: TorchGraph) -> onnx.ModelProto:
    """A copy of `model` whose initializers hold `graph`'s current values (each in its own dtype); all else is kept.

    Initializers whose value did not change are left byte for byte as they were.
    """
    written = onnx.ModelProto()
    written.CopyFrom(model)
    initializers = {tensor.name: tensor for tensor in written.graph.initializer}
    for qualified, name in graph.sources.items():
        if name not in initializers:
            raise GraphoptError(f"the model has no initializer {name!r}: write back into the model that was converted")
        tensor = initializers[name]
        old = numpy_helper.to_array(tensor)
        new = operator.attrgetter(qualified)(graph.module).detach().cpu().numpy().astype(old.dtype)
        if new.shape != old.shape:
            raise GraphoptError(f"initializer {name!r} has shape {old.shape}, the torch model {new.shape}")
        if new.tobytes() != old.tobytes():
            _set_values(tensor, new)
    return written


def _set_values(tensor: onnx.TensorProto, values: np.ndarray) -> None:
    """Replace the data of `tensor`, keeping its name, doc string and other fields."""
    fresh = numpy_helper.from_array(values)
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data",
                  "external_data", "data_location"):
        tensor.ClearField(field)
    tensor.raw_data = fresh.raw_data


def _why_unconvertible(model: onnx.ModelProto, exc: Exception) -> str:
    """One line naming the first node onnx2torch cannot convert, found by running the converters one by one."""
    opsets = {opset.domain: opset.version for opset in model.opset_import}
    graph = OnnxGraph(safe_shape_inference(model).graph)
    for node in graph.nodes.values():
        version = opsets.get(node.domain, 0)
        where = f"cannot convert ONNX {node.operation_type} (opset {version}, node {node.name!r}) to PyTorch"
        try:
            converter = get_converter(node.operation_type, version, node.domain)
        except NotImplementedError:
            return f"{where}: onnx2torch has no converter for it"
        try:
            converter(node, graph)
        except Exception as node_exc:  # same as above: any type
            return f"{where}: {first_line(node_exc)}"
    return f"onnx2torch could not convert the model: {first_line(exc)}"


def _return_tensors(module: fx.GraphModule, onnx_graph: onnx.GraphProto, names: tuple[str, ...]) -> None:
    """Make `module` return exactly the ONNX tensors `names`, as a tuple, and drop what they do not need."""
    graph = module.graph
    initializers = {tensor.name for tensor in onnx_graph.initializer}
    inputs = [value.name for value in onnx_graph.input if value.name not in initializers]
    produced: dict[str, tuple[fx.Node, int | None]] = {
        name: (node, None) for name, node in zip(inputs, graph.find_nodes(op="placeholder"))}
    for node in graph.find_nodes(op="call_module"):
        node_outputs = module.get_submodule(node.target).onnx_mapping.outputs
        for index, name in enumerate(node_outputs):
            produced[name] = (node, index if len(node_outputs) > 1 else None)
    unknown = [name for name in names if name not in produced]
    if unknown:
        raise GraphoptError(f"no tensor computed by the model is named {unknown[0]!r}")
    returned = []
    for name in names:
        node, index = produced[name]
        if index is not None:
            with graph.inserting_after(node):
                node = graph.call_function(operator.getitem, (node, index))
        returned.append(node)
    graph.erase_node(next(iter(graph.find_nodes(op="output"))))
    graph.output(tuple(returned))
    graph.eliminate_dead_code()
    module.delete_all_unused_submodules()


def _bind_initializers(module: fx.GraphModule, nodes: dict[str, OnnxNode],
                       initializers: dict[str, onnx.TensorProto]) -> dict[str, str]:
    """Give each initializer the module reads one tensor, tie every use to it, and say where it lives."""
    held: dict[str, list[str]] = defaultdict(list)  # initializer -> qualified names of module attributes holding it
    read: dict[str, list[fx.Node]] = defaultdict(list)  # initializer -> get_attr nodes feeding it to an operator
    not_weights: set[str] = set()
    for node in module.graph.find_nodes(op="call_module"):
        submodule = module.get_submodule(node.target)
        onnx_node = nodes[node.target]
        for name, qualified in _held_by(submodule, onnx_node):
            held[name].append(f"{node.target}.{qualified}")
        fed = [arg for arg in chain(node.args, node.kwargs.values())
               if isinstance(arg, fx.Node) and arg.op == "get_attr"]
        from_initializers = [name for name in submodule.onnx_mapping.inputs if name in initializers]
        for arg, name in zip(fed, from_initializers, strict=True):
            read[name].append(arg)
            if onnx_node.input_values.index(name) in _NOT_WEIGHTS.get(onnx_node.operation_type, ()):
                not_weights.add(name)

    container = nn.Module()
    module.add_module(_WEIGHTS_MODULE, container)
    sources = {}
    for number, name in enumerate(initializers):
        if name in held:
            qualified = held[name][0]
            leaf = operator.attrgetter(qualified)(module)
            for other in held[name][1:]:
                owner, _, attribute = other.rpartition(".")
                setattr(module.get_submodule(owner), attribute, leaf)
        elif name in read:
            qualified = f"{_WEIGHTS_MODULE}.w{number}"
            leaf = module.get_buffer(read[name][0].target)
            if leaf.is_floating_point() and leaf.numel() > 1 and name not in not_weights:
                leaf = nn.Parameter(leaf)
                container.register_parameter(f"w{number}", leaf)
            else:
                container.register_buffer(f"w{number}", leaf)
        else:
            continue
        if tuple(leaf.shape) != tuple(initializers[name].dims):
            raise GraphoptError(f"initializer {name!r} has shape {tuple(initializers[name].dims)} "
                                f"but converts to {tuple(leaf.shape)}")
        for use in read[name]:
            use.target = qualified
        sources[qualified] = name
    if hasattr(module, "initializers"):
        del module.initializers  # onnx2torch's one copy per use, all replaced above
    module.recompile()
    return sources


def _held_by(submodule: nn.Module, onnx_node: OnnxNode) -> list[tuple[str, str]]:
    """(initializer, qualified name inside `submodule`) for each tensor a converter moved into its module."""
    held = []
    tensors = chain(((name, True) for name, _ in submodule.named_parameters()),
                    ((name, False) for name, _ in submodule.named_buffers()))
    for qualified, is_parameter in list(tensors):
        path, _, attribute = qualified.rpartition(".")
        index = _INPUT_OF_ATTRIBUTE.get(attribute)
        if index is None or index >= len(onnx_node.input_values):
            if is_parameter:
                raise GraphoptError(f"cannot map the {attribute} of ONNX {onnx_node.operation_type} "
                                    f"node {onnx_node.name!r} back to an initializer")
            continue  # bookkeeping such as BatchNorm's num_batches_tracked
        prefix = f"{path}." if path else ""
        held.append((onnx_node.input_values[index],
                     prefix + _in_onnx_layout(submodule.get_submodule(path), attribute, onnx_node)))
    return held


class _GemmOperand(nn.Module):
    """Gemm's alpha * B (B transposed unless transB) or beta * C, as nn.Linear holds it, from the ONNX tensor."""

    def __init__(self, scale: float, transpose: bool) -> None:
        super().__init__()
        self.scale, self.transpose = scale, transpose

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return (value.T if self.transpose else value) * self.scale

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        value = value / self.scale
        return (value.T if self.transpose else value).contiguous()


def _in_onnx_layout(owner: nn.Module, attribute: str, onnx_node: OnnxNode) -> str:
    """Where, inside `owner`, `attribute` is kept in ONNX layout: itself, or a parametrization's original."""
    if not (isinstance(owner, nn.Linear) and onnx_node.operation_type == "Gemm"):
        return attribute
    attributes = onnx_node.attributes
    if attribute == "weight":
        operand = _GemmOperand(attributes.get("alpha", 1.0), transpose=not attributes.get("transB", 0))
    else:
        operand = _GemmOperand(attributes.get("beta", 1.0), transpose=False)
    if operand.scale == 1.0 and not operand.transpose:
        return attribute
    parametrize.register_parametrization(owner, attribute, operand)
    return f"parametrizations.{attribute}.original"
