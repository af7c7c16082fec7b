"""Closed-form recovery for pruned channels: each consumer of a pruned group is re-solved by least squares so that,
from the channels it keeps, it reproduces what it computed from all of them (the teacher's activations).

A consumer computes y = W x (+ b) over input patches x. With Σ = E[x xᵀ] over the calibration images (a constant
1 appended when the consumer has a bias), the best weights on the kept patch entries K are
W' = W Σ[:, K] (Σ[K, K] + λI)⁻¹: they fold the removed channels' contribution, as far as the kept ones predict it,
into the kept weights and the bias (FSKD arXiv 1812.01839; AIMET's channel-pruning weight reconstruction). Σ does
not depend on which channels are kept, so it is gathered once per consumer for every candidate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch.nn import functional as F

from graphopt.channels import ChannelAnalysis
from graphopt.channels.context import constant_values
from graphopt.calibration.bridge.teacher import Teacher

POSITIONS_PER_IMAGE = 1024  # patches sampled per image and consumer: enough rows for the widest consumers
RIDGE = 1e-3  # λ relative to the mean diagonal of Σ[K, K]
CHUNK = 8  # images per teacher run: the activations of every consumer at once must fit in memory


@dataclass
class Consumer:
    """A node that reads pruned channels through a weight: its weight as a (outputs, patch entries) matrix."""

    node: str  # first output
    weight: np.ndarray  # (outputs, inputs x taps)
    bias: np.ndarray | None
    kernel: tuple[int, ...]  # a Conv's kernel shape; () for Gemm / MatMul
    transposed: bool  # the initializer stores (inputs, outputs): MatMul, Gemm without transB
    sigma: np.ndarray  # E[x xᵀ] over patches, with a trailing 1 when there is a bias


def consumer_statistics(original: onnx.ModelProto, analysis: ChannelAnalysis, images: torch.Tensor,
                        threads: int | None = None, seed: int = 0) -> dict[str, Consumer]:
    """Σ of every convolution / Gemm / MatMul that reads channels of a prunable group, from the teacher's
    activations on `images`."""
    prunable = {g.root for g in analysis.prunable}
    names = sorted({e.node for e in analysis.edits if e.kind == "in" and any(
        analysis.table.find(s.group) in prunable for s in e.layouts[0])})
    return patch_statistics(original, names, images, threads, seed)


def patch_statistics(original: onnx.ModelProto, names: list[str], images: torch.Tensor, threads: int | None = None,
                     seed: int = 0) -> dict[str, Consumer]:
    """Σ of the input patches of each node named (by first output) whose weight supports a refit, from the
    teacher's activations on `images`; nodes that do not (grouped convs, computed weights) are left out."""
    nodes = {n.output[0]: n for n in original.graph.node if n.output}
    values = constant_values(original.graph)
    consumers = {name: _consumer(nodes[name], values) for name in names}
    consumers = {name: c for name, c in consumers.items() if c is not None}
    teacher = Teacher(original, sorted({nodes[name].input[0] for name in consumers}), threads)
    generator = torch.Generator().manual_seed(seed)
    totals = {name: 0 for name in consumers}
    for start in range(0, len(images), CHUNK):
        acts = teacher(images[start:start + CHUNK])
        for name, consumer in consumers.items():
            patches = _patches(nodes[name], acts[nodes[name].input[0]], consumer, generator)
            consumer.sigma += (patches.T @ patches).double().numpy()
            totals[name] += len(patches)
    for name, consumer in consumers.items():
        consumer.sigma /= max(totals[name], 1)
    return consumers


def refit(pruned: onnx.ModelProto, analysis: ChannelAnalysis, keep: dict[str, np.ndarray],
          consumers: dict[str, Consumer]) -> onnx.ModelProto:
    """`pruned` (the original with `keep` applied) with every consumer of a pruned group re-solved. The solved
    weights go into new initializers of their own (the pruned ones may be shared with other nodes)."""
    model = onnx.ModelProto()
    model.CopyFrom(pruned)
    nodes = {n.output[0]: n for n in model.graph.node if n.output}
    pruned_roots = {analysis.group(g).root for g in keep}
    for edit in analysis.edits:
        consumer = consumers.get(edit.node)
        if edit.kind != "in" or consumer is None or edit.node not in nodes or not any(
                analysis.table.find(s.group) in pruned_roots for s in edit.layouts[0]):
            continue
        weight, bias = _solve(consumer, analysis.positions(edit.layouts[0], keep))
        made = analysis.tensors.get(edit.node)  # a consumer may also make pruned channels: keep its rows
        rows = analysis.positions(made.layout, keep) if made else np.arange(len(weight))
        node = nodes[edit.node]
        _replace(model, node, 1, weight[rows].T if consumer.transposed else weight[rows], "refit_weight")
        if bias is not None:
            _replace(model, node, 2, bias[rows], "refit_bias")
    used = {name for n in model.graph.node for name in n.input}
    kept_initializers = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_initializers)
    return model


def _consumer(node: onnx.NodeProto, values: dict[str, onnx.TensorProto]) -> Consumer | None:
    """The consumer's weight in (outputs, patch entries) form, or None where a refit is not supported."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    weight = numpy_helper.to_array(values[node.input[1]]) if node.input[1] in values else None
    if weight is None or attrs.get("group", 1) != 1 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    if node.op_type == "Conv" and weight.ndim != 4:
        return None
    if node.op_type == "Gemm" and attrs.get("transA", 0):
        return None
    bias = numpy_helper.to_array(values[node.input[2]]) if len(node.input) > 2 and node.input[2] in values else None
    transposed = node.op_type == "MatMul" or (node.op_type == "Gemm" and not attrs.get("transB", 0))
    matrix = weight.T if transposed else weight.reshape(weight.shape[0], -1)
    kernel = tuple(weight.shape[2:]) if node.op_type == "Conv" else ()
    if bias is not None and bias.shape != (matrix.shape[0],):
        bias = None
    entries = matrix.shape[1] + (bias is not None)
    return Consumer(node.output[0], matrix.astype(np.float64), None if bias is None else bias.astype(np.float64),
                    kernel, transposed, np.zeros((entries, entries)))


def _patches(node: onnx.NodeProto, x: torch.Tensor, consumer: Consumer, generator: torch.Generator) -> torch.Tensor:
    """Sampled input patches (rows) of the consumer, with a column of ones when it has a bias."""
    if node.op_type == "Conv":
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kernel, rank = consumer.kernel, x.dim() - 2
        pads = list(attrs.get("pads", [0] * 2 * rank))
        padding = [p for axis in reversed(range(rank)) for p in (pads[axis], pads[axis + rank])]
        cols = F.unfold(F.pad(x, padding), kernel, dilation=tuple(attrs.get("dilations", [1] * rank)),
                        stride=tuple(attrs.get("strides", [1] * rank)))
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    else:
        rows = x.reshape(-1, x.shape[-1])
    per_batch = POSITIONS_PER_IMAGE * max(1, len(x))
    if len(rows) > per_batch:
        rows = rows[torch.randperm(len(rows), generator=generator)[:per_batch]]
    if consumer.bias is not None:
        rows = torch.cat([rows, torch.ones(len(rows), 1)], dim=1)
    return rows.float()


def _solve(consumer: Consumer, kept_channels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """W' (outputs, kept entries) and b' for the kept input channels."""
    taps = int(np.prod(consumer.kernel))
    kept = (kept_channels[:, None] * taps + np.arange(taps)[None, :]).reshape(-1)
    full = consumer.weight
    if consumer.bias is not None:
        kept = np.append(kept, full.shape[1])
        full = np.concatenate([full, consumer.bias[:, None]], axis=1)
    sigma = consumer.sigma
    block = sigma[np.ix_(kept, kept)]
    ridge = RIDGE * float(np.mean(np.diag(block))) * np.eye(len(kept))
    solved = np.linalg.solve(block + ridge, (full @ sigma[:, kept]).T).T
    if consumer.bias is not None:
        return solved[:, :-1], solved[:, -1]
    return solved, None


def _replace(model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray, what: str) -> None:
    """Point input `index` of `node` at a new initializer holding `value`, shaped as the current input."""
    current = numpy_helper.to_array(constant_values(model.graph)[node.input[index]])
    name = f"{node.output[0]}_{what}"
    model.graph.initializer.append(numpy_helper.from_array(value.reshape(current.shape).astype(current.dtype), name))
    node.input[index] = name
