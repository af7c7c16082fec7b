"""--ray on a local Ray cluster (ray.init() on this machine, declaring two timing slots): cut scores computed as
tasks equal the single-process ones, the latency table's runs go out two at once, and the run chooses the same
plan as without Ray (the simulated backend's timings are exact, so any difference would be the distribution's)."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from graphopt.cluster import TIMING_RESOURCE, Cluster
from graphopt.errors import GraphoptError
from graphopt import selection
from graphopt.pipeline import accelerate
from tests.fake_latency import SimulatedBackend
from tests.helpers import FAST_ACCELERATE

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parent.parent


def test_no_cluster_to_join_is_a_clear_error():
    """First in the file: before the local cluster below exists, `auto` finds nothing to join."""
    assert not ray.is_initialized()
    with pytest.raises(GraphoptError, match="--ray auto: cannot connect to the Ray cluster"):
        Cluster("auto")


@pytest.fixture(scope="module")
def local_cluster():
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, resources={TIMING_RESOURCE: 2}, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})  # workers import tests.fake_latency
    yield Cluster("local")
    ray.shutdown()
    for signum, handler in kept.items():  # ray.init installed its own SIGTERM handler in this process
        signal.signal(signum, handler)


def test_joining_a_cluster_keeps_the_callers_signal_handlers(local_cluster, monkeypatch):
    """The CLI's SIGTERM handler (clean interrupt, no partial outputs) must survive ray.init inside a run."""
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        Cluster("local")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_scores_timing_and_plan_are_those_of_one_process(tiny, local_cluster, monkeypatch):
    path, images = tiny
    monkeypatch.setattr(selection, "TABLE_CHUNK", 3)  # several runs, so the table sends them two at once
    # a target that needs most cuts: the table times them all (a wave of two runs would stop later than one)
    options = dict(target_latency=0.55, methods=["blocks", "filters"], **FAST_ACCELERATE)
    alone = accelerate(path, images, backend=SimulatedBackend(), **options).report
    spread = accelerate(path, images, backend=SimulatedBackend(), ray="local", **options).report
    assert local_cluster.timing_slots == 2 and local_cluster.cpus == 2
    assert spread["runtime"]["runtime"] == "simulated on ray" and spread["runtime"]["cluster"]["timing_nodes"] == 2
    for method, scores in alone["cut_scores"].items():
        assert scores and spread["cut_scores"][method].keys() == scores.keys()
        for cut, score in scores.items():
            assert spread["cut_scores"][method][cut]["error"] == pytest.approx(score["error"], rel=1e-6, abs=1e-9)
    assert len(spread["candidates"]) > 2 * 3  # more than one wave of two runs of three cuts
    assert spread["latency_table"]["savings"] == pytest.approx(alone["latency_table"]["savings"], abs=1e-9)
    assert spread["ranking"] == alone["ranking"] and spread["selection"]["actions"] == alone["selection"]["actions"]
