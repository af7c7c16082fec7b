"""Feature mimicking stops at whichever comes first: its step cap, early stopping, or its share of the time budget."""
import time

import torch

from graphopt.calibration.recovery.mimic import MimicSettings, mimic, minibatches


def _problem(seed: int = 0):
    """A linear student learning a fixed linear teacher: the held-out error keeps falling, so only a cap stops it."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(8, 8, generator=generator)
    inputs, held = torch.randn(64, 8, generator=generator), torch.randn(16, 8, generator=generator)
    weight = torch.nn.Parameter(torch.zeros(8, 8))
    forward = lambda x: [x @ weight]  # noqa: E731
    batches = minibatches(inputs, [inputs @ teacher], 16, generator)
    return forward, weight, batches, (held, [held @ teacher])


def test_the_time_cap_ends_training_with_the_best_state_kept():
    forward, weight, batches, held = _problem()
    start = time.perf_counter()
    result = mimic(forward, [weight], batches, held, MimicSettings(iterations=10 ** 7, lr=1e-2, seconds=0.5),
                   quiet=True)
    assert time.perf_counter() - start < 60  # generous: a loaded machine; without the cap this runs for hours
    assert 1 <= result.steps < 10 ** 7 and result.error_after < result.error_before
    assert result.stopped == "time"


def test_without_a_time_cap_the_step_cap_ends_training():
    forward, weight, batches, held = _problem()
    result = mimic(forward, [weight], batches, held, MimicSettings(iterations=37, lr=1e-2, eval_every=5),
                   quiet=True)
    assert result.steps == 37 and result.error_after < result.error_before and result.stopped == "iterations"


def test_a_held_out_error_that_stops_falling_ends_training_early_and_says_so():
    """A student trained towards the wrong targets: its held-out error only rises, so early stopping ends it after
    `patience` evaluations, keeping the starting weights."""
    forward, weight, _, held = _problem()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(64, 8, generator=generator)
    wrong = minibatches(inputs, [inputs @ torch.randn(8, 8, generator=generator)], 16, generator)
    result = mimic(forward, [weight], wrong, (held[0], [held[0] @ torch.eye(8)]),
                   MimicSettings(iterations=1000, lr=1e-1, eval_every=5, patience=3), quiet=True)
    assert result.stopped == "patience" and result.steps == 15 and result.error_after == result.error_before
