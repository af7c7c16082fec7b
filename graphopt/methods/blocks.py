"""The blocks method: each droppable residual block is one action (dropped or kept)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from graphopt.blocks import Block
from graphopt.methods.action import Action
from graphopt.methods.method import Build, Discovery, Method
from graphopt.passes import DropBlocks, select_blocks

if TYPE_CHECKING:
    from graphopt.methods.plan import Planner

NAME = "blocks"


def block_actions(blocks: list[Block]) -> list[Action]:
    """One action per droppable block, in graph order."""
    return [Action(NAME, b.id, macs_share=b.macs_share) for b in blocks if b.droppable]


class BlocksMethod(Method):
    """Drop whole residual blocks (PRACTISE): the block's output becomes its skip input. The deepest cut of
    everything inside the block, so a plan drops channel or basis cuts made only inside a block it drops."""

    name = NAME
    summary = "drop residual blocks"
    lacking = "droppable residual blocks"
    counted = "droppable blocks"
    at_limit = "blocks dropped"
    applies_at = 2  # last: DropBlocks finds blocks by tensor names, which pruning and splitting keep
    default = True
    scored_with_adaptors = True

    def discover(self, found: Discovery) -> list[Action]:
        return block_actions(found.blocks)

    def label(self, action: Action) -> str:
        return action.target  # block ids as the user knows them

    def first_nodes(self, planner: "Planner", action: Action) -> set[str]:
        block = planner.block(action.target)
        return {*block.nodes, block.join}

    def removes(self, planner: "Planner", action: Action) -> set[str]:
        return set(planner.block(action.target).nodes)

    def start(self, planner: "Planner", action: Action, index: dict[str, int]) -> tuple[int, str]:
        block = planner.block(action.target)
        return min(index[label] for label in self.first_nodes(planner, action)), block.skip

    def canonical(self, planner: "Planner", action: Action) -> Action:
        return Action(NAME, action.target, macs_share=planner.block(action.target).macs_share)

    def plan_order(self, planner: "Planner", action: Action) -> int:
        return next(i for i, b in enumerate(planner.blocks) if b.id == action.target)  # graph order

    def build(self, planner: "Planner", build: Build, mine: list[Action]) -> None:
        build.passes.append(DropBlocks(select_blocks(planner.blocks, [a.target for a in mine])))
