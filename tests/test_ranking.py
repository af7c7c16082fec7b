"""Re-ranking cuts by what they cost together (graphopt/stages/rank.py), on a made-up plan error with known
interactions."""
from __future__ import annotations

from graphopt.methods import Action
from graphopt.stages.rank import rerank_by_plan

A, B, C, D = (Action("filters", name, 8) for name in "abcd")
BLOCK = Action("blocks", "layer1.1")
ALONE = {"a@8": 1.0, "b@8": 1.0, "c@8": 2.0, "d@8": 3.0, "layer1.1": 1.5}
SAVED = dict.fromkeys(ALONE, 1.0)


def _plan_error(calls: list):
    def error(actions: list[Action]) -> float:
        calls.append([a.id for a in actions])
        ids = {a.id for a in actions}
        together = 10.0 if {"a@8", "b@8"} <= ids else 0.0  # a and b interact: each is cheap only alone
        return sum(ALONE[i] for i in ids) + together
    return error


def test_a_cut_that_costs_more_with_the_plan_goes_back_in_line():
    calls = []
    ranked = [A, B, C, D]
    out = rerank_by_plan(ranked, ALONE, SAVED, _plan_error(calls), enough=lambda accepted: len(accepted) >= 3)
    assert [a.id for a in out] == ["a@8", "c@8", "d@8", "b@8"]
    assert ["a@8", "b@8"] in calls  # b was re-measured with a before it lost its place


def test_blocks_keep_their_score_and_are_not_re_measured():
    calls = []
    ranked = [A, BLOCK, B, C]
    out = rerank_by_plan(ranked, ALONE, SAVED, _plan_error(calls), enough=lambda accepted: len(accepted) >= 3,
                         joins=lambda action: action.method != "blocks")
    assert [a.id for a in out] == ["a@8", "layer1.1", "c@8", "b@8"]
    assert not any("layer1.1" in call for call in calls)


def test_nothing_is_measured_when_no_cut_is_needed():
    calls = []
    ranked = [B, A, D, C]
    out = rerank_by_plan(ranked, ALONE, SAVED, _plan_error(calls), enough=lambda accepted: True)
    assert out == ranked and not calls
