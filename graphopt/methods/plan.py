"""Plans: sets of actions applied to the original model by the methods' passes in one fixed order.

Channels are pruned first, while every node the channel analysis names is still in the graph; then nodes are split
through fewer bases (of their weights as pruned: "double pruning"); then blocks are dropped (DropBlocks finds blocks
by tensor names, which both keep). A plan holds at most one level per channel group or split node (the deepest
chosen), and never both a dropped block and a cut made only inside it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import onnx

from graphopt.blocks import Block, node_label
from graphopt.channels import ChannelAnalysis
from graphopt.errors import GraphoptError
from graphopt.methods.action import Action
from graphopt.passes import Basis, DecomposeConv, DropBlocks, PruneChannels, apply_passes, select_blocks
from graphopt.runtime.inputs import runtime_inputs


class Planner:
    """Applies sets of actions to `model`. `orders` ranks each channel group's channels, most important first;
    `bases` holds, per node the basis method may split, how: its output basis found on data and the order its
    bases are given up in (the rank is the action's); a node not in it is split on its weight's SVD."""

    def __init__(self, model: onnx.ModelProto, blocks: list[Block], channels: ChannelAnalysis | None = None,
                 orders: dict[str, np.ndarray] | None = None, bases: dict[str, Basis] | None = None):
        self.model, self.blocks, self.channels, self.orders = model, blocks, channels, orders or {}
        self.bases = bases or {}
        self.labels = {n.output[0]: node_label(n, i) for i, n in enumerate(model.graph.node) if n.output}

    def normalise(self, actions: list[Action]) -> list[Action]:
        """The plan the actions make: blocks in graph order, then each channel group and each split node once at
        its deepest level. A dropped block is the deepest cut of everything inside it: a channel or basis cut made
        only inside a dropped block goes, whatever the order (keeping the inner cut instead would leave the block
        unusable, and a search that needs more saving falls through to worse cuts, such as residual streams)."""
        dropped: set[str] = set()
        inside: set[str] = set()
        deepest: dict[tuple[str, str], Action] = {}
        for action in actions:
            if action.method == "blocks":
                block = self._block(action.target)
                dropped.add(block.id)
                inside.update(block.nodes)
            else:
                key = (action.method, action.target)
                if key not in deepest or action.keep < deepest[key].keep:
                    deepest[key] = action
        blocks = [Action("blocks", b.id, macs_share=b.macs_share) for b in self.blocks if b.id in dropped]
        cuts = [a for a in deepest.values() if not (inside and self._made_by(a) <= inside)]
        return blocks + sorted(cuts, key=lambda a: (a.method != "filters", a.target))

    def apply(self, actions: list[Action],
              refit: Callable[[onnx.ModelProto, dict[str, np.ndarray]], onnx.ModelProto] | None = None
              ) -> onnx.ModelProto:
        """A new model with the plan of `actions` applied (the original is not modified). `refit`, when given,
        re-solves the pruned model's consumers (from the channels each group keeps) before anything is split or
        dropped, while the consumers are still the nodes it was measured on."""
        plan = self.normalise(actions)
        if not plan:
            raise GraphoptError("no cut given")
        keep = self.keep(plan)
        model, passes = self.model, []
        if keep:
            pruning = PruneChannels(self.channels, keep)
            if refit is None:
                passes.append(pruning)  # one import and export of the graph for the whole plan
            else:
                model = refit(apply_passes(self.model, [pruning])[0], keep)
        bases = {a.target: self._basis(a, keep) for a in plan if a.method == "basis"}
        if bases:
            passes.append(DecomposeConv(bases))
        dropped = [a.target for a in plan if a.method == "blocks"]
        if dropped:
            passes.append(DropBlocks(select_blocks(self.blocks, dropped)))
        return apply_passes(model, passes)[0] if passes else model

    def keep(self, actions: list[Action]) -> dict[str, np.ndarray]:
        """The channels each pruned group keeps under the plan of `actions`."""
        return {a.target: self.orders[a.target][:a.keep] for a in self.normalise(actions) if a.method == "filters"}

    def _basis(self, action: Action, keep: dict[str, np.ndarray]) -> Basis:
        """The node's basis at the action's rank, unless pruning in the same plan changed its outputs: then the
        SVD of its pruned weight."""
        template = self.bases.get(action.target)
        roots = {self.channels.group(g).root for g in keep}
        pruned = bool(roots) and any(e.node == action.target and e.kind == "out" and
                                     self.channels.table.find(e.layouts[0][0].group) in roots
                                     for e in self.channels.edits)
        return Basis(action.keep) if template is None or pruned else replace(template, rank=action.keep)

    def cuts(self, actions: list[Action]) -> list[str]:
        """Tensors where recovery's student may start, latest first: where the earliest cut begins (a dropped
        block's input, or the input of the first node whose channels are pruned), the inputs of the blocks wholly
        before it, then the graph input. A later start trains less; an earlier one is needed when nothing trainable
        lies between the first change and the features."""
        index = {node_label(n, i): i for i, n in enumerate(self.model.graph.node)}
        first, start = min(self._start(a, index) for a in self.normalise(actions))
        earlier = [b.skip for b in self.blocks if index[b.join] < first][::-1]
        return list(dict.fromkeys([start, *earlier, runtime_inputs(self.model)[0].name]))

    def _last(self, action: Action, index: dict[str, int]) -> int:
        """Index of the last node the action changes (a block's join, a split node, a pruned group's last
        consumer)."""
        if action.method == "blocks":
            return index[self._block(action.target).join]
        if action.method == "basis":
            return index[self.labels[action.target]]
        root = self.channels.group(action.target).root
        return max(index[self.labels[e.node]] for e in self.channels.edits
                   if any(self.channels.table.find(s.group) == root for layout in e.layouts for s in layout))

    def _pruned_tensors(self, plan: list[Action]) -> set[str]:
        """Tensors whose channel count the plan's channel cuts change."""
        roots = {self.channels.group(a.target).root for a in plan if a.method == "filters"}
        if not roots:
            return set()
        return {name for name, channels in self.channels.tensors.items()
                if any(self.channels.table.find(s.group) in roots for s in channels.layout)}

    def _block(self, block_id: str) -> Block:
        return next(b for b in self.blocks if b.id == block_id)

    def _start(self, action: Action, index: dict[str, int]) -> tuple[int, str]:
        """(index of the first node the action changes, the tensor that node reads)."""
        if action.method == "blocks":
            block = self._block(action.target)
            return min(index[label] for label in [*block.nodes, block.join]), block.skip
        first = min(index[label] for label in self._made_by(action))
        return first, self.model.graph.node[first].input[0]

    def _made_by(self, action: Action) -> set[str]:
        """Labels of the nodes a channel or basis cut changes first (a channel group's producers; the split node)."""
        if action.method == "basis":
            return {self.labels[action.target]}
        return set(self.channels.group(action.target).producers)
