"""Constant folding of a working copy, so that static shape inference can see through shape-only subgraphs.

Exporters leave arithmetic on constants in the graph (TF-style "same" padding computes its pads from constants
through Slice with a negative step, which ONNX shape inference cannot evaluate). Folding computes each such
subgraph once; the user's own graph is never folded.
"""
from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose constant-only subgraphs are replaced by their values (onnx-graphsurgeon, evaluated
    with onnxruntime).

    Tensors keep their names: a folded tensor becomes an initializer of the same name, and tensors needed only to
    compute folded ones disappear. A node that cannot be evaluated is left as it is, and a model graphsurgeon cannot
    take is returned as it is (folding is only a shortcut). Shape nodes are not folded: graphsurgeon 0.6 ignores
    their start/end attributes (opset 15), and shape inference's data propagation reads them correctly anyway.
    """
    severity = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.ERROR  # a node onnxruntime cannot evaluate is expected, not worth a warning
    try:
        graph = gs.import_onnx(model)
        graph.fold_constants(fold_shapes=False).cleanup()
        return gs.export_onnx(graph)
    except Exception:  # graphsurgeon's import and export raise anything on models it does not support
        return model
    finally:
        G_LOGGER.severity = severity
