"""Which channels of a group matter least: the order in which they are given up.

L1 norm (Li et al., "Pruning Filters for Efficient ConvNets"): a channel's importance is the L1 norm of the
weights that make it. A group made by several producers (a residual stage, an SE gate with its expansion) sums
their norms, each producer's divided by its mean so no producer outweighs the others by scale alone.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from graphopt.channels.analysis import ChannelAnalysis
from graphopt.channels.context import Channels, constant_values
from graphopt.channels.layout import layout_size
from graphopt.macs import node_macs
from graphopt.shapes import Shape


def l1_order(model: onnx.ModelProto, analysis: ChannelAnalysis) -> dict[str, np.ndarray]:
    """For each prunable group, its channel indices from most to least important by L1 norm."""
    values = constant_values(model.graph)
    nodes = {n.output[0]: n for n in model.graph.node if n.output}
    scores = {g.root: np.zeros(g.size) for g in analysis.prunable}
    for edit in analysis.edits:
        root = analysis.table.find(edit.layouts[0][0].group)
        if edit.kind != "out" or edit.input != 1 or root not in scores:
            continue
        weight = numpy_helper.to_array(values[nodes[edit.node].input[1]])
        norms = np.abs(np.moveaxis(weight, edit.axis, 0)).reshape(weight.shape[edit.axis], -1).sum(axis=1)
        scores[root] += norms / max(float(norms.mean()), 1e-12)
    return {g.id: np.argsort(-scores[g.root], kind="stable") for g in analysis.prunable}


def mac_terms(model: onnx.ModelProto, shapes: dict[str, Shape | None], analysis: ChannelAnalysis
              ) -> tuple[list[tuple[int, Channels | None, Channels | None]], int]:
    """(MACs of each weighted node with the channels it makes and the channels its MACs scale with, total MACs).
    A weighted node's MACs scale with the share of its output channels kept, and of its input channels unless it
    is a grouped (depthwise) convolution, whose input channels are its output channels."""
    terms, total = [], 0
    for node in model.graph.node:
        macs = node_macs(node, shapes)
        total += macs
        if macs:
            grouped = any(a.name == "group" and a.i > 1 for a in node.attribute)
            terms.append((macs, analysis.tensors.get(node.output[0]),
                          None if grouped else analysis.tensors.get(node.input[0])))
    return terms, total


def removed_macs_share(model: onnx.ModelProto, shapes: dict[str, Shape | None], analysis: ChannelAnalysis,
                       keep: dict[str, np.ndarray]) -> float:
    """The share of the model's multiply-adds that keeping only `keep` of each group removes."""
    terms, total = mac_terms(model, shapes, analysis)
    removed = sum(macs * (1 - _kept_share(analysis, made, keep) * _kept_share(analysis, read, keep))
                  for macs, made, read in terms)
    return removed / max(total, 1)


def _kept_share(analysis: ChannelAnalysis, carried: Channels | None, keep: dict[str, np.ndarray]) -> float:
    if carried is None:
        return 1.0
    return len(analysis.positions(carried.layout, keep)) / layout_size(carried.layout)
