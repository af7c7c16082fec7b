"""Recoverability (PRACTISE): how much feature error is left when a block is dropped and only identity-initialised
1x1 adaptors around the gap are trained to make up for it. Low recoverability error = cheap to lose.

Made cheap for small CPUs: the teacher computes every block's input once; each block's student is only the part
of the network after that block; training stops when the held-out error stops improving. (A least-squares start
for the gap adaptor, fitting the block's output from its input, was tried on EfficientNet-Lite0 and made the
feature error worse than identity: the local fit does not know what the later layers need.)
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import onnx
import torch
from tqdm.auto import tqdm

from graphopt.blocks import Block
from graphopt.calibration.recovery.mimic import MimicSettings, mimic, minibatches
from graphopt.calibration.bridge.student import build_student, device
from graphopt.calibration.bridge.teacher import Teacher
from graphopt.passes import drop_blocks


@dataclass
class Recoverability:
    block: str
    error_dropped: float  # held-out feature error with the block simply dropped
    error: float  # ... after adaptor training: the recoverability score's numerator
    steps: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def valid_scores(entry: object) -> bool:
        """Whether `entry` (a cache entry read back) is {block id: a to_dict() of this class}."""
        numbers = ("error_dropped", "error", "steps", "seconds")
        return isinstance(entry, dict) and all(
            isinstance(block, str) and isinstance(score, dict) and score.get("block") == block
            and all(isinstance(score.get(name), (int, float)) and not isinstance(score.get(name), bool)
                    for name in numbers)
            for block, score in entry.items())


def score_blocks(model: onnx.ModelProto, blocks: list[Block], features: list[str], train: torch.Tensor,
                 held: torch.Tensor, settings: MimicSettings, threads: int | None = None,
                 quiet: bool = False) -> dict[str, Recoverability]:
    """Recoverability of each block in `blocks` on calibration images `train` (fit) and `held` (scored)."""
    teacher = Teacher(model, [b.skip for b in blocks] + features, threads)
    fit, score = teacher(train), teacher(held)
    fit_targets = [fit[f].to(device()) for f in features]
    held_targets = [score[f].to(device()) for f in features]
    scores = {}
    for block in tqdm(blocks, desc="recoverability", disable=quiet):
        start = time.perf_counter()
        torch.manual_seed(settings.seed)
        student = build_student(drop_blocks(model, [block.id], blocks), block.skip, features, adaptors_at=block.skip)
        fit_inputs, held_inputs = fit[student.cut].to(device()), score[student.cut].to(device())
        params = student.parameters(set(student.adaptors))
        generator = torch.Generator().manual_seed(settings.seed)
        batches = minibatches(fit_inputs, fit_targets, settings.batch_size, generator)
        result = mimic(student.forward, params, batches, (held_inputs, held_targets), settings,
                       desc=f"  {block.id}", quiet=quiet)
        scores[block.id] = Recoverability(block.id, result.error_before, result.error_after, result.steps,
                                          time.perf_counter() - start)
    return scores
