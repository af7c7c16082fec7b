"""Plans: sets of actions applied to the original model by the methods' passes in one fixed order.

Channels are pruned first, while every node the channel analysis names is still in the graph, then blocks are
dropped (DropBlocks finds blocks by tensor names, which pruning keeps). A plan holds at most one level per channel
group (the deepest chosen), and never both a block and a channel cut made only inside it.
"""
from __future__ import annotations

import numpy as np
import onnx

from graphopt.blocks import Block, node_label
from graphopt.channels import ChannelAnalysis
from graphopt.errors import GraphoptError
from graphopt.methods.action import Action
from graphopt.passes import DropBlocks, PruneChannels, apply_passes, select_blocks
from graphopt.runtime.inputs import runtime_inputs


class Planner:
    """Applies sets of actions to `model`. `orders` ranks each channel group's channels, most important first."""

    def __init__(self, model: onnx.ModelProto, blocks: list[Block], channels: ChannelAnalysis | None = None,
                 orders: dict[str, np.ndarray] | None = None):
        self.model, self.blocks, self.channels, self.orders = model, blocks, channels, orders or {}

    def normalise(self, actions: list[Action]) -> list[Action]:
        """The plan the actions make, read in order (best first): blocks in graph order, then each channel group
        once at its deepest level. A block and a channel cut made only inside it exclude each other, and the one
        that comes first wins: a ranking that put the cheaper channel cut first keeps it rather than let a later
        block drop make it void."""
        dropped: set[str] = set()
        inside: set[str] = set()
        deepest: dict[str, Action] = {}
        for action in actions:
            if action.method == "blocks":
                block = next(b for b in self.blocks if b.id == action.target)
                if not any(self._made_inside(group, set(block.nodes)) for group in deepest):
                    dropped.add(block.id)
                    inside.update(block.nodes)
            elif not self._made_inside(action.target, inside):
                if action.target not in deepest or action.keep < deepest[action.target].keep:
                    deepest[action.target] = action
        blocks = [Action("blocks", b.id, macs_share=b.macs_share) for b in self.blocks if b.id in dropped]
        return blocks + sorted(deepest.values(), key=lambda a: a.target)

    def apply(self, actions: list[Action]) -> onnx.ModelProto:
        """A new model with the plan of `actions` applied (the original is not modified)."""
        plan = self.normalise(actions)
        if not plan:
            raise GraphoptError("no cut given")
        keep = self.keep(plan)
        passes = [PruneChannels(self.channels, keep)] if keep else []
        dropped = [a.target for a in plan if a.method == "blocks"]
        if dropped:
            passes.append(DropBlocks(select_blocks(self.blocks, dropped)))
        return apply_passes(self.model, passes)[0]

    def keep(self, actions: list[Action]) -> dict[str, np.ndarray]:
        """The channels each pruned group keeps under the plan of `actions`."""
        return {a.target: self.orders[a.target][:a.keep] for a in self.normalise(actions) if a.method == "filters"}

    def cuts(self, actions: list[Action]) -> list[str]:
        """Tensors where recovery's student may start, latest first: where the earliest cut begins (a dropped
        block's input, or the input of the first node whose channels are pruned), the inputs of the blocks wholly
        before it, then the graph input. A later start trains less; an earlier one is needed when nothing trainable
        lies between the first change and the features."""
        index = {node_label(n, i): i for i, n in enumerate(self.model.graph.node)}
        first, start = min(self._start(a, index) for a in self.normalise(actions))
        earlier = [b.skip for b in self.blocks if index[b.join] < first][::-1]
        return list(dict.fromkeys([start, *earlier, runtime_inputs(self.model)[0].name]))

    def _start(self, action: Action, index: dict[str, int]) -> tuple[int, str]:
        """(index of the first node the action changes, the tensor that node reads)."""
        if action.method == "blocks":
            block = next(b for b in self.blocks if b.id == action.target)
            return min(index[label] for label in [*block.nodes, block.join]), block.skip
        first = min(index[label] for label in self.channels.group(action.target).producers)
        return first, self.model.graph.node[first].input[0]

    def _made_inside(self, group_id: str, inside: set[str]) -> bool:
        return bool(inside) and set(self.channels.group(group_id).producers) <= inside
