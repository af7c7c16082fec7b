"""Plans: sets of actions applied to the original model by the methods' passes in one fixed order.

Each method's passes go where its `applies_at` says (channels are pruned first, while every node the channel
analysis names is still in the graph; then nodes are split through fewer bases of their weights as pruned, "double
pruning"; then blocks are dropped, found by tensor names which both keep). A plan holds at most one level per
target (the deepest chosen), and never both a cut that removes nodes whole (a dropped block) and a cut made only
inside them.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from graphopt.blocks import Block, node_label
from graphopt.channels import ChannelAnalysis
from graphopt.errors import GraphoptError
from graphopt.methods.action import Action
from graphopt.methods.filters import kept_channels
from graphopt.methods.method import Build
from graphopt.methods.registry import method, methods
from graphopt.passes import Basis, apply_passes
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
        """The plan the actions make: each target once at its deepest level, in the registry's method order and
        each method's own order (blocks in graph order). A cut that removes nodes whole (a dropped block) is the
        deepest cut of everything inside: a cut made only inside it goes, whatever the order (keeping the inner
        cut instead would leave the block unusable, and a search that needs more saving falls through to worse
        cuts, such as residual streams)."""
        deepest: dict[tuple[str, str], Action] = {}
        for action in actions:
            key = (action.method, action.target)
            if key not in deepest or action.keep < deepest[key].keep:
                deepest[key] = action
        removed = set().union(*(method(a.method).removes(self, a) for a in deepest.values()))
        plan = []
        for entry in methods():
            mine = [a for a in deepest.values() if a.method == entry.name and (
                not removed or entry.removes(self, a) or not entry.first_nodes(self, a) <= removed)]
            plan += sorted((entry.canonical(self, a) for a in mine), key=lambda a: entry.plan_order(self, a))
        return plan

    def apply(self, actions: list[Action],
              refit: Callable[[onnx.ModelProto, dict[str, np.ndarray]], onnx.ModelProto] | None = None
              ) -> onnx.ModelProto:
        """A new model with the plan of `actions` applied (the original is not modified). `refit`, when given,
        re-solves the pruned model's consumers (from the channels each group keeps) before anything is split or
        dropped, while the consumers are still the nodes it was measured on."""
        plan = self.normalise(actions)
        if not plan:
            raise GraphoptError("no cut given")
        build = Build(self.model, plan, refit)
        for entry in sorted(methods(), key=lambda m: m.applies_at):
            mine = [a for a in plan if a.method == entry.name]
            if mine:
                entry.build(self, build, mine)
        return apply_passes(build.model, build.passes)[0] if build.passes else build.model

    def keep(self, actions: list[Action]) -> dict[str, np.ndarray]:
        """The channels each pruned group keeps under the plan of `actions`."""
        return kept_channels(self, self.normalise(actions))

    def pruned_outputs(self, plan: list[Action]) -> set[str]:
        """Outputs of the nodes whose output channels the plan's channel cuts change."""
        roots = {self.channels.group(g).root for g in kept_channels(self, plan)}
        if not roots:
            return set()
        return {e.node for e in self.channels.edits
                if e.kind == "out" and self.channels.table.find(e.layouts[0][0].group) in roots}

    def cuts(self, actions: list[Action]) -> list[str]:
        """Tensors where recovery's student may start, latest first: where the earliest cut begins (a dropped
        block's input, or the input of the first node whose channels are pruned), the inputs of the blocks wholly
        before it, then the graph input. A later start trains less; an earlier one is needed when nothing trainable
        lies between the first change and the features."""
        index = {node_label(n, i): i for i, n in enumerate(self.model.graph.node)}
        first, start = min(method(a.method).start(self, a, index) for a in self.normalise(actions))
        earlier = [b.skip for b in self.blocks if index[b.join] < first][::-1]
        return list(dict.fromkeys([start, *earlier, runtime_inputs(self.model)[0].name]))

    def block(self, block_id: str) -> Block:
        return next(b for b in self.blocks if b.id == block_id)
