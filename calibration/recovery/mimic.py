"""Feature mimicking: train chosen parameters so a student's features match the teacher's (MSE), with early
stopping on held-out calibration images. Shared by recoverability (adaptors only) and recovery (all weights)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from graphopt.calibration.recovery.group import any_rank

Batch = tuple[torch.Tensor, list[torch.Tensor]]  # student input, teacher features


@dataclass
class MimicSettings:
    iterations: int = 300
    batch_size: int = 32
    lr: float = 1e-4
    eval_every: int = 20
    patience: int = 4
    seed: int = 0
    seconds: float | None = None  # wall-time cap (the run's time budget share); training ends at whichever comes first
    # epochs each augmented copy of the calibration images serves: the teacher (the student's input and targets)
    # runs once per copy. With 4, Lite0 ran 1,000 steps in 503 s (a fresh copy every epoch: 986 in 602 s), but its
    # held-out error never beat step 20's (0.3330, against 0.3243; docs/studies/recovery_length.md)
    view_epochs: int = 1


@dataclass
class MimicResult:
    error_before: float  # relative held-out feature error before training
    error_after: float  # ... and after (the best checkpoint, which is what the student keeps)
    steps: int
    stopped: str = "iterations"  # why training ended: "iterations" (the cap), "patience" (early stopping), "time"


def feature_error(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Squared error relative to the teacher's energy, averaged over feature tensors: scale-free, 0 is perfect."""
    return sum(((s - t) ** 2).sum() / (t ** 2).sum().clamp_min(1e-12) for s, t in zip(student, teacher)) / len(teacher)


def mimic(forward: Callable[[torch.Tensor], list[torch.Tensor]], params: list[torch.nn.Parameter],
          batches: Iterator[Batch], held: Batch, settings: MimicSettings, desc: str = "mimic",
          quiet: bool = False) -> MimicResult:
    """Adam on `params` only, evaluating on `held` every `eval_every` steps; keeps the best parameters seen. Stops
    at `settings.iterations`, at early stopping, or once `settings.seconds` have passed (checked after each step,
    with a last held-out evaluation), whichever comes first."""
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, settings.iterations))

    forward = _mixed_precision(forward)

    def held_error() -> float:
        with torch.no_grad():
            return float(feature_error(_chunked(forward, held[0], settings.batch_size), held[1]))

    best = before = held_error()
    best_state = [p.detach().clone() for p in params]
    stale, step, stopped = 0, 0, "iterations"
    end = None if settings.seconds is None else time.perf_counter() + settings.seconds
    bar = tqdm(total=settings.iterations, desc=desc, disable=quiet, leave=False)
    for step in range(1, settings.iterations + 1):
        inputs, targets = next(batches)
        loss = feature_error(forward(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.update()
        out_of_time = any_rank(end is not None and time.perf_counter() >= end)
        if step % settings.eval_every == 0 or step == settings.iterations or out_of_time:
            error = held_error()
            bar.set_postfix(held=f"{error:.4f}", **({} if end is None else
                                                    {"left": f"{max(0.0, end - time.perf_counter()):.0f}s"}))
            if error < best:
                best, stale = error, 0
                best_state = [p.detach().clone() for p in params]
            else:
                stale += 1
                if stale >= settings.patience:
                    stopped = "patience"
                    break
            if out_of_time:
                stopped = "time"
                break
    bar.close()
    with torch.no_grad():
        for p, saved in zip(params, best_state):
            p.copy_(saved)
    return MimicResult(before, best, step, stopped)


def choose_lr(forward: Callable[[torch.Tensor], list[torch.Tensor]], params: list[torch.nn.Parameter],
              batches: Iterator[Batch], held: Batch, settings: MimicSettings, candidates: tuple[float, ...],
              quiet: bool = False) -> float:
    """The candidate learning rate whose short run (a tenth of the iterations) from the same start ends with the
    lowest held-out error. Measured: a small Fashion-MNIST ResNet wants 5e-4, ImageNet EfficientNet-Lite0 1e-4
    (at 5e-4 it overfits 64 crops and loses agreement), so no single default serves both."""
    start = [p.detach().clone() for p in params]
    share = None if settings.seconds is None else settings.seconds / 10
    probe = replace(settings, iterations=max(settings.eval_every, settings.iterations // 10), patience=10 ** 6,
                    seconds=share)
    errors = {}
    for lr in candidates:
        errors[lr] = mimic(forward, params, batches, held, replace(probe, lr=lr), desc=f"lr {lr:g}",
                           quiet=quiet).error_after
        with torch.no_grad():
            for param, saved in zip(params, start):
                param.copy_(saved)
    return min(errors, key=errors.get)


def _mixed_precision(forward: Callable[[torch.Tensor], list[torch.Tensor]]
                     ) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """On CUDA, run the student in bfloat16 autocast (convolutions and matmuls) and compare features in float32;
    on the CPU, float32 throughout."""
    if not torch.cuda.is_available():
        return forward

    def autocast_forward(inputs: torch.Tensor) -> list[torch.Tensor]:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outputs = forward(inputs)
        return [o.float() for o in outputs]

    return autocast_forward


def minibatches(inputs: torch.Tensor, targets: list[torch.Tensor], batch_size: int,
                generator: torch.Generator) -> Iterator[Batch]:
    """Endless shuffled minibatches over fixed tensors."""
    while True:
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield inputs[index], [t[index] for t in targets]


def _chunked(forward: Callable[[torch.Tensor], list[torch.Tensor]], inputs: torch.Tensor,
             batch_size: int) -> list[torch.Tensor]:
    parts = [forward(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]
