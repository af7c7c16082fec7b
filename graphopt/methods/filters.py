"""The filters method: channel groups offered at a few widths, the least important channels given up first."""
from __future__ import annotations

import numpy as np
import onnx

from graphopt.channels import ChannelAnalysis
from graphopt.channels.importance import removed_macs_share
from graphopt.methods.action import Action
from graphopt.shapes import Shape

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
                actions.append(Action("filters", group.id, width, share))
    return actions
