"""The final check: graphopt never hands back a model that its own measurement puts above the target.

A model is accepted when a measurement against the original meets the target and is either quiet (noise within
the threshold) or meets it even at the far end of its noise. A miss, or a pass that the noise could overturn, is
measured again; what happens after a second miss (add a block, or stop) is the pipeline's choice.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from graphopt.runtime import Comparison, LatencyBackend

MEASUREMENTS = 2


@dataclass
class TargetCheck:
    target: float
    measurements: list[Comparison]
    met: bool

    @property
    def final(self) -> Comparison:
        return self.measurements[-1]

    @property
    def undecided(self) -> bool:
        """Not met, yet the last measurement read under the target: the machine was too noisy to tell."""
        return not self.met and self.final.ratio <= self.target

    def describe(self) -> str:
        """The measured figures, for messages: '0.878 (noise ±0.004), 0.881 (noise ±0.003)'."""
        return ", ".join(f"{m.ratio:.3f} (noise ±{m.noise:.3f})" for m in self.measurements)

    def to_dict(self) -> dict:
        return {"target": self.target, "met": self.met, "undecided": self.undecided,
                "measurements": [m.to_dict() for m in self.measurements]}


def meets(comparison: Comparison, target: float) -> bool:
    """True when the measured ratio is within the target and the noise cannot put it outside."""
    return comparison.ratio <= target and (not comparison.noisy or comparison.ratio + comparison.noise <= target)


def last_measurement(final: Comparison | TargetCheck) -> Comparison:
    """A model against the original as last measured: the check's last measurement, or the one comparison."""
    return final.final if isinstance(final, TargetCheck) else final


def confirm_target(backend: LatencyBackend, original: onnx.ModelProto, model: onnx.ModelProto, target: float,
                   measurements: int = MEASUREMENTS) -> TargetCheck:
    """Measure `model` against `original` up to `measurements` times, stopping at the first that `meets` the target."""
    taken: list[Comparison] = []
    for _ in range(measurements):
        taken.append(backend.compare(original, model))
        if meets(taken[-1], target):
            return TargetCheck(target, taken, True)
    return TargetCheck(target, taken, False)
