"""Views of a model that training needs: extra outputs for intermediate tensors, and the part after a cut."""
from __future__ import annotations

import onnx
import onnx.numpy_helper

from graphopt.errors import GraphoptError
from graphopt.shapes import infer_shapes, typed, value_infos


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy whose graph also outputs the tensors `names` (after its own outputs, duplicates skipped)."""
    out = typed(model)
    infos = value_infos(out)
    present = {o.name for o in out.graph.output}
    for name in names:
        if name in present:
            continue
        if name not in infos:
            raise GraphoptError(f"the model has no tensor named '{name}'")
        out.graph.output.append(infos[name])
        present.add(name)
    return out


def suffix(model: onnx.ModelProto, cut: str, outputs: list[str]) -> onnx.ModelProto | None:
    """The sub-model from tensor `cut` to `outputs`, or None where something after the cut also reads the
    graph inputs directly (then the cut does not separate the network and training must start at the input).

    A graph input read only for its batch size (`x.view(inputs.size(0), -1)`: Shape, then Gather of index 0) does
    not count: that Shape reads the cut instead, which has the same batch dimension."""
    extracted = onnx.utils.Extractor(_batch_from_cut(typed(model), cut)).extract_model([cut], outputs)
    graph = extracted.graph
    defined = {cut} | {t.name for t in graph.initializer}
    for node in graph.node:
        if any(name and name not in defined for name in node.input):
            return None
        defined.update(node.output)
    extracted.ir_version = model.ir_version
    del extracted.opset_import[:]
    extracted.opset_import.extend(model.opset_import)
    return extracted


def _batch_from_cut(model: onnx.ModelProto, cut: str) -> onnx.ModelProto:
    """`model` (typed, changed in place) with every Shape of a graph input whose readers all take its first element
    (Gather of the constant index 0 on axis 0) reading `cut` instead, when `cut`'s first dimension is the batch
    (it follows the batch size at two sizes): EfficientNet's classifier reshapes by the input's batch size, which
    would otherwise tie the part after any cut to the graph input."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    constants.update({n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute
                      and n.attribute[0].name == "value"})
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    inputs = {i.name for i in graph.input} - set(constants)
    shapes = [n for n in graph.node if n.op_type == "Shape" and n.input[0] in inputs and not n.attribute
              and all(_takes_first(r, constants) for r in readers.get(n.output[0], []))]
    if shapes and _batch_leads(model, cut):
        for node in shapes:
            node.input[0] = cut
    return model


def _batch_leads(model: onnx.ModelProto, cut: str) -> bool:
    """Whether `cut`'s first dimension is the batch size, at batch 2 and at batch 3."""
    try:
        return all((infer_shapes(model, batch).get(cut) or (None,))[0] == batch for batch in (2, 3))
    except GraphoptError:  # shapes that cannot be had: leave the graph as it is
        return False


def _takes_first(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    """A Gather on axis 0 of the constant index 0."""
    if node.op_type != "Gather" or len(node.input) < 2 or node.input[1] not in constants:
        return False
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    index = onnx.numpy_helper.to_array(constants[node.input[1]])
    return axis == 0 and index.size == 1 and int(index.reshape(-1)[0]) == 0
