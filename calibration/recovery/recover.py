"""Recovery (MiR): train the pruned network's weights to mimic the original's features, then write them back.

The teacher is the original model; the student is the pruned model after where the first cut begins (the part
before it is unchanged, so the teacher supplies its output). Every weight the features depend on is trained;
a classifier head after the feature tensor is not, and BatchNorm statistics stay frozen (the student runs in eval
mode). Each epoch (or each `MimicSettings.view_epochs` epochs) sees a fresh seeded augmentation of the
calibration images.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import onnx
import torch

from graphopt.calibration.bridge.onnx_torch import write_back
from graphopt.calibration.data.dataset import CalibrationSet
from graphopt.calibration.recovery.group import data_parallel, in_group
from graphopt.calibration.recovery.mimic import Batch, MimicResult, MimicSettings, choose_lr, mimic, minibatches
from graphopt.calibration.bridge.student import Student, build_student, device
from graphopt.calibration.bridge.teacher import Teacher


@dataclass
class Recovered:
    model: onnx.ModelProto  # the pruned model with trained weights written back
    result: MimicResult
    student: Student
    lr: float
    processes: int = 1  # processes that trained it (calibration/recovery/distributed.py)


def recover(original: onnx.ModelProto, pruned: onnx.ModelProto, cuts: list[str], features: list[str],
            train: CalibrationSet, held: torch.Tensor, settings: MimicSettings, threads: int | None = None,
            quiet: bool = False, lr_candidates: tuple[float, ...] = (), logits: str | None = None,
            from_input: bool = False) -> Recovered:
    """`cuts` are where the student may start, latest first (`Planner.cuts`): a later start trains less; an
    earlier one is needed when nothing trainable lies between the first change and the features (dropping a
    network's last block, say). With `lr_candidates`, short probes pick the learning rate (see `choose_lr`) and
    `settings.lr` is ignored.

    With `logits` (a graph output of class scores), the student also matches the teacher's logits: the loss
    averages the relative squared error of the features and of the logits (the high-temperature limit of logit
    distillation). Only the weights the features depend on train either way: the head stays the original's.
    With `from_input`, every such weight trains, those before the first gap too.
    """
    outputs = [o.name for o in pruned.graph.output]
    matched = [*features, *([logits] if logits else [])]
    cuts = cuts[-1:] if from_input else cuts
    for cut in cuts:
        student = build_student(pruned, cut, matched, extra_outputs=outputs)
        params = student.parameters(student.feature_weights(features))
        if params:
            break
    model, result, lr = train_student(original, pruned, student, params, matched, train, held, settings, threads,
                                      quiet, lr_candidates, "recovery")
    return Recovered(model, result, student, lr)


def train_student(original: onnx.ModelProto, model: onnx.ModelProto, student: Student,
                  params: list[torch.nn.Parameter], matched: list[str], train: CalibrationSet, held: torch.Tensor,
                  settings: MimicSettings, threads: int | None, quiet: bool, lr_candidates: tuple[float, ...],
                  desc: str) -> tuple[onnx.ModelProto, MimicResult, float]:
    """Train `params` so `student` matches the original's `matched` tensors (the teacher in onnxruntime supplies
    the student's input and targets), then freeze them and write them back into `model`. With `lr_candidates`,
    short probes pick the learning rate. Returns (written model, result, learning rate used)."""
    teacher = Teacher(original, [student.cut, *matched], threads)
    held_batch = student_batch(teacher, held, student.cut, matched)
    batches = epochs(teacher, train, student.cut, matched, settings)
    forward = data_parallel(student) if in_group() else student.forward
    if lr_candidates:
        settings = replace(settings, lr=choose_lr(forward, params, batches, held_batch, settings, lr_candidates,
                                                  quiet))
    result = mimic(forward, params, batches, held_batch, settings, desc=desc, quiet=quiet)
    for param in params:
        param.requires_grad_(False)
    return write_back(model, student.graph), result, settings.lr


def student_batch(teacher: Teacher, images: torch.Tensor, cut: str, features: list[str]) -> Batch:
    values = teacher(images)
    return values[cut].to(device()), [values[f].to(device()) for f in features]


def epochs(teacher: Teacher, train: CalibrationSet, cut: str, features: list[str],
            settings: MimicSettings) -> Iterator[Batch]:
    """Minibatches over freshly augmented copies of the calibration images, each serving `settings.view_epochs`
    epochs (reshuffled every epoch) before the next copy: the teacher's pass over a copy is paid once."""
    generator = torch.Generator().manual_seed(settings.seed)
    while True:
        images = train.augmented(generator)
        inputs, targets = student_batch(teacher, images, cut, features)
        batches = minibatches(inputs, targets, settings.batch_size, generator)
        for _ in range(settings.view_epochs * max(1, -(-len(inputs) // settings.batch_size))):
            yield next(batches)
