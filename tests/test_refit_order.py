"""The refit order: channels given up first are those the least-squares refit of their consumers restores best."""
from __future__ import annotations

import numpy as np
import pytest

from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.scoring.refit import Consumer, _solve, consumer_statistics
from graphopt.calibration.scoring.refit_order import _eliminate, reader_of, refit_order
from graphopt.calibration.bridge.teacher import Teacher
from graphopt.channels import find_channel_groups
from graphopt.channels.importance import l1_order
from graphopt.methods import Action
from graphopt.calibration.scoring.cut_scores import refitter
from tests import zoo
from tests.helpers import planner_for


def _consumer(rows: np.ndarray, outputs: int, kernel: tuple[int, ...], seed: int, bias: bool) -> Consumer:
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(outputs, rows.shape[1]))
    if bias:
        rows = np.concatenate([rows, np.ones((len(rows), 1))], axis=1)
    return Consumer("y", weight, rng.normal(size=outputs) if bias else None, kernel, False,
                    rows.T @ rows / len(rows))


def _refit_error(consumer: Consumer, kept: np.ndarray) -> float:
    """The consumer's output error after the refit from `kept` channels, relative to its output energy."""
    full = consumer.weight if consumer.bias is None else np.c_[consumer.weight, consumer.bias]
    weight, bias = _solve(consumer, kept)
    taps = int(np.prod(consumer.kernel))
    solved = np.zeros_like(full)
    solved[:, (kept[:, None] * taps + np.arange(taps)).reshape(-1)] = weight
    if bias is not None:
        solved[:, -1] = bias
    gap = full - solved
    return float(np.trace(gap @ consumer.sigma @ gap.T) / np.trace(full @ consumer.sigma @ full.T))


@pytest.mark.parametrize("kernel, bias", [((1, 1), False), ((3, 3), True)])
def test_closed_form_cost_is_the_rise_in_refit_error(kernel, bias, monkeypatch):
    # the ridge both solve with shifts either figure by its own small amount: without it they must agree exactly
    monkeypatch.setattr("graphopt.calibration.scoring.refit.RIDGE", 1e-10)
    monkeypatch.setattr("graphopt.calibration.scoring.refit_order.RIDGE", 1e-10)
    rng = np.random.default_rng(0)
    channels, taps = 6, int(np.prod(kernel))
    mixing = np.eye(channels * taps) + 0.3 * rng.normal(size=(channels * taps, channels * taps))  # correlated
    consumer = _consumer(rng.normal(size=(4000, channels * taps)) @ mixing, 5, kernel, 1, bias)
    reader = reader_of(consumer, np.arange(channels)[:, None])
    everything = np.arange(channels)
    costs = reader.costs(everything)
    rises = [_refit_error(consumer, np.delete(everything, c)) - _refit_error(consumer, everything)
             for c in everything]
    np.testing.assert_allclose(costs, rises, rtol=1e-4, atol=1e-8)
    # after a removal the downdated state prices the next removal as a fresh refit would
    reader.remove(np.array([2]))
    rest = np.delete(everything, 2)
    rises = [_refit_error(consumer, np.delete(rest, i)) - _refit_error(consumer, rest) for i in range(len(rest))]
    np.testing.assert_allclose(reader.costs(rest), rises, rtol=1e-4, atol=1e-8)


def test_a_channel_the_others_repeat_goes_first_however_large_its_weights():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(2000, 8))
    rows[:, 5] = 3 * rows[:, 1]  # channel 5 says what channel 1 says, louder
    consumer = _consumer(rows, 4, (1, 1), 2, False)
    consumer.weight[:, 5] *= 10
    order = _eliminate(8, [reader_of(consumer, np.arange(8)[:, None])])
    assert sorted(order.tolist()) == list(range(8))
    assert order[-1] in (1, 5)  # one of the pair is given up first: the refit moves its weight to the other
    assert {1, 5} - set(order[-1:]) <= set(order[:4].tolist())  # and the other is then among the last to go


def test_refit_order_restores_consumers_better_than_l1_on_unseen_images(tiny):
    path, images = tiny
    model, _, planner = planner_for(path)
    calibration = load_calibration(images, model)
    train, held = calibration.split(0.25, 0)
    consumers = consumer_statistics(model, planner.channels, train.tensors(), threads=1)
    orders = refit_order(planner.channels, consumers, planner.orders)
    assert set(orders) == set(planner.orders)
    assert all(sorted(orders[g.id].tolist()) == list(range(g.size)) for g in planner.channels.prunable)
    x = held.tensors()
    wanted = Teacher(model, sorted(consumers))(x)

    def error(order_set: dict) -> float:
        planner.orders = order_set
        total = 0.0
        for group in (g for g in planner.channels.prunable if g.size >= 16):
            model_cut = planner.apply([Action("filters", group.id, group.size // 2)],
                                      refit=refitter(planner, consumers))
            got = Teacher(model_cut, sorted(consumers))(x)
            total += sum(float(((got[c] - wanted[c]) ** 2).sum() / (wanted[c] ** 2).sum()) for c in consumers
                         if got[c].shape == wanted[c].shape)
        return total

    l1 = dict(planner.orders)
    assert error(orders) < error(l1)


# ResNet's plain and residual 3x3 consumers are covered by the tiny ResNet above (ResNet-18's 4608-entry ones
# take 45 s here)
@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "regnet_x_400mf", "vit", "concat_net"])
def test_every_model_family_gets_a_refit_order_for_every_prunable_group(exported, name):
    """Conv, depthwise-fed, grouped-conv, MatMul (ViT MLP) and concatenation consumers: every prunable group gets
    an order, and those read by a consumer the refit can re-solve get their own rather than the fallback."""
    model = exported(name, "torchscript")
    analysis = find_channel_groups(model)
    consumers = consumer_statistics(model, analysis, zoo.example_input(name, batch=4), threads=1)
    fallback = l1_order(model, analysis)
    orders = refit_order(analysis, consumers, fallback)
    assert set(orders) == {g.id for g in analysis.prunable}
    assert all(sorted(orders[g.id].tolist()) == list(range(g.size)) for g in analysis.prunable)
    read = [g for g in analysis.prunable if g.size > 8 and any(
        e.kind == "in" and e.node in consumers and any(analysis.table.find(s.group) == g.root
                                                       for s in e.layouts[0]) for e in analysis.edits)]
    assert read and all(not np.array_equal(orders[g.id], fallback[g.id]) for g in read)
