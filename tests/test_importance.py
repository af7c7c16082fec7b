"""Channel importance criteria (L1 norm, first-order Taylor, Dagger gates) and the gated PyTorch graph they use."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from graphopt.calibration.scoring.dagger import dagger_order, weight_descriptors
from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.scoring.gates import gated_graph
from graphopt.calibration.scoring.taylor import taylor_order
from graphopt.channels import find_channel_groups
from graphopt.channels.importance import l1_order
from graphopt.features import feature_tensors
from graphopt.passes import prune_channels
from graphopt.shapes import infer_shapes
from tests.helpers import assert_close, run_onnx


@pytest.fixture(scope="module")
def grouped(tiny):
    path, images = tiny
    model = onnx.load(str(path))
    shapes = infer_shapes(model)
    return model, shapes, find_channel_groups(model, shapes, fixed=feature_tensors(model)), images


def _is_order(order: np.ndarray, size: int) -> bool:
    return sorted(order.tolist()) == list(range(size))


def test_closed_gates_compute_the_pruned_model(grouped):
    model, _, analysis, images = grouped
    keep = {g.id: np.arange(0, g.size, 2) for g in analysis.prunable}
    gates = {g.id: torch.zeros(g.size).index_fill_(0, torch.from_numpy(keep[g.id]), 1.0) for g in analysis.prunable}
    graph = gated_graph(model, analysis, [], gates.__getitem__)
    x = load_calibration(images, model).tensors(4)
    with torch.no_grad():
        gated = graph.module(x)[0].numpy()
    assert_close(gated, run_onnx(prune_channels(model, analysis, keep), x.numpy()))
    assert not any(p.requires_grad for p in graph.module.parameters())


def test_every_criterion_orders_every_prunable_group(grouped):
    model, shapes, analysis, images = grouped
    calibration = load_calibration(images, model)
    orders = {"l1": l1_order(model, analysis),
              "taylor": taylor_order(model, analysis, "logits", calibration.tensors()),
              "dagger": dagger_order(model, shapes, analysis, feature_tensors(model), calibration, 0.7, seconds=2)}
    for name, order in orders.items():
        assert set(order) == {g.id for g in analysis.prunable}, name
        assert all(_is_order(order[g.id], g.size) for g in analysis.prunable), name
    # the criteria read different things: they do not all agree on every group
    assert any(not np.array_equal(orders["l1"][g], orders["taylor"][g]) for g in orders["l1"])


def test_dagger_descriptors_are_standardised_per_group(grouped):
    model, _, analysis, _ = grouped
    for group, table in weight_descriptors(model, analysis).items():
        assert table.shape == (analysis.group(group).size, 4)
        assert torch.allclose(table.mean(0), torch.zeros(4), atol=1e-5)


def test_dagger_is_sized_by_the_target_even_in_milliseconds(tiny, monkeypatch):
    """Dagger's FLOPs regulariser aims at the target's share of the latency: with --target-ms that share is the
    target over the original's measured latency, not a default."""
    from graphopt.calibration.scoring import dagger
    from graphopt.pipeline import accelerate
    from tests.fake_latency import SimulatedBackend
    from tests.helpers import FAST_ACCELERATE

    path, images = tiny
    shares = []

    def record(model, shapes, channels, features, train, share, *rest):
        shares.append(share)
        return l1_order(model, channels)

    monkeypatch.setattr(dagger, "dagger_order", record)
    backend = SimulatedBackend()
    original_ms = backend.nominal_ms(onnx.load(str(path)))
    accelerate(path, images, target_ms=0.75 * original_ms, importance="dagger", methods=["filters"], backend=backend,
               **FAST_ACCELERATE)
    accelerate(path, images, target_latency=0.8, importance="dagger", methods=["filters"], backend=SimulatedBackend(),
               **FAST_ACCELERATE)
    assert shares == [pytest.approx(0.75, abs=1e-6), 0.8]
