"""IR versions below 4 (old model-zoo style) list every initializer as a graph input as well; every model graphopt
writes from such a graph must keep doing so, or onnx's full check rejects it."""
import onnx
import pytest
import torch

from graphopt.blocks import find_blocks
from graphopt.cli import main
from graphopt.passes import apply_passes, drop_blocks
from graphopt.passes.insert_adaptors import InsertAdaptors
from graphopt.shapes import typed
from tests import zoo
from tests.helpers import assert_close, run_onnx, without_block


@pytest.fixture(scope="module")
def old_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("old-ir") / "resnet18-ir3.onnx"
    torch.onnx.export(zoo.torch_model("resnet18"), (zoo.example_input("resnet18"),), str(path), dynamo=False,
                      opset_version=9, keep_initializers_as_inputs=True, input_names=["data"],
                      dynamic_axes={"data": {0: "N"}})
    model = onnx.load(str(path))
    model.ir_version = 3
    onnx.save(model, str(path))
    return path


def _assert_old_style(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 3
    assert {t.name for t in model.graph.initializer} <= {i.name for i in model.graph.input}


def test_drop_keeps_initializers_listed_as_inputs(old_model, tmp_path, capsys):
    model = onnx.load(str(old_model))
    _assert_old_style(model)
    dropped = drop_blocks(model, ["layer1.1"])
    _assert_old_style(dropped)
    kept = {t.name for t in dropped.graph.initializer} | {"data"}
    # the source's entries in the source's order, less the weights of the dropped block
    assert [i.name for i in dropped.graph.input] == [i.name for i in model.graph.input if i.name in kept]
    assert len(dropped.graph.input) < len(model.graph.input)
    x = zoo.example_input("resnet18")
    with torch.no_grad():
        assert_close(run_onnx(dropped, x), without_block(zoo.torch_model("resnet18"), "layer1.1")(x).numpy())

    out = tmp_path / "dropped.onnx"
    assert main(["drop", str(old_model), "--blocks", "layer1.1", "-o", str(out)]) == 0, capsys.readouterr().err
    assert onnx.load(str(out)) == dropped


def test_initializers_added_by_a_pass_are_listed(old_model):
    model = onnx.load(str(old_model))
    block = find_blocks(model)[1]
    inserter = InsertAdaptors(block.skip)
    adapted, _ = apply_passes(typed(drop_blocks(model, [block.id])), [inserter])
    _assert_old_style(adapted)
    assert [i.name for i in adapted.graph.input][-len(inserter.weights):] == inserter.weights


def test_accelerate_output_passes_the_full_check(old_model, tmp_path, capsys):
    images = zoo.write_images(tmp_path / "images", 12, size=72)
    out = tmp_path / "fast.onnx"
    code = main(["accelerate", str(old_model), "--calib", str(images), "-o", str(out), "--drop", "1",
                 "--recover-iterations", "3", "--score-iterations", "3", "--threads", "1", "--work-threads", "1",
                 "--no-cache", "--quiet",
                 "--repeats", "3", "--warmup", "1", "--min-seconds", "0", "--max-timing-seconds", "0"])
    assert code == 0, capsys.readouterr().err
    _assert_old_style(onnx.load(str(out)))
