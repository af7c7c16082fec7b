"""Channel groups on real exports, and PruneChannels checked against PyTorch running the unpruned graph with the
same channels masked (the consumers' weights for them zeroed): pruning must change nothing else."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from graphopt.calibration.bridge.onnx_torch import to_torch
from graphopt.channels import find_channel_groups
from graphopt.errors import GraphoptError
from graphopt.passes import prune_channels
from tests import zoo
from tests.helpers import assert_close, run_onnx

# name -> (groups found, prunable groups)
EXPECTED = {
    "resnet18": (13, 12),
    "mobilenet_v2": (26, 25),
    "efficientnet_b0": (41, 40),
    "regnet_x_400mf": (50, 5),
    "vit": (10, 2),
    "concat_net": (6, 5),
}
CASES = [(name, "torchscript") for name in EXPECTED] + [("resnet18", "dynamo"), ("mobilenet_v2", "dynamo")]


def _keep_half(analysis, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {g.id: rng.choice(g.size, max(1, g.size // 2), replace=False) for g in analysis.prunable}


def masked(model: onnx.ModelProto, analysis, keep) -> onnx.ModelProto:
    """The unpruned model with every consumer's weights for the removed channels set to zero."""
    masked_model = onnx.ModelProto()
    masked_model.CopyFrom(model)
    weights = {t.name: t for t in masked_model.graph.initializer}
    nodes = {n.output[0]: n for n in masked_model.graph.node}
    for edit in analysis.edits:
        if edit.kind != "in":
            continue
        tensor = weights[nodes[edit.node].input[edit.input]]
        value = onnx.numpy_helper.to_array(tensor).copy()
        removed = np.setdiff1d(np.arange(value.shape[edit.axis]), analysis.positions(edit.layouts[0], keep))
        index = [slice(None)] * value.ndim
        index[edit.axis] = removed
        value[tuple(index)] = 0
        tensor.CopyFrom(onnx.numpy_helper.from_array(value, tensor.name))
    return masked_model


@pytest.mark.parametrize("name,exporter", CASES)
def test_groups_found_and_pruned_as_masked(exported, name, exporter):
    model = exported(name, exporter)
    analysis = find_channel_groups(model)
    assert (len(analysis.groups), len(analysis.prunable)) == EXPECTED[name]
    for group in analysis.groups:
        assert group.prunable == (group.reason is None)
    keep = _keep_half(analysis)
    pruned = prune_channels(model, analysis, keep)
    onnx.checker.check_model(pruned, full_check=True)
    x = zoo.example_input(name)
    with torch.no_grad():
        expected = to_torch(masked(model, analysis, keep)).module(x)[0].numpy()
    assert_close(run_onnx(pruned, x), expected, tol=2e-4)
    assert sum(t.ByteSize() for t in pruned.graph.initializer) < sum(t.ByteSize() for t in model.graph.initializer)


def test_residual_stages_tie_every_producer(exported):
    analysis = find_channel_groups(exported("resnet18", "torchscript"))
    stage = analysis.group("layer2")
    assert stage.size == 128 and len(stage.producers) == 3  # layer2.0.conv2, its downsample, layer2.1.conv2
    assert "reaches the graph output" in analysis.group("fc").reason


def test_depthwise_and_squeeze_excite_follow_the_expansion(exported):
    analysis = find_channel_groups(exported("efficientnet_b0", "torchscript"))
    expanded = analysis.group("features.2.0.block")
    assert expanded.size == 96 and len(expanded.producers) == 2  # the 1x1 expansion and the SE gate's fc2
    depthwise = [e for e in analysis.edits if e.kind == "group"]
    assert len(depthwise) == 16  # every MBConv's depthwise conv follows its expansion's channels


def test_grouped_convolutions_are_reported_not_pruned(exported):
    analysis = find_channel_groups(exported("regnet_x_400mf", "torchscript"))
    grouped = [g for g in analysis.groups if not g.prunable]
    assert grouped and all("grouped convolution" in g.reason for g in grouped[:-1])
    with pytest.raises(GraphoptError, match="cannot be pruned: grouped convolution"):
        prune_channels(exported("regnet_x_400mf", "torchscript"), analysis, {grouped[0].id: np.arange(8)})


def test_transformer_mlp_is_prunable_and_the_residual_stream_is_not(exported):
    analysis = find_channel_groups(exported("vit", "torchscript"))
    assert sorted(g.size for g in analysis.prunable) == [64, 64]  # the two MLPs' hidden layers
    assert all("mlp.0" in g.id for g in analysis.prunable)


def test_concatenation_and_split_keep_offsets(exported):
    model = exported("concat_net", "torchscript")
    analysis = find_channel_groups(model)
    assert {e.kind for e in analysis.edits} >= {"split", "group"}
    keep = {"stem+gate": np.array([0, 3, 15]), "grow1.2": np.array([1, 7]), "grow2.2": np.arange(8)}
    pruned = prune_channels(model, analysis, keep)
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    sizes = onnx.numpy_helper.to_array(next(t for t in pruned.graph.initializer if t.name == split.input[1]))
    assert sizes.tolist() == [2, 11]  # split [12, 20] of stem|grow1|grow2: stem 0, 3 | stem 15, grow1 1, 7, grow2
    x = zoo.example_input("concat_net")
    with torch.no_grad():
        expected = to_torch(masked(model, analysis, keep)).module(x)[0].numpy()
    assert_close(run_onnx(pruned, x), expected)


def test_bad_keep_is_refused(exported):
    model = exported("resnet18", "torchscript")
    analysis = find_channel_groups(model)
    with pytest.raises(GraphoptError, match="unknown channel group 'nope'"):
        prune_channels(model, analysis, {"nope": np.arange(4)})
    with pytest.raises(GraphoptError, match="keep 1 to 64 distinct"):
        prune_channels(model, analysis, {"layer1.0.conv1": np.array([0, 0, 1])})
    with pytest.raises(GraphoptError, match="keep 1 to 64 distinct"):
        prune_channels(model, analysis, {"layer1.0.conv1": np.array([], dtype=int)})
