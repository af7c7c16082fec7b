"""Channel dependency groups of an ONNX graph: which channels must be pruned together, and which must stay.

The graph is walked once in topological order; each node's rule (graphopt/channels/rules.py) traces channels from
the convolutions and matrix products that make them through everything that carries them to the ones that consume
them. Groups that a rule could not fully explain, and groups that reach a graph output, are reported with the
reason and never pruned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from graphopt.blocks import constant_tensors
from graphopt.channels.context import Channels, Context, Edit
from graphopt.channels.layout import GroupTable, Layout, kept_positions
from graphopt.channels.rules import apply_rule
from graphopt.scopes import common_module, module_path
from graphopt.shapes import Shape, infer_shapes


@dataclass
class ChannelGroup:
    """Channels that go together: made by `producers`, tied through residual adds, depthwise convs and the like."""

    id: str
    size: int
    prunable: bool
    reason: str | None  # why the group must stay whole
    producers: list[str]  # labels of the nodes whose output channels these are
    root: int  # the group's id in the analysis table

    def to_dict(self) -> dict:
        return {"id": self.id, "size": self.size, "prunable": self.prunable, "reason": self.reason,
                "producers": self.producers}


@dataclass
class ChannelAnalysis:
    groups: list[ChannelGroup]
    table: GroupTable
    tensors: dict[str, Channels]
    edits: list[Edit]

    def group(self, group_id: str) -> ChannelGroup:
        for group in self.groups:
            if group.id == group_id:
                return group
        known = ", ".join(g.id for g in self.groups if g.prunable) or "none"
        from graphopt.errors import GraphoptError
        raise GraphoptError(f"unknown channel group '{group_id}' (prunable groups: {known})")

    @property
    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def positions(self, layout: Layout, keep: dict[str, np.ndarray]) -> np.ndarray:
        """Positions along a tensor's channel axis that survive when each group id in `keep` keeps those channels."""
        return kept_positions(layout, {self.group(g).root: np.sort(k) for g, k in keep.items()}, self.table)


def find_channel_groups(model: onnx.ModelProto, shapes: dict[str, Shape | None] | None = None,
                        fixed: list[str] = ()) -> ChannelAnalysis:
    """Every channel group of `model`, in the order its producers appear. Groups in the graph outputs, or in the
    `fixed` tensors (the features recovery matches), are kept whole."""
    graph = model.graph
    shapes = shapes if shapes is not None else infer_shapes(model)
    consts = constant_tensors(graph)
    ctx = Context(graph, shapes, consts)
    initializers = {t.name for t in graph.initializer}
    for value in graph.input:
        shape = shapes.get(value.name)
        if value.name not in initializers and shape and len(shape) >= 2:
            ctx.tensors[value.name] = Channels(1, ctx.untraced(shape[1], "graph input"))
    for node in graph.node:
        if node.output and not all(name in consts for name in node.output):
            apply_rule(ctx, node)
    for name, reason in [*((v.name, "reaches the graph output") for v in graph.output),
                         *((name, "makes the features recovery matches,") for name in fixed)]:
        carried = ctx.channels(name)
        if carried:
            ctx.table.block(carried.layout, f"{reason} {name}")
    return ChannelAnalysis(_groups(ctx, model), ctx.table, ctx.tensors, ctx.edits)


def _groups(ctx: Context, model: onnx.ModelProto) -> list[ChannelGroup]:
    members: dict[int, list[str]] = {}
    for group, labels in ctx.producers.items():
        members.setdefault(ctx.table.find(group), []).extend(labels)
    nodes = {ctx.labels[n.output[0]]: n for n in model.graph.node if n.output}
    groups: list[ChannelGroup] = []
    seen: set[str] = set()
    for root, labels in members.items():
        name = _unique(_name([nodes[label] for label in labels]) or labels[0], seen)
        reason = ctx.table.reason(root)
        groups.append(ChannelGroup(name, ctx.table.sizes[root], reason is None, reason, labels, root))
    return groups


def _name(producers: list[onnx.NodeProto]) -> str | None:
    """The innermost module holding every producer, else the outermost modules they sit in (`conv1+layer1`)."""
    outermost = dict.fromkeys(path[0] for path in map(module_path, producers) if path)
    return common_module(producers) or "+".join(outermost) or None


def _unique(name: str, seen: set[str]) -> str:
    candidate, count = name, 1
    while candidate in seen:
        count += 1
        candidate = f"{name}#{count}"
    seen.add(candidate)
    return candidate
