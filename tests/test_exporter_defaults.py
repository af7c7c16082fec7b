"""What torch.onnx writes when the user passes no opset must convert to PyTorch and run like onnxruntime.

tests/zoo.py pins the TorchScript exporter to opset 17, so the zoo never saw what users get by default:
the TorchScript exporter writes opset 20 (Identity-19, Constant-19), the dynamo exporter its own default
(20 in torch 2.14), and the newest opset onnx and onnxruntime both load brings Conv/MaxPool-22 and
Reshape-25. A ResNet-18 fresh from torchvision (``weights=None``, BatchNorm at its initial statistics) is
the model of the bug report: BatchNorm folds into identical all-zero conv biases, which the TorchScript
exporter deduplicates into ``Identity`` nodes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
import pytest
import torch
import torchvision

from graphopt.calibration.bridge.onnx_torch import to_torch
from graphopt.cli import main
from graphopt.model_io import supported_opsets
from tests import zoo

NEWEST_OPSET = supported_opsets().stop - 1
BATCH = 2  # not the exported batch of 1: the dynamic batch axis is exercised


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def export_default(model: torch.nn.Module, x: torch.Tensor, path: Path, exporter: str,
                   opset: int | None = None) -> onnx.ModelProto:
    """Export with a dynamic batch as tests/zoo.py does, but at the exporter's own default opset unless `opset`."""
    chosen = {} if opset is None else {"opset_version": opset}
    if exporter == "torchscript":
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **chosen)
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), verbose=False,
                          **chosen)
    return onnx.load(str(path))


def _resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def _assert_converts_like_onnxruntime(model: onnx.ModelProto) -> None:
    """graphopt's bridge converts `model` and its output matches onnxruntime's (tolerance of tests/test_bridge.py)."""
    x = torch.randn(BATCH, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        actual = to_torch(model).module(x)[0].numpy()
    tol = 1e-4
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(1.0, float(np.abs(expected).max())))


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def test_torchscript_default_opset(tmp_path: Path) -> None:
    """``torch.onnx.export(..., dynamo=False)``: opset 20 in torch 2.14, with Identity-shared biases."""
    model = export_default(_resnet18(), torch.randn(1, 3, 64, 64), tmp_path / "m.onnx", "torchscript")
    _assert_converts_like_onnxruntime(model)


def test_dynamo_default_opset(tmp_path: Path) -> None:
    """``torch.onnx.export(..., dynamo=True)``: ReduceMean with axes as input, Reshape with allowzero."""
    model = export_default(_resnet18(), torch.randn(1, 3, 64, 64), tmp_path / "m.onnx", "dynamo")
    _assert_converts_like_onnxruntime(model)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_newest_supported_opset(tmp_path: Path, exporter: str) -> None:
    """The newest opset both onnx and onnxruntime load (28 with onnx 1.23 and onnxruntime 1.32).

    The dynamo exporter is asked for it (it exports at its own opset and converts with onnx's version converter
    itself). The TorchScript exporter cannot write it (it stops at opset 20), so its default export is converted
    with onnx.version_converter, as a user would: Identity, Flatten and GlobalAveragePool then carry their newest
    versions, which the dynamo export (ReduceMean, Reshape) does not have.
    """
    opset = NEWEST_OPSET if exporter == "dynamo" else None
    model = export_default(_resnet18(), torch.randn(1, 3, 64, 64), tmp_path / "m.onnx", exporter, opset)
    if exporter == "torchscript":
        model = onnx.version_converter.convert_version(model, NEWEST_OPSET)
    assert _opset(model) == NEWEST_OPSET
    _assert_converts_like_onnxruntime(model)


def test_accelerate_torchscript_default_opset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole CLI job on the tiny ResNet as the TorchScript exporter writes it by default."""
    path = tmp_path / "tiny.onnx"
    export_default(zoo.tiny_resnet(), torch.randn(2, 3, 16, 16), path, "torchscript")
    images = zoo.write_images(tmp_path / "images", 12)
    code = main(["accelerate", str(path), "--calib", str(images), "-o", str(tmp_path / "fast.onnx"), "--drop", "1",
                 "--no-cache", "--score-iterations", "2", "--recover-iterations", "2", "--repeats", "2",
                 "--warmup", "1", "--min-seconds", "0", "--max-timing-seconds", "0", "--threads", "1",
                 "--work-threads", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert onnx.load(str(tmp_path / "fast.onnx")).graph.node
