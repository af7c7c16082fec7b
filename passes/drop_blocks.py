"""DropBlocks: remove residual blocks by routing their consumers to the skip tensor."""
from __future__ import annotations

from collections import Counter

import onnx
import onnx_graphsurgeon as gs

from graphopt.blocks import Block, find_blocks
from graphopt.errors import GraphoptError
from graphopt.passes.base import GraphPass, PassResult, apply_passes


class DropBlocks(GraphPass):
    """Replace each block `y = x + F(x)` by `y = x`; F and the join disappear in cleanup.

    Graph output names are kept: where `y` is a graph output an Identity carries `x` to it. Blocks are processed
    in graph order, so dropping consecutive blocks follows the chain of skips back to the first one kept.
    """

    def __init__(self, blocks: list[Block]):
        for block in blocks:
            if not block.droppable:
                why = ("its shortcut is a projection" if block.shortcut == "projection" else
                       "its output shape differs from its input's, or shape inference could not tell")
                raise GraphoptError(f"block '{block.id}' cannot be dropped: {why}")
        self.blocks = blocks

    def rewrite(self, graph: gs.Graph) -> PassResult:
        tensors = graph.tensors()
        outputs = {t.name for t in graph.outputs}
        replaced: dict[str, str] = {}
        for block in self.blocks:
            skip = tensors[replaced.get(block.skip, block.skip)]
            out = tensors[block.output]
            join = out.inputs[0]
            join.outputs.clear()
            if block.output in outputs:
                graph.nodes.append(gs.Node("Identity", name=f"{join.name or block.output}_dropped",
                                           inputs=[skip], outputs=[out]))
            else:
                for consumer in list(out.outputs):
                    for i, tensor in enumerate(consumer.inputs):
                        if tensor is out:
                            consumer.inputs[i] = skip
                replaced[block.output] = skip.name
        return PassResult(graph, changed=bool(self.blocks))


def select_blocks(blocks: list[Block], ids: list[str]) -> list[Block]:
    """The blocks named by `ids`, in graph order; an unknown id is an error that lists the known ones, and so is a
    repeated one (a block is dropped once, so a repeat is most likely a typo for another block)."""
    repeated = [i for i, count in Counter(ids).items() if count > 1]
    if repeated:
        raise GraphoptError(f"block id(s) given more than once: {', '.join(repeated)}")
    by_id = {b.id: b for b in blocks}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        known = ", ".join(b.id for b in blocks if b.droppable) or "none"
        raise GraphoptError(f"unknown block id(s): {', '.join(unknown)} (droppable blocks: {known})")
    wanted = set(ids)
    return [b for b in blocks if b.id in wanted]


def drop_blocks(model: onnx.ModelProto, ids: list[str], blocks: list[Block] | None = None) -> onnx.ModelProto:
    """A new model without the blocks named by `ids` (the input model is not modified)."""
    if not ids:
        raise GraphoptError("no blocks given to drop")
    chosen = select_blocks(blocks if blocks is not None else find_blocks(model), ids)
    dropped, _ = apply_passes(model, [DropBlocks(chosen)])
    return dropped
