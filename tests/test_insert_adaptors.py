"""InsertAdaptors: identity adaptors leave the function unchanged, on conv maps and on transformer tokens."""
import numpy as np
import onnx
import pytest

from graphopt.blocks import find_blocks
from graphopt.passes import apply_passes, drop_blocks
from graphopt.passes.insert_adaptors import ADAPTOR_PREFIX, InsertAdaptors
from graphopt.shapes import typed
from tests import zoo
from tests.helpers import assert_close, run_onnx


@pytest.mark.parametrize("name,exporter,index", [("mobilenet_v2", "torchscript", 1), ("resnet18", "dynamo", 1),
                                                  ("vit", "torchscript", 2)])
def test_identity_adaptors_do_not_change_outputs(exported, name, exporter, index):
    model = exported(name, exporter)
    block = [b for b in find_blocks(model) if b.droppable][index]
    pruned = typed(drop_blocks(model, [block.id]))  # adaptors size themselves from inferred shapes
    inserter = InsertAdaptors(block.skip)
    adapted, changed = apply_passes(pruned, [inserter])
    onnx.checker.check_model(adapted, full_check=True)
    assert changed and inserter.weights and all(w.startswith(ADAPTOR_PREFIX) for w in inserter.weights)
    added = [n for n in adapted.graph.node if n.name.startswith(ADAPTOR_PREFIX)]
    assert len(added) == len(inserter.weights)
    assert {n.op_type for n in added} == ({"MatMul"} if name == "vit" else {"Conv"})
    x = zoo.example_input(name)
    assert_close(run_onnx(adapted, x), run_onnx(pruned, x), tol=1e-5)
    # the gap adaptor reads the skip tensor, and nothing else does any more
    readers = [n for n in adapted.graph.node if block.skip in n.input]
    assert [n.name for n in readers] == [f"{ADAPTOR_PREFIX}0"]
    weight = onnx.numpy_helper.to_array(next(t for t in adapted.graph.initializer if t.name == inserter.weights[0]))
    assert np.array_equal(weight.reshape(len(weight), -1), np.eye(len(weight)))
