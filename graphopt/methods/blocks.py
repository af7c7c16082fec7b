"""The blocks method: each droppable residual block is one action (dropped or kept)."""
from __future__ import annotations

from graphopt.blocks import Block
from graphopt.methods.action import Action


def block_actions(blocks: list[Block]) -> list[Action]:
    """One action per droppable block, in graph order."""
    return [Action("blocks", b.id, macs_share=b.macs_share) for b in blocks if b.droppable]
