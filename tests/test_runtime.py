"""The onnxruntime latency backend: inputs built from the model, statistics and interleaved comparison."""
import numpy as np
import onnx
import pytest

from graphopt.errors import GraphoptError
from graphopt.passes import drop_blocks
from graphopt.runtime import TimingSettings, get_backend
from graphopt.runtime.inputs import parse_input_shapes, random_inputs


def test_inputs_follow_model_dtype_and_batch(exported):
    model = exported("resnet18", "dynamo")
    feeds = random_inputs(model, batch=5)
    (name, value), = feeds.items()
    assert name == "input" and value.shape == (5, 3, 64, 64) and value.dtype == np.float32


def test_dynamic_non_batch_dims_need_a_shape():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.INT64, ["n", "seq"])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64, ["n", "seq"])
    model = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Neg", ["x"], ["y"])], "g", [x], [y]))
    with pytest.raises(GraphoptError, match="--input-shape x:"):
        random_inputs(model, batch=2)
    feeds = random_inputs(model, batch=2, overrides=parse_input_shapes(["x:2x7"]))
    assert feeds["x"].shape == (2, 7) and feeds["x"].dtype == np.int64
    with pytest.raises(GraphoptError, match="bad --input-shape"):
        parse_input_shapes(["x=2x7"])


def test_measure_and_compare(exported):
    model = exported("resnet18", "torchscript")
    backend = get_backend("onnxruntime", TimingSettings(batch=2, warmup=2, repeats=7, min_seconds=0,
                                                        max_seconds=3), threads=1)
    stats = backend.measure(model)
    assert stats.runs == 7 and stats.batch == 2
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
    comparison = backend.compare(model, drop_blocks(model, ["layer1.1"]))
    # 7 rounds at least; more while the ratio is noisier than the threshold (how many depends on the machine)
    assert comparison.base.runs == comparison.other.runs >= 7
    assert comparison.ratio == comparison.other.median_ms / comparison.base.median_ms
    assert comparison.noise > 0 and comparison.noisy == (comparison.noise > backend.settings.noise_threshold)
    assert backend.describe()["runtime"] == "onnxruntime-cpu"


def test_fast_models_get_more_runs_until_min_seconds():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])
    tiny = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    stats = get_backend("onnxruntime", TimingSettings(warmup=1, repeats=5, min_seconds=0.05)).measure(tiny)
    assert stats.runs > 5  # a Relu on 4 numbers takes microseconds: 5 runs are far short of 50 ms


def test_unknown_or_missing_runtime():
    with pytest.raises(GraphoptError, match="unknown runtime"):
        get_backend("tflite")
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        backend = get_backend("onnxruntime-cuda")
        model = onnx.helper.make_model(onnx.helper.make_graph(
            [onnx.helper.make_node("Neg", ["x"], ["y"])], "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
        with pytest.raises(GraphoptError, match="CUDAExecutionProvider"):
            backend.measure(model)
