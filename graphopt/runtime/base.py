"""The latency-backend interface: every runtime times models the same way and reports the same statistics."""
from __future__ import annotations

import abc
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from tqdm.auto import tqdm


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency of one model, in milliseconds, over `runs` timed calls after warm-up."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    batch: int

    @classmethod
    def from_samples(cls, samples_ms: list[float], batch: int) -> "LatencyStats":
        arr = np.asarray(samples_ms, dtype=np.float64)
        p10, med, p90 = np.percentile(arr, [10, 50, 90])
        return cls(float(med), float(p10), float(p90), len(arr), batch)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """Two models timed in interleaved runs; `ratio` is other/base of the medians."""

    base: LatencyStats
    other: LatencyStats

    @property
    def ratio(self) -> float:
        return self.other.median_ms / self.base.median_ms

    def to_dict(self) -> dict:
        return {"base": self.base.to_dict(), "other": self.other.to_dict(), "ratio": self.ratio}


class Runner(abc.ABC):
    """A model loaded on a runtime with its inputs bound; `run_ms` executes once and returns the time taken."""

    @abc.abstractmethod
    def run_ms(self) -> float: ...

    def close(self) -> None:
        """Release runtime resources (engines, sessions)."""


@dataclass
class TimingSettings:
    """`repeats` timed rounds at least, and more until `min_seconds` of timed runs have passed: a model that runs in
    a fraction of a millisecond needs hundreds of runs before its median stops moving."""

    batch: int = 1
    warmup: int = 10
    repeats: int = 30
    min_seconds: float = 1.0
    input_shapes: dict[str, tuple[int, ...]] | None = None


class LatencyBackend(abc.ABC):
    """Times ONNX models on one runtime. Subclasses only know how to load a model and run it once."""

    name: str = "?"

    def __init__(self, settings: TimingSettings | None = None):
        self.settings = settings or TimingSettings()

    @abc.abstractmethod
    def load(self, model: onnx.ModelProto) -> Runner:
        """Prepare `model` for timing at the configured batch size."""

    def describe(self) -> dict:
        """Runtime, device and settings, for reports."""
        return {"runtime": self.name, **{k: v for k, v in vars(self.settings).items() if k != "input_shapes"}}

    def measure(self, model: onnx.ModelProto) -> LatencyStats:
        return self.measure_many([model])[0]

    def compare(self, base: onnx.ModelProto, other: onnx.ModelProto) -> Comparison:
        first, second = self.measure_many([base, other])
        return Comparison(first, second)

    def measure_many(self, models: list[onnx.ModelProto], progress: str | None = None) -> list[LatencyStats]:
        """Time several models with their runs interleaved, so machine noise hits all of them alike; the order
        within a round rotates so no model always runs first.

        With `progress`, a progress bar of that title counts the rounds.
        """
        settings = self.settings
        runners = [self.load(m) for m in models]
        bar = tqdm(desc=progress, disable=progress is None, leave=False, unit="round")
        samples: list[list[float]] = [[] for _ in runners]
        timed_ms, round_ = 0.0, 0
        try:
            while round_ < settings.warmup + settings.repeats or timed_ms < 1000 * settings.min_seconds:
                # rotate who goes first: the first model of a round was measured reading ~7% slow on a CPU
                for index in (i % len(runners) for i in range(round_, round_ + len(runners))):
                    elapsed = runners[index].run_ms()
                    if round_ >= settings.warmup:
                        samples[index].append(elapsed)
                        timed_ms += elapsed
                round_ += 1
                bar.update()
        finally:
            bar.close()
            for runner in runners:
                runner.close()
        return [LatencyStats.from_samples(s, self.settings.batch) for s in samples]
