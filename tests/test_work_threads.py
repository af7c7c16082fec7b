"""--threads is what the runtime is timed with (the deployment's setting); --work-threads is what training and the
runtime's non-timing passes use, by default every core: recovery on one core of two is half the speed it could be."""

import torch

import graphopt
from graphopt.cli import main
from graphopt.machine import usable_cores
from tests.helpers import FAST_ACCELERATE


def test_training_gets_every_core_while_timing_keeps_the_deployments_threads(tiny, tmp_path):
    model, images = tiny
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        options = {**FAST_ACCELERATE, "work_threads": None}
        result = graphopt.accelerate(model, images, tmp_path / "out.onnx", drop=1, **options)
        assert torch.get_num_threads() == usable_cores()
        assert result.report["runtime"]["threads"] == 1
        graphopt.accelerate(model, images, tmp_path / "two.onnx", drop=1, **{**options, "work_threads": 1})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_negative_work_threads_get_a_one_line_error(tiny, tmp_path, capsys):
    model, images = tiny
    code = main(["accelerate", str(model), "--calib", str(images), "-o", str(tmp_path / "out.onnx"), "--drop", "1",
                 "--work-threads", "-2"])
    assert code == 1 and "--work-threads must be 0 (the default) or more (got -2)" in capsys.readouterr().err
    assert not (tmp_path / "out.onnx").exists()
