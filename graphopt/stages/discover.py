"""The discover stage: what each chosen method can cut in the model (residual blocks, channel groups at a few
widths, nodes split at a few ranks), with what those cuts need later (channel orders, fitted bases)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from graphopt.blocks import Block, find_blocks
from graphopt.channels import ChannelAnalysis, find_channel_groups
from graphopt.channels.importance import l1_order
from graphopt.errors import GraphoptError
from graphopt.features import class_scores, feature_tensors
from graphopt.methods import DEFAULT_METHODS, METHODS, Action, method_counts
from graphopt.methods.basis import basis_actions
from graphopt.methods.blocks import block_actions
from graphopt.methods.filters import filter_actions
from graphopt.passes import Basis, DropBlocks, select_blocks
from graphopt.settings import DAGGER_SHARE, AccelerateSettings
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


def discover(loaded: Loaded, settings: AccelerateSettings, clock: StageClock, quantize: bool) -> Found:
    """Blocks, the feature tensor, and the candidate cuts of every method chosen; an error when there is nothing
    to cut and no quantization to do."""
    original, train = loaded.original, loaded.train
    methods = methods_of(settings)
    with clock("blocks"):
        shapes = infer_shapes(original, input_shapes=loaded.input_shapes)
        blocks = find_blocks(original, shapes)
        droppable = [b for b in blocks if b.droppable]
        features = feature_tensors(original, settings.feature_tensor, shapes)
        given = select_blocks(blocks, settings.blocks) if settings.blocks else None
        if given:
            DropBlocks(given)  # refuses blocks that cannot be dropped
    actions = block_actions(droppable) if "blocks" in methods else []
    channels, orders, consumers = None, {}, None
    if "filters" in methods:
        with clock("channels"):
            channels = find_channel_groups(original, shapes, fixed=features)
            orders, consumers = _channel_orders(settings, original, shapes, channels, features, train)
            actions += filter_actions(original, shapes, channels, orders)
    bases = {}
    if "basis" in methods:
        with clock("bases"):
            found = basis_actions(original, shapes)
            if found:
                from graphopt.calibration.basis import fitted_bases
                # kept by output energy: on Lite0 that beat Taylor order (docs/studies/basis_lite0.md)
                bases = fitted_bases(original, sorted({a.target for a in found}), train.tensors(),
                                     threads=settings.threads, seed=settings.seed)
            actions += found
    if not actions and not quantize:
        raise GraphoptError(f"nothing to accelerate: the model has no "
                            f"{' and no '.join(_NOTHING[m] for m in methods)}")
    return Found(blocks, droppable, features, given, channels, orders, bases, consumers, actions, methods)


def _channel_orders(settings: AccelerateSettings, original: onnx.ModelProto, shapes, channels: ChannelAnalysis,
                    features: list[str], train) -> tuple[dict, dict | None]:
    """Each prunable group's channels, most important first, by the criterion the settings name; with the input
    statistics of the groups' consumers when the criterion gathered them (the refit needs them again later)."""
    scores = class_scores(original, features)
    if settings.importance == "l1" or not channels.prunable:
        return l1_order(original, channels), None
    if settings.importance in ("taylor", "refit"):  # refit falls back on taylor for groups no refit reads
        from graphopt.calibration.taylor import taylor_order
        orders = taylor_order(original, channels, scores, train.tensors()) if scores else l1_order(original, channels)
        if settings.importance == "taylor":
            return orders, None
        from graphopt.calibration.refit import consumer_statistics
        from graphopt.calibration.refit_order import refit_order
        consumers = consumer_statistics(original, channels, train.tensors(), settings.threads, settings.seed)
        return refit_order(channels, consumers, orders), consumers
    from graphopt.calibration.dagger import dagger_order
    share = min(0.95, max(0.3, settings.target_latency or 0.8))
    return dagger_order(original, shapes, channels, features, train, share, DAGGER_SHARE * 60 * settings.time_budget,
                        settings.batch_size, settings.seed, settings.threads), None


_NOTHING = {"blocks": "droppable residual blocks", "filters": "prunable channel groups",
            "basis": "convolutions worth splitting"}


def methods_of(settings: AccelerateSettings) -> tuple[str, ...]:
    """The methods of this run: --methods, or the default ones; --drop and --blocks are block requests."""
    methods = tuple(dict.fromkeys(settings.methods or DEFAULT_METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise GraphoptError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    if settings.drop is not None or settings.blocks:
        if settings.methods and methods != ("blocks",):
            raise GraphoptError("--drop and --blocks name blocks to drop: they go with --methods blocks only")
        return ("blocks",)
    return methods


def describe_actions(actions: list[Action]) -> str:
    counts = method_counts(actions)
    return f"{counts['blocks']} droppable blocks, {counts['filters']} channel cuts and {counts['basis']} basis cuts"
