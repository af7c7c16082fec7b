"""The filters method: channel groups offered at a few widths, the least important channels given up first."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from graphopt.channels import ChannelAnalysis, find_channel_groups
from graphopt.channels.importance import l1_order, removed_macs_share
from graphopt.features import class_scores
from graphopt.methods.action import Action
from graphopt.methods.method import Build, Discovery, Method
from graphopt.passes import PruneChannels, apply_passes
from graphopt.settings import DAGGER_SHARE
from graphopt.shapes import Shape

if TYPE_CHECKING:
    from graphopt.methods.plan import Planner

NAME = "filters"
KEEP_FRACTIONS = (0.75, 0.5)  # widths offered per group, as shares of its channels
WIDTH_MULTIPLE = 8  # kept channel counts are multiples of this (vector-friendly widths)
MIN_MACS_SHARE = 0.005  # a cut that removes less of the model's multiply-adds cannot be told from timing noise


def filter_actions(model: onnx.ModelProto, shapes: dict[str, Shape | None], analysis: ChannelAnalysis,
                   orders: dict[str, np.ndarray], fractions: tuple[float, ...] = KEEP_FRACTIONS,
                   multiple: int = WIDTH_MULTIPLE, min_share: float = MIN_MACS_SHARE) -> list[Action]:
    """Every prunable group at each width of `fractions` (rounded to `multiple`, distinct, narrower than the group)
    that removes at least `min_share` of the multiply-adds."""
    actions = []
    for group in analysis.prunable:
        widths = sorted({max(multiple, int(round(f * group.size / multiple)) * multiple) for f in fractions},
                        reverse=True)
        for width in (w for w in widths if w < group.size):
            share = removed_macs_share(model, shapes, analysis, {group.id: orders[group.id][:width]})
            if share >= min_share:
                actions.append(Action(NAME, group.id, width, share))
    return actions


def channel_orders(found: Discovery) -> tuple[dict[str, np.ndarray], dict | None]:
    """Each prunable group's channels, most important first, by the criterion --importance names; with the input
    statistics of the groups' consumers when the criterion gathered them (the refit needs them again later)."""
    settings, model, channels, train = found.settings, found.model, found.channels, found.train
    scores = class_scores(model, found.features)
    if settings.importance == "l1" or not channels.prunable:
        return l1_order(model, channels), None
    if settings.importance in ("taylor", "refit"):  # refit falls back on taylor for groups no refit reads
        from graphopt.calibration.scoring.taylor import taylor_order
        orders = taylor_order(model, channels, scores, train.tensors()) if scores else l1_order(model, channels)
        if settings.importance == "taylor":
            return orders, None
        from graphopt.calibration.scoring.refit import consumer_statistics
        from graphopt.calibration.scoring.refit_order import refit_order
        consumers = consumer_statistics(model, channels, train.tensors(), settings.work_threads, settings.seed)
        return refit_order(channels, consumers, orders), consumers
    from graphopt.calibration.scoring.dagger import dagger_order
    share = min(0.95, max(0.3, found.target() or 0.8))  # the target's share of the latency, as FLOPs to keep
    return dagger_order(model, found.shapes, channels, found.features, train, share,
                        DAGGER_SHARE * 60 * settings.time_budget, settings.batch_size, settings.seed,
                        settings.work_threads), None


class FiltersMethod(Method):
    """Prune channel groups (filters and every tensor that must keep their count): each group at a few widths,
    keeping its most important channels by the order --importance gives."""

    name = NAME
    summary = "prune channel groups"
    lacking = "prunable channel groups"
    counted = "channel cuts"
    at_limit = "channel groups at their narrowest"
    applies_at = 0  # first, while every node the channel analysis names is still in the graph
    default = True

    def discover(self, found: Discovery) -> list[Action]:
        with found.clock("channels"):
            found.channels = find_channel_groups(found.model, found.shapes, fixed=found.features)
            found.orders, found.consumers = channel_orders(found)
            return filter_actions(found.model, found.shapes, found.channels, found.orders)

    def first_nodes(self, planner: "Planner", action: Action) -> set[str]:
        return set(planner.channels.group(action.target).producers)

    def build(self, planner: "Planner", build: Build, mine: list[Action]) -> None:
        keep = kept_channels(planner, mine)
        pruning = PruneChannels(planner.channels, keep)
        if build.refit is None:
            build.passes.append(pruning)  # one import and export of the graph for the whole plan
        else:  # consumers re-solved before anything is split or dropped, while they are the nodes measured
            build.model = build.refit(apply_passes(build.model, [pruning])[0], keep)


def kept_channels(planner: "Planner", plan: list[Action]) -> dict[str, np.ndarray]:
    """The channels each group the plan prunes keeps (its most important ones)."""
    return {a.target: planner.orders[a.target][:a.keep] for a in plan if a.method == NAME}
