"""Views of a model that training needs: extra outputs for intermediate tensors, and the part after a cut."""
from __future__ import annotations

import onnx

from graphopt.errors import GraphoptError
from graphopt.shapes import typed, value_infos


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
    graph inputs directly (then the cut does not separate the network and training must start at the input)."""
    extracted = onnx.utils.Extractor(typed(model)).extract_model([cut], outputs)
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
