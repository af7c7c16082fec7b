"""InsertAdaptors: identity-initialised, bias-free linear maps around a dropped block's gap (PRACTISE).

One adaptor sits on the gap tensor itself (standing in for "after the earlier layers"), and one before each
convolution or matrix product that reads it (the "later layers"). On an NCHW map an adaptor is a 1x1 Conv;
on token (…, C) tensors it is a MatMul by a C x C matrix. They are temporary: used only to score blocks.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from graphopt.errors import GraphoptError
from graphopt.passes.base import GraphPass, PassResult

ADAPTOR_PREFIX = "graphopt_adaptor_"


class InsertAdaptors(GraphPass):
    def __init__(self, tensor: str):
        self.tensor = tensor
        self.weights: list[str] = []  # names of the adaptor weight initializers, filled by the pass

    def rewrite(self, graph: gs.Graph) -> PassResult:
        tensors = graph.tensors()
        if self.tensor not in tensors:
            raise GraphoptError(f"no tensor '{self.tensor}' to put adaptors on")
        gap = tensors[self.tensor]
        readers = list(gap.outputs)
        adapted = self._adaptor(graph, gap)
        for node in readers:
            for i, tensor in enumerate(node.inputs):
                if tensor is gap:
                    node.inputs[i] = adapted
        for node in readers:
            if (node.op == "Conv" and node.attrs.get("group", 1) == 1) or node.op in ("MatMul", "Gemm"):
                if node.inputs[0] is adapted:
                    node.inputs[0] = self._adaptor(graph, adapted)
        return PassResult(graph, changed=True)

    def _adaptor(self, graph: gs.Graph, source: gs.Variable) -> gs.Variable:
        shape = source.shape
        if shape is None or len(shape) < 2 or not isinstance(shape[1 if len(shape) == 4 else -1], int):
            raise GraphoptError(f"cannot place an adaptor on '{source.name}': its channel count is unknown")
        index = len(self.weights)
        name = f"{ADAPTOR_PREFIX}{index}"
        channels = shape[1] if len(shape) == 4 else shape[-1]
        if len(shape) == 4:
            weight = gs.Constant(f"{name}.weight", np.eye(channels, dtype=np.float32)[:, :, None, None])
            op = "Conv"
        else:
            weight = gs.Constant(f"{name}.weight", np.eye(channels, dtype=np.float32))
            op = "MatMul"
        out = gs.Variable(f"{name}.out", dtype=source.dtype, shape=source.shape)
        graph.nodes.append(gs.Node(op, name=name, inputs=[source, weight], outputs=[out]))
        self.weights.append(weight.name)
        return out
