"""Local reconstruction: which stretches of the graph a plan changes, and training each alone from the original's
activations at its start to its end."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphopt.calibration.dataset import load_calibration
from graphopt.calibration.local import reconstruct
from graphopt.calibration.mimic import MimicSettings
from graphopt.methods import Action
from tests.helpers import planner_for


@pytest.fixture(scope="module")
def planned(tiny):
    path, images = tiny
    model, _, planner = planner_for(path)
    return model, planner, images


def _block(planner, block_id):
    return next(b for b in planner.blocks if b.id == block_id)


def test_a_dropped_block_is_bridged_to_the_next_kept_block(planned):
    _, planner, _ = planned
    layer1_0, layer1_1, layer2_0 = (_block(planner, b) for b in ("layer1.0", "layer1.1", "layer2.0"))
    assert planner.regions([Action("blocks", "layer1.1")]) == [(layer1_1.skip, layer2_0.output)]
    # neighbouring gaps are one stretch; the last block has no kept block after it, so no region
    assert planner.regions([Action("blocks", "layer1.0"), Action("blocks", "layer1.1")]) == [
        (layer1_0.skip, layer2_0.output)]
    assert planner.regions([Action("blocks", "layer3.1")]) == []


def test_a_channel_cut_ends_at_its_block_unless_its_channels_reach_the_end(planned):
    _, planner, _ = planned
    layer1_0 = _block(planner, "layer1.0")
    assert planner.regions([Action("filters", "layer1.0.conv1", 4)]) == [(layer1_0.skip, layer1_0.output)]
    # the residual stream of layer2 is pruned: layer2's block outputs change, so the stretch ends after layer2
    (start, end), = planner.regions([Action("filters", "layer2", 8)])
    assert end == _block(planner, "layer3.0").output
    # separate stretches stay separate
    plan = [Action("filters", "layer1.0.conv1", 4), Action("blocks", "layer2.1")]
    assert [end for _, end in planner.regions(plan)] == [layer1_0.output, _block(planner, "layer3.0").output]


def test_reconstruction_trains_only_the_stretch_and_lowers_its_error(planned):
    model, planner, images = planned
    plan = [Action("blocks", "layer1.1")]
    pruned = planner.apply(plan)
    train, held = load_calibration(images, model).split(0.25)
    regions = planner.regions(plan)
    rebuilt, (stretch,) = reconstruct(model, pruned, regions, train, held.tensors(),
                                      MimicSettings(40, batch_size=4, lr=1e-3, eval_every=5), threads=1, quiet=True)
    assert (stretch.start, stretch.end) == regions[0]
    assert stretch.result.error_after < stretch.result.error_before
    before = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    changed = {t.name for t in rebuilt.graph.initializer if not np.array_equal(numpy_helper.to_array(t),
                                                                              before[t.name])}
    layer2_0 = {i for n in pruned.graph.node if n.name.startswith("/layer2/layer2.0/") for i in n.input}
    assert changed and changed <= layer2_0  # the kept block after the gap, nothing before or after it
    onnx.checker.check_model(rebuilt, full_check=True)


def test_a_stretch_that_reads_more_than_its_start_is_left_to_global_recovery(planned):
    model, planner, images = planned
    plan = [Action("filters", "layer2", 8)]
    pruned = planner.apply(plan)
    train, held = load_calibration(images, model).split(0.25)
    # layer2.0's shortcut reads the tensor before the stretch's start: the stretch cannot be trained alone
    rebuilt, done = reconstruct(model, pruned, planner.regions(plan), train, held.tensors(),
                                MimicSettings(5, batch_size=4, lr=1e-3), threads=1, quiet=True)
    assert done == [] and rebuilt is pruned
