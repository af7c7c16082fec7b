"""Dagger (arXiv 2010.15041): data-agnostic filter gates with a FLOPs-aware regulariser.

A small network reads each channel's pretrained weights (descriptors of the filter that makes it and of the
weights that read it, standardised within the group) and outputs its gate; a learnable offset per group lets a
group's gates move together. Only the gate network trains: the gated original is distilled toward the original's
features on augmented calibration images, while a penalty pulls the gated multiply-adds (each weighted node's
MACs times the mean gates of the channels it makes and reads) down to the target share. Channels are then given
up in order of their gates, lowest first.
"""
from __future__ import annotations

import time

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from graphopt.calibration.data.dataset import CalibrationSet
from graphopt.calibration.scoring.gates import gated_graph
from graphopt.calibration.recovery.mimic import feature_error
from graphopt.calibration.bridge.teacher import Teacher
from graphopt.channels import ChannelAnalysis
from graphopt.channels.context import constant_values
from graphopt.channels.importance import mac_terms
from graphopt.shapes import Shape

GATE_LR = 1e-2
PENALTY = 10.0  # weight of the squared excess of gated MACs over the target share
START_OFFSET = 3.0  # gates start at sigmoid(3) ~ 0.95: the gated network starts close to the original


class GateNet(torch.nn.Module):
    def __init__(self, groups: list[str], descriptors: int = 4, hidden: int = 16):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(descriptors, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, 1))
        self.keys = {g: f"g{i}" for i, g in enumerate(groups)}  # group ids hold dots, which modules refuse
        self.offsets = torch.nn.ParameterDict({key: torch.nn.Parameter(torch.tensor(START_OFFSET))
                                               for key in self.keys.values()})

    def forward(self, group: str, descriptors: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(descriptors).squeeze(-1) + self.offsets[self.keys[group]])


def dagger_order(model: onnx.ModelProto, shapes: dict[str, Shape | None], analysis: ChannelAnalysis,
                 features: list[str], train: CalibrationSet, target_share: float, seconds: float,
                 batch_size: int = 8, seed: int = 0, threads: int | None = None) -> dict[str, np.ndarray]:
    """For each prunable group, its channel indices from most to least important by learned gate."""
    torch.manual_seed(seed)
    descriptors = weight_descriptors(model, analysis)
    net = GateNet(list(descriptors))
    cache = {g: net(g, d) for g, d in descriptors.items()}  # registering a gate already evaluates it
    graph = gated_graph(model, analysis, features, lambda g: cache[g])
    indices = [graph.outputs.index(f) for f in features]
    teacher = Teacher(model, features, threads)
    cost = _macs_cost(model, shapes, analysis)
    optimiser = torch.optim.Adam(net.parameters(), lr=GATE_LR)
    generator = torch.Generator().manual_seed(seed)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        images = train.augmented(generator)
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            cache.update({g: net(g, d) for g, d in descriptors.items()})
            outputs = graph.module(batch)
            targets = teacher(batch)
            loss = feature_error([outputs[i] for i in indices], [targets[f] for f in features])
            loss = loss + PENALTY * torch.relu(cost(cache) - target_share) ** 2
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if time.monotonic() >= deadline:
                break
    with torch.no_grad():
        return {g: np.argsort(-net(g, d).numpy(), kind="stable") for g, d in descriptors.items()}


def weight_descriptors(model: onnx.ModelProto, analysis: ChannelAnalysis) -> dict[str, torch.Tensor]:
    """(channels, 4) per prunable group: log L1 and L2 norms of the weights making each channel and of the weights
    reading it, each standardised within the group."""
    values = constant_values(model.graph)
    nodes = {n.output[0]: n for n in model.graph.node if n.output}
    ids = {g.root: g.id for g in analysis.prunable}
    sums = {g.id: np.zeros((g.size, 4)) for g in analysis.prunable}
    for edit in analysis.edits:
        if edit.kind not in ("out", "in") or edit.input != 1:
            continue
        weight = numpy_helper.to_array(values[nodes[edit.node].input[1]])
        columns = np.moveaxis(weight, edit.axis, 0).reshape(weight.shape[edit.axis], -1)
        offset, column = 0, 0 if edit.kind == "out" else 2
        for segment in edit.layouts[0]:
            group = ids.get(analysis.table.find(segment.group))
            if group is not None:
                rows = columns[offset:offset + segment.size]
                sums[group][segment.start:segment.stop, column] += np.log(np.abs(rows).sum(1) + 1e-12)
                sums[group][segment.start:segment.stop, column + 1] += np.log(np.sqrt((rows ** 2).sum(1)) + 1e-12)
            offset += segment.size
    out = {}
    for group, table in sums.items():
        spread = table.std(0)
        out[group] = torch.tensor((table - table.mean(0)) / np.where(spread > 0, spread, 1), dtype=torch.float32)
    return out


def _macs_cost(model: onnx.ModelProto, shapes: dict[str, Shape | None], analysis: ChannelAnalysis):
    """A function of the gates: the gated share of the model's multiply-adds (1 with every gate open)."""
    ids = {g.root: g.id for g in analysis.prunable}
    nodes, total = mac_terms(model, shapes, analysis)
    terms = [(macs, _segments(analysis, made, ids), _segments(analysis, read, ids)) for macs, made, read in nodes]

    def cost(gates: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(macs * _kept(made, gates) * _kept(read, gates) for macs, made, read in terms) / max(total, 1)
    return cost


def _segments(analysis: ChannelAnalysis, carried, ids: dict[int, str]) -> list[tuple[str | None, int, int]]:
    """(prunable group id or None, start, stop) along a tensor's channels."""
    if carried is None:
        return []
    return [(ids.get(analysis.table.find(s.group)), s.start, s.stop) for s in carried.layout]


def _kept(segments: list[tuple[str | None, int, int]], gates: dict[str, torch.Tensor]) -> torch.Tensor | float:
    if not segments:
        return 1.0
    size = sum(stop - start for _, start, stop in segments)
    return sum(gates[g][start:stop].sum() if g is not None else float(stop - start)
               for g, start, stop in segments) / size

