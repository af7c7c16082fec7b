"""Recovery in two processes (torch.distributed, gloo on the CPU, started as torchrun --standalone starts them):
the ranks stay in step, the model handed back is verified like a single-process one, and it recovers as well as
single-process recovery does, within the spread of training seeds."""
from __future__ import annotations

import signal

import onnx
import pytest

from graphopt.blocks import find_blocks
from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.recovery.distributed import recover_in_processes, trained_checksum
from graphopt.calibration.recovery.mimic import MimicSettings
from graphopt.calibration.recovery.recover import recover
from graphopt.errors import GraphoptError
from graphopt.features import feature_tensors
from graphopt.methods import Planner
from graphopt.methods.blocks import block_actions
from graphopt.passes import drop_blocks
from graphopt.pipeline import accelerate
from graphopt.verify import check_recovered
from tests.fake_latency import SimulatedBackend
from tests.helpers import FAST_ACCELERATE

STEPS = 40


@pytest.fixture(scope="module")
def dropped(tiny):
    """(original, the tiny ResNet without layer2.1, where recovery may start, train and held-out images)."""
    path, images = tiny
    original = onnx.load(str(path))
    blocks = find_blocks(original)
    pruned = drop_blocks(original, ["layer2.1"], blocks)
    train, held = load_calibration(images, original).split(0.25)
    cuts = Planner(original, blocks).cuts(block_actions([b for b in blocks if b.id == "layer2.1"]))
    return original, pruned, cuts, train, held.tensors()


def _settings(seed: int) -> MimicSettings:
    return MimicSettings(STEPS, batch_size=4, lr=1e-3, seed=seed, patience=10 ** 6)


def test_two_processes_recover_as_one_does(dropped):
    original, pruned, cuts, train, held = dropped
    features = feature_tensors(original)
    single = [recover(original, pruned, cuts, features, train, held, _settings(seed), threads=1, quiet=True)
              for seed in (0, 1, 2)]
    handler = signal.getsignal(signal.SIGTERM)
    both = recover_in_processes(2, original, pruned, cuts, features, train, held, _settings(0), threads=1,
                                quiet=True)
    assert signal.getsignal(signal.SIGTERM) is handler  # the launcher's handler is not left behind
    assert both.processes == 2 and both.result.steps == STEPS
    assert both.student.cut == single[0].student.cut
    check_recovered(original, both, held, threads=1)  # the model written back is the student that trained
    errors = sorted(r.result.error_after for r in single)
    spread = errors[-1] - errors[0]
    assert both.result.error_after < both.result.error_before
    # twice the images per step: at least as good as the worst seed, give or take the seeds' own spread
    assert both.result.error_after <= errors[-1] + spread
    assert trained_checksum(both.model, both.student) != trained_checksum(pruned, both.student)


def test_accelerate_recovers_in_processes(tiny, tmp_path):
    path, images = tiny
    result = accelerate(path, images, tmp_path / "out.onnx", drop=1, recovery_processes=2,
                        backend=SimulatedBackend(), **FAST_ACCELERATE)
    assert result.report["settings"]["recovery_processes"] == 2 and result.report["dropped"]
    onnx.checker.check_model(onnx.load(str(tmp_path / "out.onnx")), full_check=True)


def test_recovery_processes_are_checked(tiny):
    path, images = tiny
    with pytest.raises(GraphoptError, match="--recovery-processes must be at least 1"):
        accelerate(path, images, drop=1, recovery_processes=0, backend=SimulatedBackend(), **FAST_ACCELERATE)
