"""Local reconstruction: before the whole network trains, each changed stretch learns on its own to turn the
original's activations where it begins into the original's activations where it ends.

A stretch is small (the block after a dropped one, a pruned block's convs), so one of its training steps costs a
fraction of a step of the global student, and the original's activations at both ends are computed once, for
several augmented views of every calibration image, and reused: a stretch gets hundreds of steps where global
recovery gets tens. Global recovery then starts from a network whose every gap already bridges itself
(block-wise reconstruction, as in BRECQ and the block-level recovery of PRACTISE).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import onnx
import torch

from graphopt.calibration.bridge import write_back
from graphopt.calibration.dataset import CalibrationSet
from graphopt.calibration.mimic import MimicResult, MimicSettings, choose_lr, mimic, minibatches
from graphopt.calibration.recovery import student_batch
from graphopt.calibration.student import build_student
from graphopt.calibration.teacher import Teacher

VIEWS = 8  # augmented views of each calibration image kept for a stretch's training
VIEW_MEMORY = 1 << 29  # bytes of cached activations (both ends) a stretch may hold: fewer views when larger
ITERATIONS = 3000  # step cap of one stretch; its share of the time budget usually ends it first


@dataclass
class LocalResult:
    start: str
    end: str
    result: MimicResult  # held-out error at the stretch's end, before and after
    lr: float

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "before": self.result.error_before,
                "after": self.result.error_after, "steps": self.result.steps, "lr": self.lr}


def reconstruct(original: onnx.ModelProto, pruned: onnx.ModelProto, regions: list[tuple[str, str]],
                train: CalibrationSet, held: torch.Tensor, settings: MimicSettings, threads: int | None = None,
                quiet: bool = False, lr_candidates: tuple[float, ...] = ()) -> tuple[onnx.ModelProto, list[LocalResult]]:
    """`pruned` with each (start, end) region trained in turn to match `original` at its end from the original's
    values at its start, sharing `settings.seconds` equally. A region whose end depends on more than its start,
    or that holds no weight, is left to global recovery."""
    model, results = pruned, []
    seconds = None if settings.seconds is None else settings.seconds / max(1, len(regions))
    for start, end in regions:
        student = build_student(model, start, [end])
        params = student.parameters(student.feature_weights())
        if student.cut != start or not params:
            continue
        teacher = Teacher(original, [start, end], threads)
        generator = torch.Generator().manual_seed(settings.seed)
        inputs, targets = cached_views(teacher, train, start, end, generator)
        batches = minibatches(inputs, [targets], settings.batch_size, generator)
        held_batch = student_batch(teacher, held, start, [end])
        local = replace(settings, iterations=ITERATIONS, seconds=seconds, mixup=False)
        if lr_candidates:
            local = replace(local, lr=choose_lr(student.forward, params, batches, held_batch, local, lr_candidates,
                                                quiet))
        result = mimic(student.forward, params, batches, held_batch, local, desc=f"local {end}", quiet=quiet)
        for param in params:
            param.requires_grad_(False)
        model = write_back(model, student.graph)
        results.append(LocalResult(start, end, result, local.lr))
    return model, results


def cached_views(teacher: Teacher, train: CalibrationSet, start: str, end: str,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The original's values at `start` and `end` for up to VIEWS augmented views of every training image (fewer
    when they would pass VIEW_MEMORY)."""
    inputs, targets = [], []
    while len(inputs) < VIEWS:
        values, (value,) = student_batch(teacher, train.augmented(generator), start, [end])
        inputs.append(values)
        targets.append(value)
        if len(inputs) * (values.nbytes + value.nbytes) * 2 > VIEW_MEMORY:
            break
    return torch.cat(inputs), torch.cat(targets)
