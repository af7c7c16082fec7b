"""Multiply-accumulate counts of the ops that dominate CNN and transformer cost."""
from __future__ import annotations

import math

import onnx

from graphopt.shapes import Shape


def node_macs(node: onnx.NodeProto, shapes: dict[str, Shape | None]) -> int:
    """MACs of one node at the shapes given; 0 for ops that do no multiply-accumulate or whose shapes are unknown."""
    def shape(i: int, outputs: bool = False) -> Shape | None:
        names = node.output if outputs else node.input
        return shapes.get(names[i]) if i < len(names) and names[i] else None

    out = shape(0, outputs=True)
    if node.op_type == "Conv":
        weight = shape(1)
        return math.prod(out) * math.prod(weight[1:]) if out and weight else 0
    if node.op_type == "ConvTranspose":
        data, weight = shape(0), shape(1)
        return math.prod(data) * math.prod(weight[1:]) if data and weight else 0
    if node.op_type in ("MatMul", "Gemm"):
        a = shape(0)
        if not (out and a):
            return 0
        trans_a = any(at.name == "transA" and at.i for at in node.attribute)
        k = a[-2] if node.op_type == "Gemm" and trans_a else a[-1]
        return math.prod(out) * k
    return 0


def model_macs(model: onnx.ModelProto, shapes: dict[str, Shape | None]) -> int:
    return sum(node_macs(n, shapes) for n in model.graph.node)
