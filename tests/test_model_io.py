"""Loading bad files gives clear errors; saving is atomic and switches to external data for large models."""
import onnx
import pytest

from graphopt import model_io
from graphopt.errors import GraphoptError
from tests.helpers import run_onnx
from tests import zoo


def test_bad_files_are_clear_errors(tmp_path, exported):
    with pytest.raises(GraphoptError, match="model not found"):
        model_io.load_model(tmp_path / "missing.onnx")
    with pytest.raises(GraphoptError, match="not a file"):
        model_io.load_model(tmp_path)
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 20)
    with pytest.raises(GraphoptError, match="not a readable ONNX model|empty graph"):
        model_io.load_model(text)
    good = exported("resnet18", "torchscript").SerializeToString()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(GraphoptError):
        model_io.load_model(truncated)


@pytest.mark.parametrize("version", [6, 99])
def test_unsupported_opset_names_the_supported_range(exported, version):
    model = exported("resnet18", "torchscript")
    model.opset_import[0].version = version
    supported = model_io.supported_opsets()
    with pytest.raises(GraphoptError, match=f"opset {version} is not supported: graphopt handles ONNX opsets "
                                            f"{supported.start} to {supported.stop - 1} "):
        model_io.load_model(model)


def test_supported_opsets_are_what_onnx_and_onnxruntime_both_know():
    supported = model_io.supported_opsets()
    assert supported.start == model_io.MIN_OPSET == 7
    assert 17 < supported.stop <= onnx.defs.onnx_opset_version() + 1  # the exporters' opsets are in


def test_load_copies_a_model_proto(exported):
    model = exported("resnet18", "torchscript")
    loaded = model_io.load_model(model)
    loaded.graph.node.pop()
    assert len(loaded.graph.node) == len(model.graph.node) - 1


def test_external_data_round_trip(tmp_path, exported, monkeypatch):
    model = exported("resnet18", "torchscript")
    monkeypatch.setattr(model_io, "EXTERNAL_DATA_THRESHOLD", 1000)
    out = model_io.save_model(model, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()
    assert out.stat().st_size < 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]  # no temporaries left
    reloaded = model_io.load_model(out)
    x = zoo.example_input("resnet18")
    assert (run_onnx(reloaded, x) == run_onnx(model, x)).all()


def test_save_errors_leave_nothing(tmp_path, exported):
    model = exported("resnet18", "torchscript")
    with pytest.raises(GraphoptError, match="does not exist"):
        model_io.save_model(model, tmp_path / "nowhere" / "m.onnx")
    with pytest.raises(GraphoptError, match="is a folder"):
        model_io.save_model(model, tmp_path)
    model_io.save_model(model, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert onnx.load(str(tmp_path / "m.onnx")) == model
