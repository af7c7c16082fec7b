"""The latency-table stage times the cuts a target could need, in the order a plan would take them, and stops once
they save enough (graphopt/stages/table.py); on a simulated latency backend, with runs of two cuts so the tiny
ResNet's eleven cuts take several."""
from __future__ import annotations

import pytest

from graphopt import selection
from graphopt.pipeline import accelerate
from graphopt.stages import table as table_stage
from tests.fake_latency import SimulatedBackend
from tests.helpers import FAST_ACCELERATE


@pytest.fixture
def two_per_run(monkeypatch):
    monkeypatch.setattr(selection, "TABLE_CHUNK", 2)


def test_a_mild_target_times_only_the_cuts_it_could_need(tiny, two_per_run):
    path, images = tiny
    result = accelerate(path, images, target_latency=0.9, backend=SimulatedBackend(), **FAST_ACCELERATE)
    report = result.report
    table, candidates = report["latency_table"], [c["id"] for c in report["candidates"]]
    assert table["untimed"] and set(table["savings"]) | set(table["untimed"]) == set(candidates)
    assert sum(max(0, s) for s in table["savings"].values()) >= table_stage.TIMED_SAVINGS_MARGIN * 0.1
    assert set(report["ranking"]) == set(table["savings"])  # only timed cuts are ranked and selected
    assert report["target"]["met"] and report["latency"]["ratio"] <= 0.9
    # the cuts left untimed are those that lose most per multiply-add removed
    errors = {cut: score["error"] for cut, score in {**report["cut_scores"]["blocks"], **report["cut_scores"]["filters"]}.items()}
    shares = {c["id"]: c["macs_share"] for c in report["candidates"]}
    cost = {cut: errors[cut] / max(shares[cut], 1e-3) for cut in candidates}
    assert max(cost[c] for c in table["savings"]) <= min(cost[c] for c in table["untimed"])


def test_cuts_that_cannot_reach_the_target_together_get_the_rest_timed(tiny, two_per_run, monkeypatch):
    path, images = tiny
    monkeypatch.setattr(table_stage, "TIMED_SAVINGS_MARGIN", 1e-6)  # stop after the first run of two cuts
    result = accelerate(path, images, target_latency=0.5, backend=SimulatedBackend(), **FAST_ACCELERATE)
    report = result.report
    assert report["latency_table"]["untimed"] == []
    assert len(report["latency_table"]["savings"]) == len(report["candidates"])
    assert report["target"]["met"] and report["latency"]["ratio"] <= 0.5


def test_when_no_plan_of_the_timed_cuts_measures_under_the_target_the_rest_are_timed(tiny, two_per_run,
                                                                                     monkeypatch):
    # the timed cuts at once can pass the reachability check within its noise (0.804 for 0.8 on Lite1) while every
    # plan of them misses: selection then times the rest rather than give up
    path, images = tiny
    monkeypatch.setattr(table_stage, "TIMED_SAVINGS_MARGIN", 1e-6)  # stop after the first run of two cuts
    monkeypatch.setattr(table_stage, "check_reachable", lambda *args: None)
    result = accelerate(path, images, target_latency=0.5, backend=SimulatedBackend(), **FAST_ACCELERATE)
    report = result.report
    assert report["latency_table"]["untimed"] == []
    assert len(report["latency_table"]["savings"]) == len(report["candidates"])
    assert report["target"]["met"] and report["latency"]["ratio"] <= 0.5


def test_a_number_of_blocks_to_drop_times_every_cut(tiny, two_per_run):
    path, images = tiny
    result = accelerate(path, images, drop=1, backend=SimulatedBackend(), **FAST_ACCELERATE)
    assert result.report["latency_table"]["untimed"] == []


def test_the_search_stops_timing_when_its_share_of_the_budget_is_spent(tiny, two_per_run, monkeypatch):
    """Recovery's share of the budget is kept: once the search's part is spent (here at once), the table stops
    after its first run (unless the cuts timed cannot reach the target), and the report shows the split."""
    from graphopt.stages.state import Run
    monkeypatch.setattr(Run, "search_over", lambda self: True)
    path, images = tiny
    result = accelerate(path, images, target_latency=0.9, backend=SimulatedBackend(), **FAST_ACCELERATE)
    report = result.report
    timed = report["latency_table"]["savings"]
    assert len(timed) == 2 and report["target"]["met"]
    assert sum(timed.values()) < table_stage.TIMED_SAVINGS_MARGIN * 0.1, "stopped by the budget, not by savings"
    budget = report["budget"]
    assert budget["budget_s"] == 600 and budget["recovery_kept_s"] == 300
    assert set(budget["spent_s"]) == {"prepare", "search", "recovery", "checks"}
    assert budget["total_s"] == pytest.approx(sum(report["seconds"].values()), abs=0.5)
    assert budget["recovery_steps"] == report["feature_error"]["steps"] <= FAST_ACCELERATE["recover_iterations"]
    assert "fewer than 100" in budget["note"]


def test_scoring_stops_at_its_share_of_the_budget_and_unscored_cuts_are_not_searched(tiny, monkeypatch):
    """Scoring's part of the budget spent (here at once): the first cut, the largest, is scored; the others are
    listed unscored, never timed or ranked, and the run goes on with what was scored."""
    from graphopt.stages.state import Run
    monkeypatch.setattr(Run, "scoring_over", lambda self: True)
    path, images = tiny
    result = accelerate(path, images, target_latency=0.9, backend=SimulatedBackend(), **FAST_ACCELERATE)
    report = result.report
    shares = {c["id"]: c["macs_share"] for c in report["candidates"]}
    scored = set(report["cut_scores"]["blocks"]) | set(report["cut_scores"]["filters"])
    assert len(scored) == 1 and shares[next(iter(scored))] == max(shares.values())
    assert sorted(report["unscored"]) == sorted(set(shares) - scored)
    assert set(report["latency_table"]["savings"]) == scored and set(report["ranking"]) == scored
    assert report["target"]["met"]
