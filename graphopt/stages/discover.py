"""The discover stage: what each chosen method can cut in the model (residual blocks, channel groups at a few
widths, nodes split at a few ranks), with what those cuts need later (channel orders, fitted bases)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from graphopt.blocks import Block, find_blocks
from graphopt.channels import ChannelAnalysis
from graphopt.errors import GraphoptError
from graphopt.features import feature_tensors
from graphopt.methods import Action, default_names, method, names
from graphopt.methods.registry import methods
from graphopt.methods.blocks import NAME as BLOCKS
from graphopt.methods.method import Discovery
from graphopt.passes import Basis, DropBlocks, select_blocks
from graphopt.settings import AccelerateSettings
from graphopt.shapes import infer_shapes
from graphopt.stages.load import Loaded
from graphopt.stages.state import StageClock


@dataclass
class Found:
    """The cuts on offer and what applying and scoring them needs."""

    blocks: list[Block]
    droppable: list[Block]
    features: list[str]
    given: list[Block] | None  # the blocks named by --blocks, checked droppable before any timing
    channels: ChannelAnalysis | None  # channel groups, when the filters method is on
    orders: dict[str, np.ndarray]  # each prunable group's channels, most important first
    bases: dict[str, Basis]  # how each node the basis method may split is split
    consumers: dict | None  # input statistics of the pruned groups' consumers, when the channel order needed them
    actions: list[Action]  # every candidate cut of the methods chosen
    methods: tuple[str, ...]


def discover(loaded: Loaded, settings: AccelerateSettings, clock: StageClock, quantize: bool,
             target: Callable[[], float | None] = lambda: None) -> Found:
    """Blocks, the feature tensor, and the candidate cuts of every method chosen; an error when there is nothing
    to cut and no quantization to do. `target()` gives the latency target as a ratio, for methods that size their
    search by it (measured only when one asks)."""
    original = loaded.original
    chosen = methods_of(settings)
    with clock("blocks"):
        shapes = infer_shapes(original, input_shapes=loaded.input_shapes)
        blocks = find_blocks(original, shapes)
        features = feature_tensors(original, settings.feature_tensor, shapes)
        given = select_blocks(blocks, settings.blocks) if settings.blocks else None
        if given:
            DropBlocks(given)  # refuses blocks that cannot be dropped
    found = Discovery(original, shapes, blocks, features, settings, loaded.train, clock, target)
    actions = [a for entry in methods() if entry.name in chosen for a in entry.discover(found)]
    if not actions and not quantize:
        raise GraphoptError(f"nothing to accelerate: the model has no "
                            f"{' and no '.join(method(m).lacking for m in chosen)}")
    return Found(blocks, [b for b in blocks if b.droppable], features, given, found.channels, found.orders,
                 found.bases, found.consumers, actions, chosen)


def methods_of(settings: AccelerateSettings) -> tuple[str, ...]:
    """The methods of this run: --methods, or the default ones; --drop and --blocks are block requests."""
    chosen = tuple(dict.fromkeys(settings.methods or default_names()))
    unknown = [m for m in chosen if m not in names()]
    if unknown:
        raise GraphoptError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(names())}")
    if settings.drop is not None or settings.blocks:
        if settings.methods and chosen != (BLOCKS,):
            raise GraphoptError(f"--drop and --blocks name blocks to drop: they go with --methods {BLOCKS} only")
        return (BLOCKS,)
    return chosen
