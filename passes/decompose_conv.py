"""DecomposeConv: replace a Conv, Gemm or MatMul by two of the same kind through `rank` bases of its output space
("Basis Scaling and Double Pruning", arXiv 2108.02893).

Write the node as y = M x (+ b), M = (outputs × patch entries). With O an orthonormal basis of the output space,
most important first (by default M's left singular vectors; or the principal directions of the outputs on real
data, which is the best rank-r choice for those inputs), the node becomes a head computing z = O[:, kept]ᵀ M x and
a tail computing O[:, kept] · scale · z (+ b). A Conv (k×k, Cin→Cout, g groups) becomes Conv(k×k, Cin→g·r,
g groups) then Conv(1×1, g·r→Cout, g groups); a Gemm or MatMul with a constant weight becomes two of the same op.
The per-basis scaling factors are folded into the tail, so the output is a plain graph with two nodes where there was
one. At full rank with unit scales the result is the original up to rounding; fewer bases with the SVD basis is the
least-squares best approximation of the weight (Eckart–Young), and the rest of the network sees the same channel
counts as before, so basis pruning composes with channel pruning.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphopt.errors import GraphoptError
from graphopt.passes.base import GraphPass, PassResult, apply_passes
from graphopt.passes.constants import constant_value

DECOMPOSABLE = ("Conv", "Gemm", "MatMul")
FULL_RANK = 1 << 30  # a rank above any weight's: every basis is kept


@dataclass(frozen=True)
class Basis:
    """Which bases of a node's output space the decomposed node keeps.

    `rank`: how many (capped at the rank the weight can have, so a rank chosen before channel pruning stays valid
    after it). `outputs`: an orthonormal basis of the output space as columns, most important first (group 1
    only); None is the weight's left singular vectors, largest singular value first. `order`: column indices most
    important first, of which the first `rank` are kept; None is the columns' own order. `scale`: one factor per
    column, folded into the tail; None is all ones.
    """

    rank: int
    outputs: np.ndarray | None = None
    order: np.ndarray | None = None
    scale: np.ndarray | None = None

    def columns(self, matrix: np.ndarray) -> np.ndarray:
        """The output basis (outputs × bases) of `matrix` (outputs × patch entries)."""
        if self.outputs is None:
            u, _, _ = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
            return u
        if self.outputs.shape[0] != matrix.shape[0]:
            raise GraphoptError(f"DecomposeConv: a basis of {self.outputs.shape[0]} outputs for a node with "
                                f"{matrix.shape[0]}")
        return self.outputs.astype(np.float64)

    def kept(self, available: int) -> np.ndarray:
        order = np.arange(available) if self.order is None else np.asarray(self.order, dtype=np.int64)
        order = order[order < available]
        if self.rank < 1 or len(set(order.tolist())) != len(order) or len(order) < min(self.rank, available):
            raise GraphoptError(f"DecomposeConv: rank {self.rank} with an order of {len(order)} distinct bases "
                                f"({available} available)")
        return order[:min(self.rank, available)]

    def factors(self, kept: np.ndarray) -> np.ndarray:
        return np.ones(len(kept)) if self.scale is None else np.asarray(self.scale, np.float64)[kept]


class DecomposeConv(GraphPass):
    """Decompose each node named in `bases` (by its first output, which the tail goes on making).

    Precondition: each named node is a Conv, a Gemm with a constant B, or a MatMul with a constant 2-D right
    operand. Postcondition: the named outputs are made by the tail of each pair; no other tensor changes.
    """

    def __init__(self, bases: dict[str, Basis]):
        self.bases = bases

    def rewrite(self, graph: gs.Graph) -> PassResult:
        nodes = {node.outputs[0].name: node for node in graph.nodes if node.outputs}
        for output, basis in self.bases.items():
            node = nodes.get(output)
            if node is None or node.op not in DECOMPOSABLE:
                raise GraphoptError(f"DecomposeConv: no Conv, Gemm or MatMul makes '{output}'")
            head, tail = _DECOMPOSE[node.op](node, basis)
            node.outputs.clear()
            graph.nodes.extend([head, tail])
        return PassResult(graph, changed=bool(self.bases))


def _factor(matrix: np.ndarray, basis: Basis) -> tuple[np.ndarray, np.ndarray]:
    """(head, tail) with tail @ head ≈ matrix (outputs × patch entries): head = O[:, kept]ᵀ matrix (bases ×
    entries), tail = O[:, kept] · scale (outputs × bases); at most as many bases as the matrix has rank."""
    columns = basis.columns(matrix)
    kept = basis.kept(min(columns.shape[1], *matrix.shape))
    head = columns[:, kept].T @ matrix.astype(np.float64)
    return head.astype(np.float32), (columns[:, kept] * basis.factors(kept)).astype(np.float32)


def head_name(node_name: str, output: str) -> str:
    """The name DecomposeConv gives the head of the node called `node_name` (or, unnamed, making `output`)."""
    return f"{node_name or output}_bases"


def _pair(node: gs.Node, head_weight: np.ndarray, tail_weight: np.ndarray, head_attrs: dict,
          tail_attrs: dict) -> tuple[gs.Node, gs.Node]:
    """Two nodes of `node`'s op: the head reads its input, the tail makes its outputs and keeps its bias."""
    name = node.name or node.outputs[0].name
    bases = gs.Variable(f"{node.outputs[0].name}_bases", dtype=node.outputs[0].dtype)
    head = gs.Node(node.op, head_name(node.name, node.outputs[0].name), head_attrs,
                   [node.inputs[0], gs.Constant(f"{name}_bases_weight", np.ascontiguousarray(head_weight))], [bases])
    tail_inputs = [bases, gs.Constant(f"{name}_mix_weight", np.ascontiguousarray(tail_weight)), *node.inputs[2:3]]
    return head, gs.Node(node.op, f"{name}_mix", tail_attrs, tail_inputs, list(node.outputs))


def _decompose_conv(node: gs.Node, basis: Basis) -> tuple[gs.Node, gs.Node]:
    weight = constant_value(node.inputs[1], "DecomposeConv")
    groups = int(node.attrs.get("group", 1))
    if groups > 1 and basis.outputs is not None:
        raise GraphoptError(f"DecomposeConv: {node.outputs[0].name} is a grouped Conv: only its SVD basis applies")
    per_group, taps = weight.shape[0] // groups, [1] * (weight.ndim - 2)
    heads, tails = zip(*(_factor(part.reshape(per_group, -1), basis) for part in np.split(weight, groups)))
    head = np.concatenate([h.reshape(-1, *weight.shape[1:]) for h in heads])
    tail = np.concatenate([t.reshape(per_group, -1, *taps) for t in tails])
    return _pair(node, head, tail, dict(node.attrs), {"group": groups, "kernel_shape": taps})


def _decompose_gemm(node: gs.Node, basis: Basis) -> tuple[gs.Node, gs.Node]:
    weight = constant_value(node.inputs[1], "DecomposeConv")
    head, tail = _factor(weight if node.attrs.get("transB", 0) else weight.T, basis)
    attrs = {k: v for k, v in node.attrs.items() if k in ("alpha", "beta")}
    return _pair(node, head.T, tail.T, {"transA": node.attrs.get("transA", 0)}, attrs)


def _decompose_matmul(node: gs.Node, basis: Basis) -> tuple[gs.Node, gs.Node]:
    weight = constant_value(node.inputs[1], "DecomposeConv")
    if weight.ndim != 2:
        raise GraphoptError(f"DecomposeConv: {node.outputs[0].name} multiplies by a {weight.ndim}-D weight")
    head, tail = _factor(weight.T, basis)
    return _pair(node, head.T, tail.T, {}, {})


_DECOMPOSE = {"Conv": _decompose_conv, "Gemm": _decompose_gemm, "MatMul": _decompose_matmul}


def decompose_conv(model: onnx.ModelProto, bases: dict[str, Basis]) -> onnx.ModelProto:
    """A new model with each node named in `bases` decomposed (the input model is not modified)."""
    decomposed, _ = apply_passes(model, [DecomposeConv(bases)])
    return decomposed
