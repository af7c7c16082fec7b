"""The command line: output formats, exit codes, and bad input that never leaves a file behind."""
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from graphopt.cli import main
from tests import zoo


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, exported):
    path = tmp_path_factory.mktemp("cli") / "resnet18.onnx"
    onnx.save(exported("resnet18", "torchscript"), str(path))
    return path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_blocks_table_and_json(capsys, model_file):
    code, out, _ = _run(capsys, "blocks", model_file)
    assert code == 0 and "layer1.1" in out and "8 residual blocks, 5 droppable" in out
    code, out, _ = _run(capsys, "blocks", model_file, "--json")
    blocks = json.loads(out)["blocks"]
    assert code == 0 and len(blocks) == 8
    assert {"id", "droppable", "nodes", "skip", "output", "params", "macs_share"} <= set(blocks[0])


def test_model_without_blocks(capsys, tmp_path):
    path = zoo.export(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval(),
                      torch.randn(1, 3, 8, 8), tmp_path / "plain.onnx", "torchscript")
    code, out, _ = _run(capsys, "blocks", path)
    assert code == 0 and "No residual blocks" in out
    code, out, _ = _run(capsys, "blocks", path, "--json")
    assert code == 0 and json.loads(out)["blocks"] == []


def test_drop_then_bench(capsys, model_file, tmp_path):
    out_path = tmp_path / "small.onnx"
    code, _, _ = _run(capsys, "drop", model_file, "--blocks", "layer1.1,layer3.1", "-o", out_path)
    assert code == 0
    assert len(onnx.load(str(out_path)).graph.node) < len(onnx.load(str(model_file)).graph.node)
    code, out, _ = _run(capsys, "bench", model_file, out_path, "--batch", "2", "--repeats", "3", "--warmup", "1",
                        "--min-seconds", "0", "--max-timing-seconds", "0", "--threads", "1", "--json")
    report = json.loads(out)
    assert code == 0 and [m["runs"] for m in report["models"]] == [3, 3] and report["ratio"] > 0
    assert report["runtime"]["batch"] == 2


def test_blocks_with_input_shape(capsys, tmp_path):
    """A model with dynamic height and width: its blocks' shapes need --input-shape, which must name an input."""
    path = tmp_path / "dynamic.onnx"
    torch.onnx.export(zoo.tiny_resnet(), (torch.randn(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}})
    code, _, err = _run(capsys, "blocks", path)
    assert code == 1 and "--input-shape image:" in err
    code, out, err = _run(capsys, "blocks", path, "--input-shape", "image:1x3x24x24", "--json")
    blocks = json.loads(out)["blocks"]
    assert code == 0, err
    assert sum(b["droppable"] for b in blocks) == 4 and blocks[0]["shape"] == [1, 8, 24, 24]


def test_console_entry_points(model_file):
    script = str(Path(sys.executable).with_name("graphopt"))
    for argv in ([script], [sys.executable, "-m", "graphopt"]):
        done = subprocess.run([*argv, "blocks", str(model_file), "--json"], capture_output=True, text=True,
                              cwd=model_file.parent)
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)["blocks"]) == 8
    done = subprocess.run([script, "blocks", "nope.onnx"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr == "graphopt: error: model not found: nope.onnx\n"


def test_a_reader_that_goes_away_ends_the_command_quietly(model_file, monkeypatch, capfd):
    """`graphopt channels m.onnx --json | head -c 20` where head has gone when the output is written: exit 141 as
    a tool killed by SIGPIPE, with no traceback."""
    from graphopt.cli import main
    read, write = os.pipe()
    os.close(read)  # nobody reads: writing to `write` fails with EPIPE
    stream = open(write, "w")
    monkeypatch.setattr(sys, "stdout", stream)
    code = main(["channels", str(model_file), "--json"])
    stream.close()  # the buffered rest goes to /dev/null now, not to the closed pipe
    assert code == 141
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("command", ["accelerate", "bench"])
def test_help_keeps_the_everyday_options_and_help_all_shows_the_expert_ones(command, capsys):
    from graphopt.cli import main
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    short = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([command, "--help-all"])
    full = capsys.readouterr().out
    assert done.value.code == 0 and "--threads" in short and "--threads" in full
    assert "--noise-threshold" not in short and "--noise-threshold" in full and "--help-all" in short
    if command == "accelerate":
        assert "--calib" in short and "--lr" not in short and "--lr " in full and "--scoring" in full


def test_an_expert_option_not_listed_under_help_still_works():
    from graphopt.cli import build_parser
    args = build_parser().parse_args(["accelerate", "m.onnx", "--calib", "c", "--noise-threshold", "0.05",
                                      "--lr", "1e-4"])
    assert args.noise_threshold == 0.05 and args.lr == 1e-4
