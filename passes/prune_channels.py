"""PruneChannels: remove channels of channel groups everywhere they appear (weights, biases, per-channel
constants, depthwise group counts, Split sizes, Reshape targets)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from graphopt.channels import ChannelAnalysis
from graphopt.channels.context import Edit
from graphopt.errors import GraphoptError
from graphopt.passes.base import GraphPass, PassResult, apply_passes
from graphopt.passes.constants import constant_value


class PruneChannels(GraphPass):
    """Keep, for each named group, only the channels listed in `keep` (indices into the group's channels).

    Precondition: the graph is the one `analysis` was made from, or one whose nodes the analysis names are unchanged
    (the edits find nodes by their first output). Postcondition: every tensor that carried a pruned group is
    narrower along its channel axis by exactly the channels removed; graph outputs are never touched (groups that
    reach them are not prunable).
    """

    def __init__(self, analysis: ChannelAnalysis, keep: dict[str, np.ndarray]):
        for group_id, kept in keep.items():
            group = analysis.group(group_id)
            if not group.prunable:
                raise GraphoptError(f"channel group '{group_id}' cannot be pruned: {group.reason}")
            kept = np.asarray(kept)
            if kept.size == 0 or kept.min() < 0 or kept.max() >= group.size or len(set(kept.tolist())) != kept.size:
                raise GraphoptError(f"channel group '{group_id}': keep 1 to {group.size} distinct channel indices")
        self.analysis = analysis
        self.keep = {g: np.sort(np.asarray(k, dtype=np.int64)) for g, k in keep.items()}

    def rewrite(self, graph: gs.Graph) -> PassResult:
        if not self.keep:
            return PassResult(graph, changed=False)
        nodes = {node.outputs[0].name: node for node in graph.nodes if node.outputs}
        missing = sorted({e.node for e in self.analysis.edits} - set(nodes))
        if missing:
            raise GraphoptError(f"PruneChannels: the graph is not the one the channel groups were found in "
                                f"(no node makes {missing[0]})")
        slices: dict[tuple[str, int], list[Edit]] = defaultdict(list)
        for edit in self.analysis.edits:
            if edit.kind in ("out", "in", "param"):
                slices[(edit.node, edit.input)].append(edit)
            else:
                _ADJUST[edit.kind](nodes[edit.node], edit, self._positions)
        for (name, index), edits in slices.items():
            _slice_input(nodes[name], index, [(e.axis, self._positions(e.layouts[0])) for e in edits])
        self._narrow_tensors(graph)
        return PassResult(graph, changed=True)

    def _positions(self, layout) -> np.ndarray:
        return self.analysis.positions(layout, self.keep)

    def _narrow_tensors(self, graph: gs.Graph) -> None:
        """Shapes graphsurgeon will export as value_info: the channel axis of every traced tensor shrinks."""
        tensors = graph.tensors()
        for name, carried in self.analysis.tensors.items():
            tensor = tensors.get(name)
            if isinstance(tensor, gs.Variable) and tensor.shape is not None and carried.axis < len(tensor.shape):
                shape = list(tensor.shape)
                shape[carried.axis] = len(self._positions(carried.layout))
                tensor.shape = shape


def _slice_input(node: gs.Node, index: int, cuts: list[tuple[int, np.ndarray]]) -> None:
    """Replace constant input `index` of `node` by a copy cut along each axis (a copy: others may share it)."""
    original = value = constant_value(node.inputs[index], "PruneChannels")
    for axis, positions in cuts:
        if len(positions) != value.shape[axis]:
            value = np.take(value, positions, axis=axis)
    if value is not original:
        node.inputs[index] = gs.Constant(f"{node.inputs[index].name}_pruned_{node.outputs[0].name}",
                                         np.ascontiguousarray(value))


def _set_group(node: gs.Node, edit: Edit, positions) -> None:
    node.attrs["group"] = int(len(positions(edit.layouts[0])))


def _set_split(node: gs.Node, edit: Edit, positions) -> None:
    sizes = np.array([len(positions(layout)) for layout in edit.layouts], dtype=np.int64)
    if "split" in node.attrs:
        node.attrs["split"] = sizes.tolist()
        return
    node.attrs.pop("num_outputs", None)
    split = gs.Constant(f"{node.outputs[0].name}_split_pruned", sizes)
    if len(node.inputs) > 1:
        node.inputs[1] = split
    else:
        node.inputs.append(split)


def _set_shape(node: gs.Node, edit: Edit, positions) -> None:
    shape = np.array(constant_value(node.inputs[edit.input], "PruneChannels"), dtype=np.int64)
    shape[edit.axis] = len(positions(edit.layouts[0]))
    node.inputs[edit.input] = gs.Constant(f"{node.outputs[0].name}_shape_pruned", shape)


_ADJUST = {"group": _set_group, "split": _set_split, "shape": _set_shape}


def prune_channels(model: onnx.ModelProto, analysis: ChannelAnalysis, keep: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A new model keeping only the channels in `keep` of each named group (the input model is not modified)."""
    pruned, _ = apply_passes(model, [PruneChannels(analysis, keep)])
    return pruned
