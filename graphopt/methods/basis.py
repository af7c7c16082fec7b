"""The basis method: a Conv, Gemm or MatMul with a constant weight, split into a head onto r bases of its output
space and a 1×1 tail (passes/decompose_conv.py), offered at a few ranks where that saves multiply-adds.

Splitting costs r·(entries + outputs) per position instead of outputs·entries, so it only pays below the break-even
rank outputs·entries / (entries + outputs): thin pointwise convs rarely get there, wide k×k convs and heads do.
Whether it saves time is then measured like every other action.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import onnx

from graphopt.channels.context import constant_values
from graphopt.macs import model_macs, node_macs
from graphopt.methods.action import Action
from graphopt.methods.method import Build, Discovery, Method
from graphopt.passes import Basis, DecomposeConv
from graphopt.shapes import Shape

if TYPE_CHECKING:
    from graphopt.methods.plan import Planner

NAME = "basis"

RANK_FRACTIONS = (0.5, 0.25)  # ranks offered per node, as shares of the rank its weight can have
RANK_MULTIPLE = 8  # ranks are multiples of this (vector-friendly widths)
MIN_MACS_SHARE = 0.005  # as for channel cuts: smaller savings cannot be told from timing noise


@dataclass(frozen=True)
class Decomposable:
    """A node the basis method can split: its first output, and its weight as outputs × patch entries per group."""

    output: str
    outputs: int  # per group
    entries: int  # per group
    groups: int
    macs: int

    @property
    def full_rank(self) -> int:
        return min(self.outputs, self.entries)

    def macs_at(self, rank: int) -> int:
        """Multiply-adds of head and tail at `rank` bases per group."""
        per_entry = self.macs / (self.outputs * self.entries)  # output positions
        return int(per_entry * rank * (self.entries + self.outputs))


def decomposable_nodes(model: onnx.ModelProto, shapes: dict[str, Shape | None]) -> list[Decomposable]:
    """Every Conv, Gemm and MatMul whose weight is a constant (2-D for MatMul, B for Gemm, no transA), in graph
    order, with known multiply-adds."""
    values = constant_values(model.graph)
    found = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in values:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        dims = tuple(values[node.input[1]].dims)
        groups = int(attrs.get("group", 1))
        if node.op_type == "Conv" and len(dims) >= 3:
            outputs, entries = dims[0] // groups, math.prod(dims[1:])
        elif node.op_type != "Conv" and len(dims) == 2 and not attrs.get("transA", 0):
            entries, outputs = dims[::-1] if attrs.get("transB", 0) else dims
        else:
            continue
        macs = node_macs(node, shapes)
        if macs and min(outputs, entries) > 1:
            found.append(Decomposable(node.output[0], outputs, entries, groups, macs))
    return found


def basis_actions(model: onnx.ModelProto, shapes: dict[str, Shape | None],
                  fractions: tuple[float, ...] = RANK_FRACTIONS, multiple: int = RANK_MULTIPLE,
                  min_share: float = MIN_MACS_SHARE) -> list[Action]:
    """Every decomposable node at each rank of `fractions` (rounded to `multiple`, distinct, below the break-even)
    that removes at least `min_share` of the model's multiply-adds."""
    total = max(model_macs(model, shapes), 1)
    actions = []
    for node in decomposable_nodes(model, shapes):
        ranks = sorted({max(multiple, int(round(f * node.full_rank / multiple)) * multiple) for f in fractions},
                       reverse=True)
        for rank in (r for r in ranks if r < node.full_rank):
            share = (node.macs - node.macs_at(rank)) / total
            if share >= min_share:
                actions.append(Action(NAME, node.output, rank, share))
    return actions


class BasisMethod(Method):
    """Split a node through fewer bases of its output space ("basis scaling"), fitted on the calibration images'
    outputs; after pruning in the same plan, on its pruned weight's SVD ("double pruning")."""

    name = NAME
    summary = "split convs through fewer bases of their output space"
    lacking = "convolutions worth splitting"
    counted = "basis cuts"
    at_limit = "nodes split at their lowest rank"
    applies_at = 1  # after pruning (it splits the weights as pruned), before blocks are dropped
    # asked for by name: on Lite0 its splits cost about 2.5x the feature error of channel cuts per multiply-add
    # removed (docs/studies/basis_lite0.md), and on the Fashion-MNIST ResNet-20 every split at once saves 1-8% of
    # the latency while adding them to the joint search lost a point (docs/studies/methods_fmnist_basis.md)
    default = False

    def discover(self, found: Discovery) -> list[Action]:
        with found.clock("bases"):
            actions = basis_actions(found.model, found.shapes)
            if actions:
                from graphopt.calibration.scoring.fitted_bases import fitted_bases
                # kept by output energy: on Lite0 that beat Taylor order (docs/studies/basis_lite0.md)
                found.bases = fitted_bases(found.model, sorted({a.target for a in actions}), found.train.tensors(),
                                           threads=found.settings.work_threads, seed=found.settings.seed)
            return actions

    def label(self, action: Action) -> str:
        return f"{action.target}@r{action.keep}"

    def build(self, planner: "Planner", build: Build, mine: list[Action]) -> None:
        pruned = planner.pruned_outputs(build.plan)
        build.passes.append(DecomposeConv({a.target: self._basis(planner, a, pruned) for a in mine}))

    @staticmethod
    def _basis(planner: "Planner", action: Action, pruned: set[str]) -> Basis:
        """The node's fitted basis at the action's rank, unless pruning in the same plan changed its outputs: then
        the SVD of its pruned weight."""
        template = planner.bases.get(action.target)
        if template is None or action.target in pruned:
            return Basis(action.keep)
        return replace(template, rank=action.keep)
