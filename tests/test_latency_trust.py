"""Noise estimates, re-measurement of implausible savings, selection and the final target check, on a simulated
latency backend (tests/fake_latency.py): deterministic, no real timing in pass/fail."""
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphopt.blocks import find_blocks
from graphopt.errors import GraphoptError, TargetUnreachable
from graphopt.methods import Planner
from graphopt.methods.blocks import block_actions
from graphopt.passes import drop_blocks
from graphopt.pipeline import accelerate
from graphopt.runtime import TimingSettings
from graphopt.selection import Attempt, additivity, latency_table, predicted_ratio, select
from graphopt.target import confirm_target
from tests.fake_latency import SimulatedBackend

# these tests follow block dropping's selection step by step: the blocks method alone
FAST = dict(score_iterations=3, recover_iterations=4, lr=1e-3, threads=1, use_cache=False, quiet=True,
            methods=["blocks"])


@pytest.fixture(scope="module")
def tiny(tiny):
    """conftest's tiny model, loaded: (ModelProto, image folder)."""
    path, images = tiny
    return onnx.load(str(path)), images


def _droppable(model):
    """(a planner for `model`'s blocks, one action per droppable block)."""
    blocks = find_blocks(model)
    return Planner(model, blocks), block_actions(blocks)


def test_quiet_ratios_are_taken_at_the_minimum_rounds(tiny):
    model, _ = tiny
    backend = SimulatedBackend(noise=0.001)
    run = backend.time_run([model, drop_blocks(model, ["layer1.0"])])
    assert run.stats[0].runs == 20 and not run.noisy and run.noise < 0.005
    assert run.control_ratio == pytest.approx(1.0, abs=0.003)


def test_noisy_ratios_get_more_rounds_then_are_flagged(tiny):
    model, _ = tiny
    settings = TimingSettings(warmup=1, repeats=20, min_seconds=0, max_seconds=2.0)
    run = SimulatedBackend(settings, noise=0.3).time_run([model, drop_blocks(model, ["layer1.0"])])
    assert run.noisy and run.noise > 0.02
    assert run.stats[0].runs > 20  # kept measuring...
    assert run.seconds < 2.0 + 3 * 20 * run.stats[0].p90_ms / 1000  # ...only up to the cap (plus the last rounds)


def test_a_load_spike_during_the_table_is_remeasured(tiny):
    model, _ = tiny
    planner, blocks = _droppable(model)
    honest = latency_table(SimulatedBackend(), planner, blocks, quiet=True)
    # in the first timing run the variant without layer2.1 runs 3x slower (a negative saving), and the original and
    # its control 1.5x slower (every other saving far above its MAC share)
    slow = {SimulatedBackend().nominal_ms(drop_blocks(model, ["layer2.1"])): 3.0,
            SimulatedBackend().nominal_ms(model): 1.5}
    backend = SimulatedBackend(busy=lambda timing, ms: slow.get(ms, 1.0) if timing == 1 else 1.0)
    table = latency_table(backend, planner, blocks, quiet=True)
    assert set(table.remeasured) == {b.id for b in blocks}
    assert table.remeasured["layer2.1"][0] < 0
    assert table.implausible == []
    for block in blocks:
        assert table.savings[block.id] == pytest.approx(honest.savings[block.id], rel=1e-6)


def test_a_saving_implausible_every_time_is_reported(tiny):
    model, _ = tiny
    planner, blocks = _droppable(model)
    # every single-block drop holds the same share of multiply-adds here, and each keeps reading 10x too fast
    without = SimulatedBackend().nominal_ms(drop_blocks(model, ["layer1.0"]))
    backend = SimulatedBackend(busy=lambda timing, ms: 0.1 if ms == without else 1.0)
    table = latency_table(backend, planner, blocks, quiet=True)
    assert table.implausible == [b.id for b in blocks]
    assert all(len(table.remeasured[b.id]) == 2 for b in blocks) and backend.timings == 3


def test_selection_records_predicted_and_measured_ratios(tiny):
    model, _ = tiny
    planner, blocks = _droppable(model)
    backend = SimulatedBackend()
    table = latency_table(backend, planner, blocks, quiet=True)
    selection = select(backend, planner, blocks, table, target=0.7)
    assert len(selection.dropped) == 2  # each block holds about 17% of the multiply-adds
    (attempt,) = selection.attempts
    assert attempt.measured_ratio == pytest.approx(attempt.predicted_ratio, abs=1e-9)
    assert attempt.measured_ratio == pytest.approx(predicted_ratio(selection.actions, table)) and attempt.noise < 0.01


def test_confirm_target_measures_a_miss_twice(tiny):
    model, _ = tiny
    pruned = drop_blocks(model, ["layer1.0", "layer1.1"])
    full = SimulatedBackend().nominal_ms(model)
    # the machine is busy for the first measurement only: the original reads fast, so the ratio reads high
    busy = SimulatedBackend(busy=lambda timing, ms: 0.8 if timing == 1 and ms == full else 1.0)
    check = confirm_target(busy, model, pruned, target=0.7)
    assert check.met and [round(m.ratio, 3) for m in check.measurements] == [0.815, 0.652]
    missed = confirm_target(SimulatedBackend(), model, pruned, target=0.6)
    assert not missed.met and not missed.undecided and len(missed.measurements) == 2


def test_confirm_target_does_not_decide_on_noise(tiny):
    model, _ = tiny
    pruned = drop_blocks(model, ["layer1.0", "layer1.1"])
    settings = TimingSettings(warmup=1, repeats=20, min_seconds=0, max_seconds=1.0)
    check = confirm_target(SimulatedBackend(settings, noise=0.3, seed=3), model, pruned, target=0.66)
    assert not check.met and all(m.noisy for m in check.measurements)


def test_accelerate_adds_a_block_when_the_final_model_misses(tiny, monkeypatch):
    model, images = tiny
    full = SimulatedBackend().nominal_ms(model)
    from graphopt.calibration.recovery import recover as recovery
    recoveries, recover = [], recovery.recover  # (model recovery started from, what it handed back)

    def recording(original, pruned, *args, **kwargs):
        recoveries.append((pruned, recover(original, pruned, *args, **kwargs)))
        return recoveries[-1][1]

    monkeypatch.setattr(recovery, "recover", recording)
    # from the fourth timing run on (after table, reachability and the first selection) everything but the original
    # runs 10% slower: the two-block drop selected at 0.652 measures 0.717 against a target of 0.7
    backend = SimulatedBackend(busy=lambda timing, ms: 1.1 if timing >= 4 and ms != full else 1.0)
    result = accelerate(model, images, target_latency=0.7, backend=backend, **FAST)
    attempts = result.report["selection"]["attempts"]
    assert [(len(a["actions"]), a["stage"]) for a in attempts] == [(2, "selection"), (2, "final"), (2, "final"),
                                                                   (3, "selection"), (3, "final")]
    assert attempts[1]["measured_ratio"] == pytest.approx(1.1 * attempts[1]["predicted_ratio"])
    assert len(result.report["dropped"]) == 3 and result.report["target"]["met"]
    assert result.report["latency"]["ratio"] <= 0.7
    # the plan with the third block starts from what the first recovery trained, not from the original's weights
    (_, first), (second_start, _) = recoveries
    trained = {t.name: numpy_helper.to_array(t) for t in first.model.graph.initializer}
    original = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    carried = [t.name for t in second_start.graph.initializer if t.name in trained
               and np.array_equal(numpy_helper.to_array(t), trained[t.name])
               and not np.array_equal(trained[t.name], original[t.name])]
    assert carried


def test_accelerate_never_returns_a_model_measured_above_target(tiny):
    model, images = tiny
    full = SimulatedBackend().nominal_ms(model)
    # after selection every pruned model reads 3x slower: not even all four blocks dropped (0.30 -> 0.90) meet 0.7
    backend = SimulatedBackend(busy=lambda timing, ms: 3.0 if timing >= 4 and ms != full else 1.0)
    with pytest.raises(TargetUnreachable, match=r"not met.*measured"):
        accelerate(model, images, target_latency=0.7, backend=backend, **FAST)


def test_accelerate_refuses_to_decide_on_a_noisy_final_measurement(tiny):
    model, images = tiny
    settings = TimingSettings(warmup=1, repeats=20, min_seconds=0, max_seconds=1.0)
    full = SimulatedBackend().nominal_ms(model)
    # after selection, pruned models read 0.7x to 1.3x their latency at random: the two-block drop's ratio stays near
    # its true 0.652, under the 0.67 target, but its noise is far wider than the 0.018 margin
    swings = np.random.default_rng(0)
    backend = SimulatedBackend(settings, busy=lambda timing, ms: 1.0 if timing < 4 or ms == full
                               else swings.uniform(0.7, 1.3))
    with pytest.raises(TargetUnreachable, match=r"too noisy \(final model with layer1.0, layer1.1 cut measured"):
        accelerate(model, images, target_latency=0.67, backend=backend, **FAST)


def test_given_blocks_are_checked_before_any_timing(tiny):
    model, images = tiny
    backend = SimulatedBackend()
    with pytest.raises(GraphoptError, match="projection"):
        accelerate(model, images, blocks=["layer1.0", "layer2.0"], backend=backend, **FAST)
    assert backend.timings == 0


def test_predictions_learn_how_far_savings_add_up(tiny):
    model, _ = tiny
    planner, blocks = _droppable(model)
    table = latency_table(SimulatedBackend(), planner, blocks, quiet=True)
    two, three = blocks[:2], blocks[:3]
    summed = [sum(table.savings[b.id] for b in chosen) for chosen in (two, three)]
    assert predicted_ratio(three, table) == pytest.approx(1 - summed[1])
    # the two-block drop measured only 80% of its summed saving: later predictions expect the same shortfall
    measured = Attempt([b.id for b in two], 1 - summed[0], 1 - 0.8 * summed[0], 0.0, False)
    assert additivity(table, [measured]) == pytest.approx(0.8)
    assert predicted_ratio(three, table, [measured]) == pytest.approx(1 - 0.8 * summed[1])
    final = replace(measured, stage="final", measured_ratio=0.0)  # final measurements do not teach additivity
    assert additivity(table, [measured, final]) == pytest.approx(0.8)
    wild = replace(measured, measured_ratio=1 - 3 * summed[0])
    assert additivity(table, [wild]) == 1.5
