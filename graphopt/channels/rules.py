"""Per-operator channel rules, one function per kind of operator (after Torch-Pruning's pruner/function.py, on ONNX).

A rule reads the channels of a node's inputs and says what its outputs carry, which constants lose channels when a
group is pruned, and which groups must stay whole. An operator without a rule keeps every group it reads whole.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from graphopt.channels.context import Context
from graphopt.channels.layout import Layout, layout_size, sub_layout

Rule = Callable[[Context, onnx.NodeProto], None]
RULES: dict[str, Rule] = {}

# Ops that neither read channels nor make a tensor whose channels matter (shape queries adapt at runtime).
SHAPE_QUERIES = ("Shape", "Size")
ELEMENTWISE_UNARY = ("Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
                     "Erf", "Gelu", "Softplus", "Softsign", "Mish", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal",
                     "Floor", "Ceil", "Round", "Sign", "Identity", "Dropout", "Cast", "Clip", "ThresholdedRelu")
SPATIAL_POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool", "Resize",
                 "Upsample")
ELEMENTWISE_BINARY = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu")
REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceProd",
              "ReduceSumSquare", "ReduceLogSumExp")
RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def rule(*ops: str) -> Callable[[Rule], Rule]:
    def register(function: Rule) -> Rule:
        for op in ops:
            RULES[op] = function
        return function
    return register


def apply_rule(ctx: Context, node: onnx.NodeProto) -> None:
    if node.op_type in SHAPE_QUERIES or not any(ctx.channels(name) for name in node.input):
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            RULES[node.op_type](ctx, node)  # producers make groups from untraced inputs too
        return
    RULES.get(node.op_type, _opaque)(ctx, node)


def _opaque(ctx: Context, node: onnx.NodeProto) -> None:
    ctx.block(node, f"read by {node.op_type}, which has no channel rule")


def _label(ctx: Context, node: onnx.NodeProto) -> str:
    return ctx.labels[node.output[0]]


@rule("Conv")
def conv(ctx: Context, node: onnx.NodeProto) -> None:
    weight = ctx.value(node.input[1])
    source = ctx.channels(node.input[0])
    if weight is None or (source and source.axis != 1):
        ctx.block(node, "convolution with a computed weight")
        return
    groups = ctx.attribute(node, "group", 1)
    cout, cin = weight.shape[0], weight.shape[1] * groups
    if groups == 1:
        if source:
            ctx.slice(node, 1, 1, source.layout, "in")
        out = ctx.produce(node, cout)
        ctx.slice(node, 1, 0, out, "out")
        ctx.slice(node, 2, 0, out, "out")
    elif groups == cin == cout and source:  # depthwise: output channel i is made from input channel i alone
        out = source.layout
        ctx.slice(node, 1, 0, out, "param")
        ctx.slice(node, 2, 0, out, "param")
        ctx.edit(node, "group", (out,))
    else:
        reason = f"grouped convolution {_label(ctx, node)} (group={groups})"
        if source:
            ctx.table.block(source.layout, reason)
        out = ctx.produce(node, cout, blocked=reason)
    ctx.carry(node, 1, out)


@rule("Gemm")
def gemm(ctx: Context, node: onnx.NodeProto) -> None:
    weight = ctx.value(node.input[1])
    source = ctx.channels(node.input[0])
    trans_b = ctx.attribute(node, "transB", 0)
    if weight is None or ctx.attribute(node, "transA", 0) or (source and source.axis != 1):
        ctx.block(node, "Gemm with a computed or transposed operand")
        return
    if source:
        ctx.slice(node, 1, 1 if trans_b else 0, source.layout, "in")
    out = ctx.produce(node, weight.shape[0 if trans_b else 1])
    ctx.slice(node, 1, 0 if trans_b else 1, out, "out")
    bias = ctx.shape(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if bias and bias[-1] == layout_size(out) and bias[-1] > 1:
        ctx.slice(node, 2, len(bias) - 1, out, "out")
    ctx.carry(node, 1, out)


@rule("MatMul")
def matmul(ctx: Context, node: onnx.NodeProto) -> None:
    weight = ctx.value(node.input[1])
    source = ctx.channels(node.input[0])
    rank = len(ctx.shape(node.input[0]) or ())
    if weight is None or weight.ndim != 2 or ctx.channels(node.input[1]) or (source and source.axis != rank - 1):
        ctx.block(node, "MatMul of two runtime tensors")
        return
    if source:
        ctx.slice(node, 1, 0, source.layout, "in")
    out = ctx.produce(node, weight.shape[1])
    ctx.slice(node, 1, 1, out, "out")
    ctx.carry(node, rank - 1 if rank else 1, out)


@rule(*ELEMENTWISE_UNARY)
def unary(ctx: Context, node: onnx.NodeProto) -> None:
    ctx.carry(node, *ctx.channels(node.input[0]))


@rule(*SPATIAL_POOLS)
def spatial(ctx: Context, node: onnx.NodeProto) -> None:
    """Ops over the spatial axes of an NCHW tensor; Resize given explicit output sizes could change channels."""
    source = ctx.channels(node.input[0])
    if source.axis != 1 or (node.op_type == "Resize" and len(node.input) > 3 and node.input[3]):
        ctx.block(node, f"{node.op_type} over the channel axis")
        return
    ctx.carry(node, *source)


@rule("BatchNormalization", "InstanceNormalization")
def per_channel_norm(ctx: Context, node: onnx.NodeProto) -> None:
    source = ctx.channels(node.input[0])
    if source.axis != 1:
        ctx.block(node, "normalisation over another axis")
        return
    for index in range(1, len(node.input)):
        ctx.slice(node, index, 0, source.layout, "param")
    ctx.carry(node, *source)


@rule(*ELEMENTWISE_BINARY)
def elementwise(ctx: Context, node: onnx.NodeProto) -> None:
    """Broadcasting ops tie the channels of every traced operand; constants that vary along the channel axis lose
    the pruned entries; a runtime operand whose channels are not traced keeps everything whole."""
    out_shape = ctx.shape(node.output[0])
    traced = [(name, ctx.channels(name)) for name in node.input if ctx.channels(name)]
    if out_shape is None:
        ctx.block(node, "elementwise op of unknown shape")
        return
    rank = len(out_shape)
    axes = {c.axis + rank - len(ctx.shape(name) or out_shape) for name, c in traced}
    if len(axes) != 1:
        ctx.block(node, "operands with channels on different axes")
        return
    axis, layout = axes.pop(), traced[0][1].layout
    for _, carried in traced[1:]:
        ctx.table.tie(layout, carried.layout, _label(ctx, node))
    for index, name in enumerate(node.input):
        shape = ctx.shape(name)
        if not name or ctx.channels(name):
            continue
        aligned = axis - (rank - len(shape)) if shape is not None else -1
        if shape is not None and (aligned < 0 or shape[aligned] == 1):
            continue  # broadcast along the channel axis: the same for every channel
        if name in ctx.consts:
            ctx.slice(node, index, aligned, layout, "param")
        else:
            ctx.block(node, "combined with a tensor whose channels are not traced")
            return
    ctx.carry(node, axis, layout)


@rule(*REDUCTIONS)
def reduction(ctx: Context, node: onnx.NodeProto) -> None:
    source = ctx.channels(node.input[0])
    rank = len(ctx.shape(node.input[0]) or ())
    axes = ctx.attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = ctx.value(node.input[1])
        axes = None if value is None else value.tolist()
    if not axes or not rank:
        ctx.block(node, "reduction over every axis, or over axes not known")
        return
    axes = [a % rank for a in axes]
    if source.axis in axes:
        ctx.block(node, "reduction over the channel axis")
        return
    keep = ctx.attribute(node, "keepdims", 1)
    ctx.carry(node, source.axis if keep else source.axis - sum(a < source.axis for a in axes), source.layout)


@rule(*RESHAPES)
def reshape(ctx: Context, node: onnx.NodeProto) -> None:
    """A reshape keeps the channels when the channel axis survives intact: the same count of elements before it,
    and the same length. A Reshape whose constant target shape spells out the channel count gets it updated."""
    source = ctx.channels(node.input[0])
    before, after = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    if before is None or after is None:
        ctx.block(node, "reshape of unknown shapes")
        return
    leading = int(np.prod(before[:source.axis]))
    target = next((b for b in range(len(after)) if int(np.prod(after[:b])) == leading
                   and after[b] == before[source.axis]), None)
    if target is None:
        ctx.block(node, "reshape that splits or merges the channel axis")
        return
    if node.op_type == "Reshape":
        spelled = ctx.value(node.input[1])
        if spelled is None and node.input[1] not in ctx.consts:
            pass  # a shape computed at runtime from the pruned tensor follows it
        elif spelled is None or len(spelled) != len(after):
            ctx.block(node, "reshape to a computed constant shape")
            return
        elif spelled[target] == after[target]:
            ctx.edit(node, "shape", (source.layout,), 1, target)
    ctx.carry(node, target, source.layout)


@rule("Transpose")
def transpose(ctx: Context, node: onnx.NodeProto) -> None:
    source = ctx.channels(node.input[0])
    rank = len(ctx.shape(node.input[0]) or ())
    perm = ctx.attribute(node, "perm") or list(reversed(range(rank)))
    ctx.carry(node, list(perm).index(source.axis), source.layout)


@rule("Concat")
def concat(ctx: Context, node: onnx.NodeProto) -> None:
    out_shape = ctx.shape(node.output[0])
    traced = [ctx.channels(name) for name in node.input if ctx.channels(name)]
    axis = ctx.attribute(node, "axis") % len(out_shape) if out_shape else None
    if axis is None or any(c.axis != traced[0].axis for c in traced):
        ctx.block(node, "concatenation of unknown shape")
        return
    if axis != traced[0].axis:
        elementwise(ctx, node) if len(traced) == len(node.input) else ctx.block(node, "concatenated with a tensor "
                                                                                      "whose channels are not traced")
        return
    layout: Layout = ()
    for name in node.input:
        carried = ctx.channels(name)
        layout += carried.layout if carried else ctx.untraced(ctx.shape(name)[axis], "concatenated with channels "
                                                                                     "that are not traced")
    ctx.carry(node, axis, layout)


@rule("Split")
def split(ctx: Context, node: onnx.NodeProto) -> None:
    source = ctx.channels(node.input[0])
    shape = ctx.shape(node.input[0])
    axis = ctx.attribute(node, "axis", 0) % len(shape) if shape else None
    sizes = [ctx.shape(name)[axis] if ctx.shape(name) else None for name in node.output] if shape else [None]
    if axis is None or None in sizes:
        ctx.block(node, "split of unknown shape")
        return
    if axis != source.axis:
        for name in node.output:
            ctx.tensors[name] = source
        return
    layouts, offset = [], 0
    for name, size in zip(node.output, sizes):
        layouts.append(sub_layout(source.layout, offset, offset + size))
        ctx.tensors[name] = type(source)(axis, layouts[-1])
        offset += size
    ctx.edit(node, "split", tuple(layouts))


@rule("Slice")
def slice_(ctx: Context, node: onnx.NodeProto) -> None:
    source = ctx.channels(node.input[0])
    rank = len(ctx.shape(node.input[0]) or ())
    starts = ctx.value(node.input[1]) if len(node.input) > 1 else None
    axes = ctx.value(node.input[3]) if len(node.input) > 3 and node.input[3] else (
        None if starts is None else np.arange(len(starts)))
    if axes is None or not rank or source.axis in [int(a) % rank for a in axes]:
        ctx.block(node, "slice of the channel axis, or of axes not known")
        return
    ctx.carry(node, *source)


@rule("Softmax", "LogSoftmax", "Hardmax", "LayerNormalization")
def along_axis(ctx: Context, node: onnx.NodeProto) -> None:
    """Ops that mix values along one axis (LayerNormalization: that axis and all after it)."""
    source = ctx.channels(node.input[0])
    rank = len(ctx.shape(node.input[0]) or ())
    axis = ctx.attribute(node, "axis", -1) % rank if rank else None
    mixed = axis is None or (source.axis >= axis if node.op_type == "LayerNormalization" else source.axis == axis)
    if mixed:
        ctx.block(node, f"{node.op_type} mixes the channels")
        return
    ctx.carry(node, *source)


@rule("Pad")
def pad(ctx: Context, node: onnx.NodeProto) -> None:
    """Padding that leaves the channel axis as long as it was (TF-style "same" padding computes its pads from
    shapes, so the shapes are what tell)."""
    source = ctx.channels(node.input[0])
    before, after = ctx.shape(node.input[0]), ctx.shape(node.output[0])
    if before is None or after is None or before[source.axis] != after[source.axis]:
        ctx.block(node, "padding of the channel axis, or of unknown shape")
        return
    ctx.carry(node, *source)
