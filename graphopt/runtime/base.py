"""The latency-backend interface: every runtime times models the same way and reports the same statistics."""
from __future__ import annotations

import abc
import time
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from tqdm.auto import tqdm

from graphopt.bounds import check_range
from graphopt.errors import GraphoptError


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
    """Two models timed in interleaved runs; `ratio` is other/base of the medians, `noise` its uncertainty."""

    base: LatencyStats
    other: LatencyStats
    noise: float = 0.0
    noisy: bool = False

    @property
    def ratio(self) -> float:
        return self.other.median_ms / self.base.median_ms

    def to_dict(self) -> dict:
        return {"base": self.base.to_dict(), "other": self.other.to_dict(), "ratio": self.ratio,
                "noise": self.noise, "noisy": self.noisy}


@dataclass(frozen=True)
class TimingRun:
    """Models timed in one interleaved run, the first being the base.

    A second copy of the base (its own session) runs in the same rounds, so `control_ratio` shows what a ratio of
    1 reads as on this machine right now. `noise` is the relative uncertainty of a ratio to the base: the larger
    of the control's distance from 1 and the 90% bootstrap half-width of any model's ratio over the rounds.
    """

    stats: list[LatencyStats]
    control_ratio: float
    noise: float
    noisy: bool
    seconds: float

    def ratio(self, index: int) -> float:
        return self.stats[index].median_ms / self.stats[0].median_ms

    def comparison(self, index: int) -> Comparison:
        return Comparison(self.stats[0], self.stats[index], self.noise, self.noisy)

    def to_dict(self) -> dict:
        return {"control_ratio": self.control_ratio, "noise": self.noise, "noisy": self.noisy,
                "seconds": self.seconds}


def ratio_noise(samples: np.ndarray, resamples: int = 200, seed: int = 0) -> float:
    """90% bootstrap half-width, relative, of each row's median ratio to row 0 (rows: models, columns: rounds),
    worst row. Rounds are resampled whole, so load that hits every model of a round alike cancels out."""
    rounds = samples.shape[1]
    if rounds < 2:
        return float("inf")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, rounds, size=(resamples, rounds))
    medians = np.median(samples[:, picks], axis=2)  # models x resamples
    ratios = medians[1:] / medians[:1]
    point = np.median(samples[1:], axis=1) / np.median(samples[0])
    low, high = np.percentile(ratios, [5, 95], axis=1)
    return float(np.max((high - low) / 2 / point))


class Runner(abc.ABC):
    """A model loaded on a runtime with its inputs bound; `run_ms` executes once and returns the time taken."""

    @abc.abstractmethod
    def run_ms(self) -> float: ...

    def close(self) -> None:
        """Release runtime resources (engines, sessions)."""


MAX_ROUNDS = 100_000  # --repeats, --warmup (and --batch): far above any useful value, low enough to end
MAX_TIMING_SECONDS = 3600.0  # one measurement; the latency table holds one per candidate cut


@dataclass
class TimingSettings:
    """`repeats` timed rounds at least, and more until `min_seconds` of timed runs have passed: a model that runs in
    a fraction of a millisecond needs hundreds of runs before its median stops moving. A ratio whose measured noise
    is above `noise_threshold` gets more rounds, `repeats` at a time, until `max_seconds` of wall time have passed
    since the run began. `check` keeps every one of these finite and bounded, so no measurement runs without end."""

    batch: int = 1
    warmup: int = 10
    repeats: int = 30
    min_seconds: float = 1.0
    input_shapes: dict[str, tuple[int, ...]] | None = None
    noise_threshold: float = 0.02  # a ratio less certain than this keeps being measured...
    max_seconds: float = 30.0  # ...until this much wall time has passed, then is reported as noisy

    def check(self) -> None:
        """One-line errors for values that would hang or break timing, named by their command-line options."""
        for flag, value, low in (("--batch", self.batch, 1), ("--repeats", self.repeats, 1),
                                 ("--warmup", self.warmup, 0)):
            if not low <= value <= MAX_ROUNDS:
                raise GraphoptError(f"{flag} must be at least {low} and at most {MAX_ROUNDS} (got {value})")
        check_range("--min-seconds", self.min_seconds, "number of seconds", 0, MAX_TIMING_SECONDS)
        check_range("--max-timing-seconds", self.max_seconds, "number of seconds", self.min_seconds,
                    MAX_TIMING_SECONDS)
        check_range("--noise-threshold", self.noise_threshold, "relative noise", 0, 1, low_open=True, high_open=True)


class LatencyBackend(abc.ABC):
    """Times ONNX models on one runtime. Subclasses only know how to load a model and run it once."""

    name: str = "?"

    def __init__(self, settings: TimingSettings | None = None):
        self.settings = settings or TimingSettings()

    def clock(self) -> float:
        """Seconds from an arbitrary start, for the timing cap (a simulated backend keeps its own)."""
        return time.perf_counter()

    @abc.abstractmethod
    def load(self, model: onnx.ModelProto) -> Runner:
        """Prepare `model` for timing at the configured batch size."""

    def describe(self) -> dict:
        """Runtime, device and settings, for reports."""
        return {"runtime": self.name, **{k: v for k, v in vars(self.settings).items() if k != "input_shapes"}}

    @property
    def parallel_runs(self) -> int:
        """Interleaved runs this backend can time at once (on separate machines); one here."""
        return 1

    def time_runs(self, runs: list[list[onnx.ModelProto]], noise_threshold: float | None = None) -> list[TimingRun]:
        """Several interleaved runs (see `time_run`), at once where the backend can (`parallel_runs`)."""
        return [self.time_run(models, None, noise_threshold) for models in runs]

    def measure(self, model: onnx.ModelProto) -> LatencyStats:
        return self.measure_many([model])[0]

    def compare(self, base: onnx.ModelProto, other: onnx.ModelProto) -> Comparison:
        return self.time_run([base, other]).comparison(1)

    def measure_many(self, models: list[onnx.ModelProto], progress: str | None = None) -> list[LatencyStats]:
        """Statistics of each model, timed interleaved (see `time_run`)."""
        return self.time_run(models, progress).stats

    def time_run(self, models: list[onnx.ModelProto], progress: str | None = None,
                 noise_threshold: float | None = None) -> TimingRun:
        """Time several models with their runs interleaved, so machine noise hits all of them alike; the order
        within a round rotates so no model always runs first. With more than one model, a control copy of the
        first is timed too and rounds are added while the ratios are noisier than `noise_threshold` (the settings'
        unless given: the latency table asks for less noise, since every prediction sums its savings).

        With `progress`, a progress bar of that title counts the rounds.
        """
        control = len(models) > 1
        runners = [self.load(m) for m in [*models, *models[:1]]] if control else [self.load(models[0])]
        bar = tqdm(desc=progress, disable=progress is None, leave=False, unit="round")
        try:
            threshold = self.settings.noise_threshold if noise_threshold is None else noise_threshold
            samples, noise = self._rounds(runners, control, bar, threshold)
        finally:
            bar.close()
            for runner in runners:
                runner.close()
        stats = [LatencyStats.from_samples(list(row), self.settings.batch) for row in samples[:len(models)]]
        control_ratio = float(np.median(samples[-1]) / np.median(samples[0])) if control else 1.0
        return TimingRun(stats, control_ratio, noise, noise > threshold,
                         round(float(samples.sum()) / 1000, 3))

    def _rounds(self, runners: list[Runner], control: bool, bar, threshold: float) -> tuple[np.ndarray, float]:
        """Timed samples (runners x rounds) and their ratio noise (0 without a control)."""
        settings = self.settings
        samples: list[list[float]] = [[] for _ in runners]
        timed_ms, round_, goal = 0.0, 0, settings.warmup + settings.repeats
        started = self.clock()
        while True:
            while round_ < goal or timed_ms < 1000 * settings.min_seconds:
                # rotate who goes first: the first model of a round was measured reading ~7% slow on a CPU
                for index in (i % len(runners) for i in range(round_, round_ + len(runners))):
                    elapsed = runners[index].run_ms()
                    if round_ >= settings.warmup:
                        samples[index].append(elapsed)
                        timed_ms += elapsed
                round_ += 1
                bar.update()
            array = np.asarray(samples, dtype=np.float64)
            if not control:
                return array, 0.0
            noise = max(abs(float(np.median(array[-1]) / np.median(array[0])) - 1), ratio_noise(array))
            # the cap is wall time: for a sub-millisecond model the runs are a small part of what a round costs
            if noise <= threshold or self.clock() - started >= settings.max_seconds:
                return array, noise
            goal = round_ + settings.repeats
