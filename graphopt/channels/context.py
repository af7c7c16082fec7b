"""What the per-operator channel rules read and write while the graph is walked once in order."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import onnx
from onnx import numpy_helper

from graphopt.blocks import node_label
from graphopt.channels.layout import GroupTable, Layout, Segment, layout_size
from graphopt.shapes import Shape


class Channels(NamedTuple):
    """A tensor's channel axis (non-negative) and the layout of the channels along it."""

    axis: int
    layout: Layout


@dataclass(frozen=True)
class Edit:
    """One change the prune pass makes, positioned by the kept channels of the layouts it names.

    kind: "out" / "in" / "param" slice constant input `input` of the node along `axis` (a producer's output rows,
    a consumer's input columns, a per-channel operand); "group" sets a depthwise conv's group count; "split" sets a
    Split's sizes (one layout per output); "shape" sets entry `axis` of a Reshape's constant target shape.
    """

    node: str  # the node's first output: unique in the graph and kept by passes that do not touch the node
    kind: str
    layouts: tuple[Layout, ...]
    input: int = 0
    axis: int = 0


def constant_values(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Tensors whose values are in the graph: initializers, Constant-node outputs, and Identity copies of either
    (TorchScript exports deduplicated weights as Identity nodes)."""
    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = node.attribute[0].t
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


@dataclass
class Context:
    graph: onnx.GraphProto
    shapes: dict[str, Shape | None]
    consts: set[str]
    table: GroupTable = field(default_factory=GroupTable)
    tensors: dict[str, Channels] = field(default_factory=dict)
    edits: list[Edit] = field(default_factory=list)
    producers: dict[int, list[str]] = field(default_factory=dict)  # group -> labels of nodes making its channels
    labels: dict[str, str] = field(default_factory=dict)  # first output -> node label

    def __post_init__(self):
        self._values = constant_values(self.graph)
        for index, node in enumerate(self.graph.node):
            if node.output:
                self.labels[node.output[0]] = node_label(node, index)

    def channels(self, name: str) -> Channels | None:
        return self.tensors.get(name) if name else None

    def value(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant-node output (None for computed constants and runtime tensors)."""
        tensor = self._values.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def shape(self, name: str) -> Shape | None:
        value = self._values.get(name)
        return tuple(value.dims) if value is not None else self.shapes.get(name)

    def produce(self, node: onnx.NodeProto, size: int, blocked: str | None = None) -> Layout:
        """A new group of `size` channels made by `node`."""
        group = self.table.new(size, blocked)
        self.producers[group] = [self.labels[node.output[0]]]
        return (Segment(group, 0, size),)

    def untraced(self, size: int, reason: str) -> Layout:
        """Channels whose origin is not traced (a graph input, an op without a rule): they stay whole."""
        return (Segment(self.table.new(size, reason), 0, size),)

    def block(self, node: onnx.NodeProto, reason: str) -> None:
        """Every group read by `node` must stay whole."""
        for name in node.input:
            carried = self.channels(name)
            if carried:
                self.table.block(carried.layout, f"{reason} ({self.labels.get(node.output[0], node.op_type)})")

    def slice(self, node: onnx.NodeProto, index: int, axis: int, layout: Layout, kind: str) -> None:
        """Record that constant input `index` of `node` loses the channels of `layout` along `axis`."""
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            return
        value = self.value(name)
        if value is None or axis >= value.ndim or value.shape[axis] != layout_size(layout):
            self.table.block(layout, f"{node.op_type} {self.labels[node.output[0]]} reads a computed constant")
            return
        self.edits.append(Edit(node.output[0], kind, (layout,), index, axis))

    def edit(self, node: onnx.NodeProto, kind: str, layouts: tuple[Layout, ...], index: int = 0,
             axis: int = 0) -> None:
        self.edits.append(Edit(node.output[0], kind, layouts, index, axis))

    def carry(self, node: onnx.NodeProto, axis: int, layout: Layout) -> None:
        """`node`'s first output carries `layout` along `axis`."""
        self.tensors[node.output[0]] = Channels(axis, layout)

    def attribute(self, node: onnx.NodeProto, name: str, default=None):
        for attr in node.attribute:
            if attr.name == name:
                return onnx.helper.get_attribute_value(attr)
        return default
