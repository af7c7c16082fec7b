"""Latency timed on the nodes of a Ray cluster that serve the model (graphopt/cluster.py): each interleaved run is
one task on a node holding the timing resource, with the backend built there as it would be built here; runs of
the latency table go out several at once, one per such node. Ratios come from one run on one node, so they keep
their meaning when runs land on different nodes of the same type."""
from __future__ import annotations

from collections.abc import Callable

import onnx

from graphopt.errors import GraphoptError
from graphopt.runtime.base import LatencyBackend, Runner, TimingRun


def _time_run(build: Callable[[], LatencyBackend], job: tuple[list[onnx.ModelProto], float | None]) -> TimingRun:
    models, threshold = job
    return build().time_run(models, None, threshold)


class RemoteTiming(LatencyBackend):
    """Times on the cluster's timing nodes what `build()` (run on the node) would time locally."""

    def __init__(self, cluster, build: Callable[[], LatencyBackend]):
        self.local = build()  # its settings and description; also checks the backend can be built at all
        super().__init__(self.local.settings)
        self.cluster, self.build = cluster, build
        self.name = f"{self.local.name} on ray"

    @property
    def parallel_runs(self) -> int:
        return max(1, self.cluster.timing_slots)

    def load(self, model: onnx.ModelProto) -> Runner:
        raise GraphoptError("internal error: a remote backend times whole runs on the cluster, not single runners")

    def time_run(self, models: list[onnx.ModelProto], progress: str | None = None,
                 noise_threshold: float | None = None) -> TimingRun:
        return self.time_runs([models], noise_threshold)[0]

    def time_runs(self, runs: list[list[onnx.ModelProto]], noise_threshold: float | None = None) -> list[TimingRun]:
        return self.cluster.map(_time_run, self.build, [(models, noise_threshold) for models in runs], timing=True)

    def describe(self) -> dict:
        return {**self.local.describe(), "runtime": self.name, "cluster": self.cluster.describe()}
