"""A simulated latency backend for testing selection, re-measurement and the target check without timing anything.

A model's latency is `overhead_ms + ms_per_mmac * MACs / 1e6` (times `int8_speedup` for a quantized model), times
a machine-load factor the test chooses, times (1 + `noise` x a standard normal draw). Draws come from one seeded
generator, so a test sees the same numbers every run. The samples are what `run_ms` returns; nothing sleeps, and
the timing cap reads the simulated clock (the sum of the runs' latencies), so the same runs happen on any machine.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from graphopt.calibration.quantize.static import is_quantized
from graphopt.macs import model_macs
from graphopt.runtime.base import LatencyBackend, Runner, TimingRun, TimingSettings
from graphopt.shapes import infer_shapes

# busy(timing, nominal_ms) -> factor: `timing` counts the backend's timing runs from 1; `nominal_ms` tells models apart
Busy = Callable[[int, float], float]


class _SimulatedRunner(Runner):
    def __init__(self, backend: "SimulatedBackend", nominal_ms: float):
        self.backend = backend
        self.nominal_ms = nominal_ms

    def run_ms(self) -> float:
        backend = self.backend
        factor = backend.busy(backend.timings, self.nominal_ms) if backend.busy else 1.0
        elapsed = self.nominal_ms * factor * (1 + backend.noise * backend.rng.standard_normal())
        backend.elapsed_ms += elapsed
        return elapsed


class SimulatedBackend(LatencyBackend):
    name = "simulated"

    def __init__(self, settings: TimingSettings | None = None, ms_per_mmac: float = 10.0, overhead_ms: float = 0.0,
                 noise: float = 0.0, seed: int = 0, busy: Busy | None = None, int8_speedup: float = 1.0):
        super().__init__(settings or TimingSettings(warmup=1, repeats=20, min_seconds=0))
        self.ms_per_mmac, self.overhead_ms, self.noise, self.busy = ms_per_mmac, overhead_ms, noise, busy
        self.int8_speedup = int8_speedup
        self.rng = np.random.default_rng(seed)
        self.timings = 0
        self.elapsed_ms = 0.0  # simulated time: the sum of every run's latency

    def clock(self) -> float:
        return self.elapsed_ms / 1000

    def nominal_ms(self, model: onnx.ModelProto) -> float:
        speed = self.int8_speedup if is_quantized(model) else 1.0
        return self.overhead_ms + speed * self.ms_per_mmac * model_macs(model, infer_shapes(model)) / 1e6

    def load(self, model: onnx.ModelProto) -> Runner:
        return _SimulatedRunner(self, self.nominal_ms(model))

    def time_run(self, models: list[onnx.ModelProto], progress: str | None = None,
                 noise_threshold: float | None = None) -> TimingRun:
        self.timings += 1
        return super().time_run(models, progress, noise_threshold)
