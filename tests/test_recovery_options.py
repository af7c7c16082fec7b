"""Recovery options that are off by default until they beat the default on Lite0
(docs/studies/recovery_choices.md): they must still do what they say."""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from graphopt.blocks import find_blocks
from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.recovery.mimic import MimicSettings
from graphopt.calibration.recovery.recover import epochs, recover
from graphopt.features import feature_tensors
from graphopt.methods import Planner
from graphopt.methods.blocks import block_actions
from graphopt.passes import drop_blocks


def _recover(tiny, **options):
    path, images = tiny
    original = onnx.load(str(path))
    blocks = find_blocks(original)
    dropped = [b for b in blocks if b.id == "layer3.1"]
    pruned = drop_blocks(original, ["layer3.1"], blocks)
    train, held = load_calibration(images, original).split(0.25)
    cuts = Planner(original, blocks).cuts(block_actions(dropped))
    recovered = recover(original, pruned, cuts, feature_tensors(original), train, held.tensors(),
                        MimicSettings(6, batch_size=4, lr=1e-3), threads=1, quiet=True, **options)
    before = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    changed = {t.name for t in recovered.model.graph.initializer
               if not np.array_equal(numpy_helper.to_array(t), before[t.name])}
    first_conv = next(n for n in pruned.graph.node if n.op_type == "Conv").input[1]
    return recovered, changed, first_conv


def test_recovery_from_the_input_trains_the_weights_before_the_gap(tiny):
    # by default the student starts at the gap; layer3.1 is the last block, so nothing trainable follows its gap
    # before the features and the student starts at the previous block's input instead
    default, changed, first_conv = _recover(tiny)
    layer3_0 = next(b for b in find_blocks(onnx.load(str(tiny[0]))) if b.id == "layer3.0")
    assert changed and first_conv not in changed and default.student.cut == layer3_0.skip
    everything, changed, first_conv = _recover(tiny, from_input=True)
    assert first_conv in changed and everything.student.cut == "input"
    assert everything.result.error_after <= everything.result.error_before


def test_logits_recover_without_touching_the_head(tiny):
    recovered, changed, _ = _recover(tiny, logits="logits")
    head = {n.input[1] for n in recovered.model.graph.node if n.op_type == "Gemm"}
    assert head and not head & changed and changed
    assert recovered.result.error_after <= recovered.result.error_before


def test_each_augmented_copy_serves_view_epochs_epochs(tiny):
    # the teacher runs once per augmented copy; every epoch of a copy is a reshuffle that sees each photo once
    path, images = tiny
    train = load_calibration(images, onnx.load(str(path)))
    passes = []

    def teacher(batch):
        passes.append(batch)
        return {"cut": batch, "feature": batch.mean(dim=(2, 3))}

    batches = epochs(teacher, train, "cut", ["feature"], MimicSettings(batch_size=4, view_epochs=3))
    per_epoch = -(-len(train) // 4)
    seen = [next(batches)[0] for _ in range(3 * per_epoch * 2)]
    assert len(passes) == 2
    for copy, start in ((passes[0], 0), (passes[0], per_epoch), (passes[0], 2 * per_epoch), (passes[1], 3 * per_epoch)):
        epoch = torch.cat(seen[start:start + per_epoch])
        assert sorted(float(x) for x in epoch.sum(dim=(1, 2, 3))) == \
            pytest.approx(sorted(float(x) for x in copy.sum(dim=(1, 2, 3))))
    assert not torch.equal(passes[0], passes[1])
