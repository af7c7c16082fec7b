"""A method is a plug-in: a toy one, defined here and registered at run time, is found, timed, scored, selected and
reported by the same stages as the built-in ones, with no change anywhere else."""
from __future__ import annotations

import onnx
import pytest

from graphopt.errors import GraphoptError
from graphopt.methods import Action, Method, Planner, names, register
from graphopt.methods.method import Build, Discovery
from graphopt.methods.registry import counts, describe, method, unregister
from graphopt.pipeline import accelerate
from graphopt.selection import latency_table, select
from tests.fake_latency import SimulatedBackend
from tests.helpers import FAST_ACCELERATE, planner_for


class Identity(Method):
    """One cut that changes nothing: the smallest method there is."""

    name = "identity"
    summary = "change nothing"
    lacking = "nodes"
    counted = "identity cuts"
    at_limit = "identities applied"
    applies_at = 3

    def discover(self, found: Discovery) -> list[Action]:
        return [Action(self.name, found.model.graph.node[-1].output[0], macs_share=0.01)]

    def label(self, action: Action) -> str:
        return f"same@{action.target}"

    def build(self, planner: Planner, build: Build, mine: list[Action]) -> None:
        copy = onnx.ModelProto()
        copy.CopyFrom(build.model)
        build.model = copy


@pytest.fixture
def identity():
    entry = register(Identity())
    yield entry
    unregister(entry.name)


def test_a_registered_method_is_planned_timed_and_selected(tiny, identity):
    path, _ = tiny
    model, _, planner = planner_for(path)
    cut = Action("identity", model.graph.node[-1].output[0])
    assert "identity" in names() and method("identity") is identity and cut.id == f"same@{cut.target}"
    block = Action("blocks", planner.blocks[0].id)
    assert planner.normalise([cut, block, cut]) == [planner.normalise([block])[0], cut]  # registry order, once
    applied = planner.apply([cut])
    assert applied is not model and applied.SerializeToString() == model.SerializeToString()
    backend = SimulatedBackend()
    table = latency_table(backend, planner, [cut, block], quiet=True)
    assert table.savings[cut.id] == pytest.approx(0.0, abs=1e-9) and table.savings[block.id] > 0
    chosen = select(backend, planner, [cut, block], table, count=1)
    assert [a.id for a in chosen.actions] == [cut.id] and chosen.ratio == pytest.approx(1.0)
    assert counts([cut, block, cut])["identity"] == 2 and "2 identity cuts" in describe([cut, cut])


def test_accelerate_searches_a_registered_method(tiny, identity):
    path, images = tiny
    report = accelerate(path, images, target_latency=0.8, methods=["identity", "blocks"],
                        backend=SimulatedBackend(), **FAST_ACCELERATE).report
    assert report["methods"] == ["identity", "blocks"]
    offered = [c for c in report["candidates"] if c["method"] == "identity"]
    assert len(offered) == 1 and offered[0]["id"].startswith("same@") and offered[0]["macs_share"] == 0.01
    scores = report["cut_scores"]["identity"]
    assert list(scores) == [offered[0]["id"]] and scores[offered[0]["id"]]["error"] == pytest.approx(0, abs=1e-6)
    assert report["cut_scores"]["blocks"] and report["target"]["met"]


def test_an_unknown_method_is_refused_and_a_name_is_registered_once(tiny, identity):
    path, images = tiny
    with pytest.raises(GraphoptError, match="unknown method.*nope.*identity"):
        accelerate(path, images, target_latency=0.8, methods=["nope"], backend=SimulatedBackend(), **FAST_ACCELERATE)
    with pytest.raises(GraphoptError, match="already registered"):
        register(Identity())
