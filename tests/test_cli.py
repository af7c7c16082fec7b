"""The command line: output formats, exit codes, and bad input that never leaves a file behind."""
import json
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
                        "--min-seconds", "0", "--threads", "1", "--json")
    report = json.loads(out)
    assert code == 0 and [m["runs"] for m in report["models"]] == [3, 3] and report["ratio"] > 0
    assert report["runtime"]["batch"] == 2


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "unknown-id", "no-folder", "overwrite-input",
                                  "bad-batch"])
def test_bad_input_is_one_line_and_writes_nothing(capsys, model_file, tmp_path, case):
    out_path = tmp_path / "out.onnx"
    model, blocks, target = model_file, "layer1.1", out_path
    if case == "missing":
        model = tmp_path / "missing.onnx"
    elif case == "text":
        model = tmp_path / "text.onnx"
        model.write_text("hello")
    elif case == "truncated":
        model = tmp_path / "cut.onnx"
        model.write_bytes(model_file.read_bytes()[:5000])
    elif case == "unknown-id":
        blocks = "layer9.9"
    elif case == "no-folder":
        target = tmp_path / "missing-dir" / "out.onnx"
    elif case == "overwrite-input":
        target = model_file
    if case == "bad-batch":
        code, _, err = _run(capsys, "bench", model, "--batch", "0")
    else:
        code, _, err = _run(capsys, "drop", model, "--blocks", blocks, "-o", target)
    assert code == 1
    assert err.startswith("graphopt: error: ") and err.count("\n") == 1
    assert not out_path.exists() and not target.with_name("out.onnx").exists()
    assert list(tmp_path.glob(".*")) == []


def test_console_entry_points(model_file):
    script = str(Path(sys.executable).with_name("graphopt"))
    for argv in ([script], [sys.executable, "-m", "graphopt"]):
        done = subprocess.run([*argv, "blocks", str(model_file), "--json"], capture_output=True, text=True,
                              cwd=model_file.parent)
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)["blocks"]) == 8
    done = subprocess.run([script, "blocks", "nope.onnx"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr == "graphopt: error: model not found: nope.onnx\n"
