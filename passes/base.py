"""The pass interface: a pass takes an onnx-graphsurgeon graph and returns it with a flag saying whether it changed.

`apply_passes` is the only way passes touch a model: it imports a copy of the model, runs each pass followed by
`cleanup().toposort()`, exports, and restores what graphsurgeon does not carry (model metadata, node metadata, and
for IR versions below 4 the listing of initializers as graph inputs).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs


@dataclass
class PassResult:
    graph: gs.Graph
    changed: bool


class GraphPass(abc.ABC):
    """One graph rewrite. Subclasses implement `rewrite`; calling the pass also cleans up and sorts the graph."""

    def __call__(self, graph: gs.Graph) -> PassResult:
        result = self.rewrite(graph)
        result.graph.cleanup().toposort()
        return result

    @abc.abstractmethod
    def rewrite(self, graph: gs.Graph) -> PassResult: ...


def apply_passes(model: onnx.ModelProto, passes: list[GraphPass]) -> tuple[onnx.ModelProto, bool]:
    """Run `passes` in order on a copy of `model`; returns the new model and whether any pass changed it.

    graphsurgeon imports tensors by reference and edits the protos it was given (it names every Constant node's
    value tensor), so it gets a copy: the caller's model stays byte for byte as it was.
    """
    working = onnx.ModelProto()
    working.CopyFrom(model)
    graph = gs.import_onnx(working)
    changed = False
    for graph_pass in passes:
        result = graph_pass(graph)
        graph, changed = result.graph, changed or result.changed
    out = gs.export_onnx(graph, do_type_check=True)
    _restore_metadata(model, out)
    _list_initializers_as_inputs(model, out)
    return out, changed


def _restore_metadata(source: onnx.ModelProto, target: onnx.ModelProto) -> None:
    """Carry over model-level fields and per-node metadata (dynamo's module scopes) that graphsurgeon drops."""
    target.ir_version = source.ir_version
    for name in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(target, name, getattr(source, name))
    del target.metadata_props[:]
    target.metadata_props.extend(source.metadata_props)
    del target.opset_import[:]
    target.opset_import.extend(source.opset_import)
    if not target.functions:
        target.functions.extend(source.functions)
    target.graph.doc_string = source.graph.doc_string
    node_metadata = {n.name: n.metadata_props for n in source.graph.node if n.name and n.metadata_props}
    for node in target.graph.node:
        if node.name in node_metadata and not node.metadata_props:
            node.metadata_props.extend(node_metadata[node.name])


def _list_initializers_as_inputs(source: onnx.ModelProto, target: onnx.ModelProto) -> None:
    """IR versions below 4 require every initializer to be a graph input too, which graphsurgeon does not export.

    The inputs are listed as the source listed them (its entries, its order), so the user's graph keeps its look;
    initializers the passes removed go, and ones they added are appended, described by their tensor.
    """
    if source.ir_version >= 4:
        return
    exported = {value.name: value for value in target.graph.input}
    initializers = {tensor.name: tensor for tensor in target.graph.initializer}
    listed = {value.name: value for value in source.graph.input if value.name in exported or value.name in initializers}
    listed.update(exported)
    for name, tensor in initializers.items():
        if name not in listed:
            listed[name] = onnx.helper.make_tensor_value_info(name, tensor.data_type, tensor.dims)
    del target.graph.input[:]
    target.graph.input.extend(listed.values())
