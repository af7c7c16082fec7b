"""Over the accuracy floor after recovery, the lossiest cuts are given back into the recovered model
(graphopt/stages/giveback.py): the first model inside the floor that still meets the target is handed back;
otherwise the given-back models are frontier points and --keep-best writes the fastest inside the floor. Losses are
scripted here (the recovered result over the floor, each given-back model inside it); models, latency (simulated
backend) and recovery are real."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphopt.errors import AccuracyFloorMissed
from graphopt.pipeline import accelerate
from graphopt.quality import DropEstimate
from graphopt.stages import floor, giveback
from tests.fake_latency import SimulatedBackend
from tests.helpers import FAST_ACCELERATE

OVER, INSIDE = DropEstimate(3.0, 3.5, 0.9, 20, 80), DropEstimate(0.4, 0.5, 0.99, 20, 80)
FAST = {**FAST_ACCELERATE, "recover_iterations": 20}


@pytest.fixture
def scripted(monkeypatch):
    """The first loss asked for (the recovered result) is over a 1-point floor, every later one inside it."""
    calls = []

    def losses(self, models):
        calls.append(len(models))
        return [OVER if len(calls) == 1 else INSIDE for _ in models]
    monkeypatch.setattr(floor.Losses, "__call__", losses)
    return calls


def test_a_given_back_model_inside_the_floor_that_meets_the_target_is_handed_back(tiny, scripted, monkeypatch):
    monkeypatch.setattr(giveback.Returned, "met", property(lambda self: True))
    path, images = tiny
    result = accelerate(path, images, target_latency=0.6, backend=SimulatedBackend(), **FAST)
    report = result.report
    quality = report["quality"]
    assert quality["met"] and quality["given_back"] and quality["over_floor_before"]["upper"] == OVER.upper
    chosen = [row for row in report["frontier"] if row["chosen"]]
    assert [row["model"] for row in chosen] == [giveback.GIVEN_BACK]
    assert set(quality["given_back"]).isdisjoint(report["selection"]["actions"])
    assert chosen[0]["cuts"] == report["selection"]["actions"]
    onnx.checker.check_model(result.model, full_check=True)
    # the recovered weights were kept where the smaller plan has the same tensors, not the original's
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    trained = [t.name for t in result.model.graph.initializer if t.name in original
               and original[t.name].shape == tuple(t.dims)
               and not np.array_equal(original[t.name], numpy_helper.to_array(t))]
    assert trained


def test_given_back_models_that_miss_the_target_are_frontier_points_keep_best_writes(tiny, scripted, tmp_path):
    path, images = tiny
    out = tmp_path / "out.onnx"
    with pytest.raises(AccuracyFloorMissed, match="given back after recovery") as missed:
        accelerate(path, images, out, target_latency=0.6, backend=SimulatedBackend(), keep_best=True, **FAST)
    points = missed.value.points
    returned = [p for p in points if p.model == giveback.GIVEN_BACK]
    result = next(p for p in points if p.model == "graphopt")
    assert returned and all(len(p.cuts) < len(result.cuts) for p in returned)
    assert all(p.ratio > result.ratio for p in returned)
    assert missed.value.best_label == giveback.GIVEN_BACK and missed.value.kept == str(out)
    assert [p.model for p in points if p.chosen] == [giveback.GIVEN_BACK]
    written = onnx.load(str(out))
    assert written.graph.SerializeToString() == missed.value.best.graph.SerializeToString()


def test_cuts_the_user_named_are_never_given_back(tiny, scripted):
    path, images = tiny
    with pytest.raises(AccuracyFloorMissed) as missed:
        accelerate(path, images, drop=2, backend=SimulatedBackend(), **FAST)
    assert not [p for p in missed.value.points if p.model == giveback.GIVEN_BACK]
