"""The basis method on the tiny ResNet: which nodes and ranks are offered, output bases fitted on real images,
double pruning (a split node whose channels are also pruned), and accelerate with --methods basis."""
from __future__ import annotations

from dataclasses import replace

import onnx
import pytest
import torch

from graphopt.calibration.scoring.fitted_bases import fitted_bases
from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.bridge.teacher import Teacher
from graphopt.methods import Action
from graphopt.methods.basis import basis_actions, decomposable_nodes
from graphopt.passes import Basis, decompose_conv
from graphopt.pipeline import accelerate
from graphopt.stages.report import Report
from tests.fake_latency import SimulatedBackend
from tests.helpers import FAST_ACCELERATE, planner_for, run_onnx

FAST = FAST_ACCELERATE


@pytest.fixture(scope="module")
def setting(tiny):
    """(model, shapes, planner with filters and data bases, basis actions, calibration images)."""
    path, images = tiny
    model, shapes, _ = planner_for(path)
    actions = basis_actions(model, shapes)
    x = load_calibration(images, model).tensors()
    _, _, planner = planner_for(path, fitted_bases(model, sorted({a.target for a in actions}), x, threads=1))
    return model, shapes, planner, actions, x


def test_ranks_offered_save_multiply_adds(setting):
    model, shapes, _, actions, _ = setting
    nodes = {n.output: n for n in decomposable_nodes(model, shapes)}
    assert actions and {a.method for a in actions} == {"basis"}
    for action in actions:
        node = nodes[action.target]
        assert action.keep % 8 == 0 and action.keep < node.full_rank
        # below the break-even rank outputs·entries / (outputs + entries), so the split saves work
        assert action.keep < node.outputs * node.entries / (node.outputs + node.entries)
        assert node.macs_at(action.keep) < node.macs and action.macs_share > 0
    # the 3x3 convs of the widest stage are offered; the 1x1 projection from 8 channels is not worth splitting
    assert any(nodes[a.target].entries == 32 * 9 for a in actions)
    assert all(nodes[a.target].entries > 8 for a in actions)


def test_output_bases_fit_the_data_better_than_the_weight_svd(setting):
    model, _, planner, actions, x = setting
    action = max(actions, key=lambda a: a.macs_share)
    want = Teacher(model, [action.target])(x)[action.target]

    def error(basis: Basis) -> float:
        got = Teacher(decompose_conv(model, {action.target: basis}), [action.target])(x)[action.target]
        return float(((got - want) ** 2).sum() / (want ** 2).sum())

    svd, data = error(Basis(action.keep)), error(replace(planner.bases[action.target], rank=action.keep))
    assert data < svd


def test_double_pruning_splits_the_pruned_weight(setting):
    model, _, planner, actions, x = setting
    split = next(a for a in actions if a.target in {e.node for e in planner.channels.edits if e.kind == "out"})
    group = next(g for g in planner.channels.prunable
                 if any(e.node == split.target and e.kind == "out" and planner.channels.table.find(
                     e.layouts[0][0].group) == g.root for e in planner.channels.edits))
    plan = [Action("filters", group.id, group.size // 2), split]
    cut = planner.apply(plan)
    onnx.checker.check_model(cut, full_check=True)
    assert [a.method for a in planner.normalise(plan)] == ["filters", "basis"]
    assert len(cut.graph.node) == len(planner.apply([plan[0]]).graph.node) + 1
    assert run_onnx(cut, x[:2].numpy()).shape == run_onnx(model, x[:2].numpy()).shape
    assert planner.cuts([split])[0] == next(n.input[0] for n in model.graph.node if n.output[0] == split.target)


def test_no_split_inside_a_dropped_block(setting):
    _, _, planner, actions, _ = setting
    block, inside = next((b, a) for b in planner.blocks for a in actions
                         if b.droppable and planner.labels[a.target] in b.nodes)
    assert [a.id for a in planner.normalise([Action("blocks", block.id), inside])] == [block.id]
    assert [a.id for a in planner.normalise([inside, Action("blocks", block.id)])] == [block.id]
    assert [a.id for a in planner.normalise([inside])] == [inside.id]


def test_accelerate_with_basis_cuts_writes_a_verified_model(tiny, tmp_path):
    path, images = tiny
    result = accelerate(path, images, tmp_path / "out.onnx", target_latency=0.85, methods=["basis"],
                        backend=SimulatedBackend(), **FAST)
    report = result.report
    assert isinstance(result.summary, Report) and report == result.summary.to_dict()
    assert report["split"] and not report["pruned"] and not report["dropped"] and report["target"]["met"]
    assert report["cut_scores"]["basis"] and not report["cut_scores"].get("filters") and report["channel_groups"] is None
    assert all(score["error"] > 0 for score in report["cut_scores"]["basis"].values())
    written = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(written, full_check=True)
    assert len(written.graph.node) > len(onnx.load(str(path)).graph.node)  # a head and a tail per split node
    assert run_onnx(written, torch.randn(3, 3, 16, 16).numpy()).shape == (3, 10)


def test_taylor_orders_every_basis_of_every_offered_node(setting):
    model, shapes, planner, actions, x = setting
    nodes = {n.output: n for n in decomposable_nodes(model, shapes)}
    ordered = fitted_bases(model, sorted(planner.bases), x, model.graph.output[0].name, threads=1)
    for name, basis in ordered.items():
        assert sorted(basis.order.tolist()) == list(range(nodes[name].full_rank))
    assert any(b.order.tolist() != sorted(b.order.tolist()) for b in ordered.values())  # not the energy order
