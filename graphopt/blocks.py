"""Residual-block discovery from graph structure alone.

A block is `y = join(x, F(x))` with join an Add/Sum: `x` is the join's immediate dominator (every path from the
graph inputs to the join passes through it), F is every node between `x` and the join, and nothing outside the
block reads a tensor made inside F. When the join reads `x` itself the shortcut is an identity, and the block is
droppable if `x` and `y` have the same shape; otherwise the shortcut is a projection (downsampling) and the block
is reported but kept.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from graphopt.macs import model_macs, node_macs
from graphopt.scopes import common_module
from graphopt.shapes import Shape, infer_shapes

JOIN_OPS = ("Add", "Sum")
# A residual branch does real work; `x + 0.044715 * x**3` inside a tanh-GELU is not a block.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum")


@dataclass
class Block:
    """One residual block, as found in the graph."""

    id: str
    droppable: bool
    shortcut: str  # "identity" or "projection"
    join: str  # name of the join node
    skip: str  # tensor the block starts from (x)
    output: str  # tensor the join produces (y)
    nodes: list[str] = field(default_factory=list)  # nodes of F (and of a projection shortcut), join excluded
    params: int = 0
    macs: int = 0
    macs_share: float = 0.0
    shape: list[int] | None = None  # shape of x at batch 1

    def to_dict(self) -> dict:
        return asdict(self)


def node_label(node: onnx.NodeProto, index: int) -> str:
    """A node's name, or a stable stand-in for unnamed nodes of old exporters."""
    return node.name or f"{node.op_type}_{index}"


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors that do not depend on any runtime input: initializers and whatever is computed only from them."""
    consts = {t.name for t in graph.initializer}
    for node in graph.node:
        if all(not name or name in consts for name in node.input):
            consts.update(node.output)
    return consts


def find_blocks(model: onnx.ModelProto, shapes: dict[str, Shape | None] | None = None) -> list[Block]:
    """Every residual block of `model`, in graph order."""
    graph = model.graph
    shapes = shapes if shapes is not None else infer_shapes(model)
    consts = constant_tensors(graph)
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = defaultdict(list)
    for index, node in enumerate(graph.node):
        for name in node.output:
            producer[name] = index
        for name in set(node.input):
            if name and name not in consts:
                consumers[name].append(index)
    idom = _node_dominators(graph, consts, producer)
    graph_outputs = {o.name for o in graph.output}
    total_macs = model_macs(model, shapes) or 1

    blocks: list[Block] = []
    for index, node in enumerate(graph.node):
        inputs = [name for name in node.input if name]
        if node.op_type not in JOIN_OPS or len(inputs) != 2 or len(set(inputs)) != 2:
            continue
        if any(name in consts for name in inputs):
            continue
        skip = idom.get(index)
        if skip is None:
            continue
        region = _region(graph, index, skip, consts, producer)
        if region is None or not any(graph.node[i].op_type in WEIGHTED_OPS for i in region):
            continue
        if not _closed(graph, region, index, consumers, graph_outputs):
            continue
        identity = skip in inputs
        out = node.output[0]
        droppable = identity and shapes.get(skip) is not None and shapes.get(skip) == shapes.get(out)
        region_nodes = [graph.node[i] for i in sorted(region)]
        blocks.append(Block(
            id=common_module([*region_nodes, node]) or node_label(node, index),
            droppable=bool(droppable),
            shortcut="identity" if identity else "projection",
            join=node_label(node, index),
            skip=skip,
            output=out,
            nodes=[node_label(graph.node[i], i) for i in sorted(region)],
            params=_params(region_nodes, graph, consts, producer),
            macs=(macs := sum(node_macs(n, shapes) for n in region_nodes)),
            macs_share=macs / total_macs,
            shape=list(shapes[skip]) if shapes.get(skip) else None,
        ))
    _make_ids_unique(blocks)
    return blocks


def _node_dominators(graph: onnx.GraphProto, consts: set[str], producer: dict[str, int]) -> dict[int, str]:
    """For each node, the tensor that immediately dominates it (None if that is a node or the graph root).

    Vertices are tensors and nodes of the non-constant graph; ONNX node order is topological, so one pass of the
    Cooper-Harvey-Kennedy intersection over that order gives exact dominators.
    """
    root = ("root", "")
    order: dict[tuple, int] = {root: 0}
    idom: dict[tuple, tuple] = {root: root}

    def intersect(a: tuple, b: tuple) -> tuple:
        while a != b:
            while order[a] > order[b]:
                a = idom[a]
            while order[b] > order[a]:
                b = idom[b]
        return a

    def visit(vertex: tuple, preds: list[tuple]) -> None:
        order[vertex] = len(order)
        dom = preds[0]
        for pred in preds[1:]:
            dom = intersect(pred, dom)
        idom[vertex] = dom

    initializers = {t.name for t in graph.initializer}
    for value in graph.input:
        if value.name not in initializers:
            visit(("t", value.name), [root])
    result: dict[int, str] = {}
    for index, node in enumerate(graph.node):
        preds = [("t", name) for name in dict.fromkeys(node.input) if name and name not in consts]
        preds = [p for p in preds if p in order]
        if not preds:
            continue
        vertex = ("n", index)
        visit(vertex, preds)
        if idom[vertex][0] == "t":
            result[index] = idom[vertex][1]
        for name in node.output:
            if name:
                visit(("t", name), [vertex])
    return result


def _region(graph: onnx.GraphProto, join: int, skip: str, consts: set[str], producer: dict[str, int]
            ) -> set[int] | None:
    """Indices of the nodes between `skip` and the join (walking back from the join, stopping at `skip`)."""
    region: set[int] = set()
    stack = [name for name in graph.node[join].input if name and name != skip]
    while stack:
        name = stack.pop()
        if name in consts or name == skip:
            continue
        if name not in producer:
            return None  # reached a graph input other than skip: skip would not dominate the join
        index = producer[name]
        if index in region:
            continue
        region.add(index)
        stack.extend(n for n in graph.node[index].input if n)
    return region


def _closed(graph: onnx.GraphProto, region: set[int], join: int, consumers: dict[str, list[int]],
            graph_outputs: set[str]) -> bool:
    """True when nothing outside the block (other than the join) reads a tensor made inside it."""
    for index in region:
        for name in graph.node[index].output:
            if name in graph_outputs:
                return False
            if any(c not in region and c != join for c in consumers.get(name, ())):
                return False
    return True


def _params(nodes: list[onnx.NodeProto], graph: onnx.GraphProto, consts: set[str],
            producer: dict[str, int]) -> int:
    """Elements of the float tensors (weights, biases, scales) the block's nodes read; integer shape operands and
    scalars aside. TorchScript ties equal tensors through Identity nodes: each use counts, as each is a module's own."""
    stored = _float_constants(graph)
    read = {name for node in nodes for name in node.input if name in consts}
    return sum(stored.get(_unaliased(name, graph, producer), 0) for name in read)


def _unaliased(name: str, graph: onnx.GraphProto, producer: dict[str, int]) -> str:
    """The tensor `name` is an Identity copy of, through any chain of Identity nodes (else `name` itself)."""
    while name in producer and graph.node[producer[name]].op_type == "Identity":
        name = graph.node[producer[name]].input[0]
    return name


def _float_constants(graph: onnx.GraphProto) -> dict[str, int]:
    """Element counts of the float tensors stored in the graph (initializers and Constant nodes' values), scalars
    such as a Clip's bounds aside: they are operator constants, not weights."""
    tensors = {t.name: t for t in graph.initializer}
    tensors.update((node.output[0], attr.t) for node in graph.node if node.op_type == "Constant"
                   for attr in node.attribute if attr.name == "value")
    return {name: int(np.prod(t.dims)) for name, t in tensors.items() if t.dims and t.data_type in _FLOAT_TYPES}


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def _make_ids_unique(blocks: list[Block]) -> None:
    counts: dict[str, int] = defaultdict(int)
    for block in blocks:
        counts[block.id] += 1
    seen: dict[str, int] = defaultdict(int)
    for block in blocks:
        if counts[block.id] > 1:
            base = block.id
            block.id = f"{base}[{seen[base]}]"
            seen[base] += 1

