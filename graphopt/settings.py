"""The settings of an accelerate run: one place for their defaults (the CLI and the API both read them)."""
from __future__ import annotations

from dataclasses import dataclass, field

from graphopt.runtime.base import TimingSettings


LR_CANDIDATES = (5e-4, 1e-4)
ADAPTOR_LR = 1e-3


@dataclass
class AccelerateSettings:
    """Everything that shapes the result; recorded in the report."""

    target_latency: float | None = None  # ratio to the original's measured latency
    target_ms: float | None = None
    drop: int | None = None
    blocks: list[str] | None = None  # drop exactly these (no recoverability scoring), then recover
    runtime: str = "onnxruntime"
    precision: str = "fp32"
    batch: int = 1
    threads: int | None = None
    warmup: int = TimingSettings.warmup
    repeats: int = TimingSettings.repeats
    min_seconds: float = TimingSettings.min_seconds
    feature_tensor: str | None = None
    holdout: float = 0.2
    seed: int = 0
    score_iterations: int = 60
    recover_iterations: int = 250
    lr: float | None = None  # recovery's Adam rate; None: probe LR_CANDIDATES and keep the best on held-out images
    batch_size: int = 16  # images per training step; cost follows images seen (batch x steps), measured
    preprocess: dict = field(default_factory=dict)  # size, norm, mean, std, bgr, resize
    cache_dir: str | None = None
    use_cache: bool = True

    def targets(self) -> int:
        return sum(v is not None for v in (self.target_latency, self.target_ms, self.drop, self.blocks))
