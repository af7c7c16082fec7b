"""TensorRT backend. Everywhere: the one-line errors when TensorRT or a GPU is missing, optimisation-profile shapes,
INT8 calibration batching over a real image set, calibration-cache keys, atomic writes. With TensorRT and a CUDA
GPU only (skipped otherwise, with the reason): engines in each precision against onnxruntime, the timing cache,
INT8 calibration and its cache, parser errors."""
from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from PIL import Image

from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.data.dataset import tensorrt_batches
from graphopt.runtime.trt_calibration import calibration_cache_file
from graphopt.cli import main
from graphopt.errors import GraphoptError
from graphopt.runtime import TimingSettings, get_backend
from graphopt.runtime.inputs import random_inputs
from graphopt.atomic import write_atomic
from graphopt.runtime.tensorrt import profile_shapes, require_gpu
from tests import zoo
from tests.helpers import assert_close, run_onnx


def _missing() -> str | None:
    """What stops the TensorRT backend here, as its error message begins; None when nothing does."""
    try:
        importlib.import_module("tensorrt")
    except (ImportError, OSError):
        return "TensorRT is not installed"
    if torch.version.cuda is None:
        return "PyTorch here is a CPU-only build"
    return None if torch.cuda.is_available() else "no CUDA GPU is visible"


MISSING = _missing()


def _export(path, dynamic_axes):
    torch.onnx.export(zoo.tiny_resnet(), torch.zeros(2, 3, 32, 32), str(path), dynamo=False, opset_version=17,
                      input_names=["pixels"], output_names=["logits"], dynamic_axes=dynamic_axes)
    return path


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt_models")
    return {"dynamic": _export(root / "dynamic.onnx", {"pixels": {0: "n"}, "logits": {0: "n"}}),
            "static": _export(root / "static.onnx", None),
            "dynamic_hw": _export(root / "hw.onnx", {"pixels": {0: "n", 2: "h", 3: "w"}})}


@pytest.fixture(scope="module")
def models(paths):
    return {name: onnx.load(str(path)) for name, path in paths.items()}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Five real PNG files, sorted names a..e."""
    root = tmp_path_factory.mktemp("trt_calib")
    rng = np.random.default_rng(0)
    for name in "abcde":
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def trt():
    module = pytest.importorskip("tensorrt", reason="TensorRT is not installed (its libraries cannot be installed "
                                                    "on machines without NVIDIA's package index, such as CI)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU is visible: TensorRT builds and runs engines on one")
    return module


# --- everywhere ---------------------------------------------------------------------------------------------------

@pytest.mark.skipif(MISSING is None, reason="TensorRT and a GPU are both here: nothing is missing to report")
def test_backend_names_what_is_missing_in_one_line():
    with pytest.raises(GraphoptError) as error:
        get_backend("tensorrt", TimingSettings())
    message = str(error.value)
    assert message.startswith(MISSING) and "\n" not in message
    if MISSING == "TensorRT is not installed":
        assert "pip install 'graphopt[tensorrt]'" in message


@pytest.mark.skipif(MISSING is None, reason="TensorRT and a GPU are both here: nothing is missing to report")
def test_cli_bench_on_tensorrt_exits_1_with_that_line(paths, capsys):
    assert main(["bench", str(paths["dynamic"]), "--runtime", "tensorrt", "--precision", "fp16"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [captured.err.strip()]
    assert captured.err.startswith(f"graphopt: error: {MISSING}")


@pytest.mark.parametrize("settings, text", [
    ({"precision": "int4"}, "unknown TensorRT precision 'int4' .*fp32, fp16, int8"),
    ({"workspace_mb": 0}, "workspace must be at least 1 MB"),
    ({"timing_cache": "missing/run.cache"}, "timing cache in missing/run.cache: its folder does not exist"),
    ({"calibration_cache": "missing"}, "calibration cache folder missing does not exist"),
])
def test_bad_settings_are_refused_before_anything_is_loaded(settings, text, tmp_path, monkeypatch):
    from graphopt.runtime.tensorrt import TensorRTBackend
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GraphoptError, match=text):
        TensorRTBackend(TimingSettings(), **settings)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_gpu_check_says_no_gpu_is_visible():
    with pytest.raises(GraphoptError, match="^no CUDA GPU is visible"):
        require_gpu()


def test_profile_spans_batch_1_to_the_deployment_batch(models):
    assert profile_shapes(models["dynamic"], TimingSettings(batch=8)) == {
        "pixels": ((1, 3, 32, 32), (8, 3, 32, 32), (8, 3, 32, 32))}


def test_profile_keeps_static_and_user_given_shapes_fixed(models):
    assert profile_shapes(models["static"], TimingSettings(batch=8)) == {
        "pixels": ((2, 3, 32, 32),) * 3}
    settings = TimingSettings(batch=8, input_shapes={"pixels": (4, 3, 48, 40)})
    assert profile_shapes(models["dynamic_hw"], settings) == {"pixels": ((4, 3, 48, 40),) * 3}
    with pytest.raises(GraphoptError, match="dynamic dimension 2 .*--input-shape pixels:"):
        profile_shapes(models["dynamic_hw"], TimingSettings(batch=8))


def test_calibration_batches_are_equal_contiguous_and_cover_every_image(images, models):
    calib = load_calibration(images, models["dynamic"], norm="unit", resize="direct")
    expected = calib.tensors().numpy()
    made = tensorrt_batches(calib, 2)
    batches = made.batches
    assert made.input_name == calib.input_name and made.fingerprint == calib.fingerprint()
    assert [b.shape for b in batches] == [(2, 3, 32, 32)] * 3
    assert all(b.dtype == np.float32 and b.flags["C_CONTIGUOUS"] for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches)[:5], expected)
    np.testing.assert_array_equal(batches[-1][1], expected[0])  # the short last batch wraps round
    whole = tensorrt_batches(calib, 16).batches
    assert len(whole) == 1
    np.testing.assert_array_equal(whole[0], expected)


def test_calibration_batches_of_a_fixed_batch_model_use_its_batch(images, models):
    calib = load_calibration(images, models["static"], norm="unit", resize="direct")
    batches = tensorrt_batches(calib, 16).batches
    assert [b.shape for b in batches] == [(2, 3, 32, 32)] * 2
    np.testing.assert_array_equal(np.concatenate(batches), calib.tensors(4).numpy())
    with pytest.raises(GraphoptError, match="batch size must be positive"):
        tensorrt_batches(calib, 0)


def test_calibration_cache_file_changes_with_model_set_and_version(images, models, tmp_path):
    loaded = load_calibration(images, models["dynamic"], norm="unit", resize="direct")
    calib, first = tensorrt_batches(loaded), tensorrt_batches(loaded.split(0.4)[0])
    name = calibration_cache_file(tmp_path, models["dynamic"], calib, "10.3.0")
    assert name == calibration_cache_file(tmp_path, onnx.load_from_string(models["dynamic"].SerializeToString()),
                                          calib, "10.3.0")
    assert name.parent == tmp_path
    others = {calibration_cache_file(tmp_path, models["static"], calib, "10.3.0"),
              calibration_cache_file(tmp_path, models["dynamic"], first, "10.3.0"),
              calibration_cache_file(tmp_path, models["dynamic"], calib, "10.4.0")}
    assert name not in others and len(others) == 3


def test_write_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "fast.plan"
    write_atomic(target, b"old engine")
    write_atomic(target, b"new engine")
    assert target.read_bytes() == b"new engine"
    assert [p.name for p in tmp_path.iterdir()] == ["fast.plan"]
    with pytest.raises(GraphoptError, match="folder .*missing does not exist"):
        write_atomic(tmp_path / "missing" / "fast.plan", b"x")


# --- with TensorRT and a CUDA GPU ---------------------------------------------------------------------------------

def _outputs(backend, model, x: np.ndarray) -> np.ndarray:
    """Build and load the engine, run it once on `x` and read its output back."""
    runner = backend.load(model)
    try:
        runner.buffers["pixels"].copy_(torch.from_numpy(x))
        torch.cuda.synchronize()
        assert runner.run_ms() > 0
        return runner.buffers["logits"].float().cpu().numpy()
    finally:
        runner.close()


def test_fp32_engine_matches_onnxruntime_and_is_written_for_deployment(trt, models, tmp_path):
    from graphopt.runtime.tensorrt import TensorRTBackend
    backend = TensorRTBackend(TimingSettings(batch=4, warmup=2, repeats=5), timing_cache=tmp_path / "timing.cache")
    plan = backend.build_engine(models["dynamic"], tmp_path / "fast.plan")
    assert (tmp_path / "fast.plan").read_bytes() == plan
    assert trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(plan) is not None
    assert (tmp_path / "timing.cache").stat().st_size > 0
    feed = random_inputs(models["dynamic"], 4, seed=1)["pixels"]
    assert_close(_outputs(backend, models["dynamic"], feed), run_onnx(models["dynamic"], feed), tol=1e-3)
    description = backend.describe()
    assert description["precision"] == "fp32" and description["gpu"] and description["tensorrt"] == trt.__version__


def test_measure_many_gives_cuda_event_statistics(trt, models):
    backend = get_backend("tensorrt", TimingSettings(batch=4, warmup=3, repeats=7))
    stats = backend.measure_many([models["dynamic"], models["static"]])
    assert [(s.runs, s.batch) for s in stats] == [(7, 4), (7, 4)]
    assert all(0 < s.p10_ms <= s.median_ms <= s.p90_ms for s in stats)


def test_timing_cache_file_is_reused_by_a_new_backend(trt, models, tmp_path):
    from graphopt.runtime.tensorrt import TensorRTBackend
    cache = tmp_path / "timing.cache"
    TensorRTBackend(TimingSettings(batch=2), timing_cache=cache).build_engine(models["dynamic"])
    size = cache.stat().st_size
    TensorRTBackend(TimingSettings(batch=2), timing_cache=cache).build_engine(models["static"])
    assert cache.stat().st_size >= size


def test_fp16_engine_stays_close_to_fp32(trt, models):
    backend = get_backend("tensorrt", TimingSettings(batch=4), precision="fp16")
    feed = random_inputs(models["dynamic"], 4, seed=1)["pixels"]
    assert_close(_outputs(backend, models["dynamic"], feed), run_onnx(models["dynamic"], feed), tol=3e-2)


def test_int8_calibrates_from_the_images_and_keeps_the_scales(trt, models, images, tmp_path):
    from graphopt.runtime.tensorrt import TensorRTBackend
    calib = load_calibration(images, models["dynamic"], norm="unit", resize="direct")
    backend = TensorRTBackend(TimingSettings(batch=4), precision="int8", calibration=tensorrt_batches(calib),
                              calibration_cache=tmp_path)
    backend.build_engine(models["dynamic"])
    written = list(tmp_path.glob("*.calib"))
    assert len(written) == 1 and written[0].stat().st_size > 0
    x = calib.tensors(4).numpy()  # data in the calibrated range
    int8 = _outputs(backend, models["dynamic"], x)  # a second build, from the cached scales
    assert np.corrcoef(int8.ravel(), run_onnx(models["dynamic"], x).ravel())[0, 1] > 0.9


def test_entropy_calibrator_serves_every_batch_then_stops(trt, models, images, tmp_path):
    from graphopt.runtime.trt_calibration import entropy_calibrator
    calib = tensorrt_batches(load_calibration(images, models["dynamic"], norm="unit", resize="direct"), 2)
    cache = tmp_path / "scales.calib"
    calibrator = entropy_calibrator(calib, cache)
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
    assert calibrator.get_batch_size() == 2 and calibrator.read_calibration_cache() is None
    served = []
    while (pointers := calibrator.get_batch(["pixels"])) is not None:
        assert len(pointers) == 1 and pointers[0] != 0
        served.append(calibrator._device.cpu().numpy())
    np.testing.assert_array_equal(np.concatenate(served), np.concatenate(calib.batches))
    calibrator.write_calibration_cache(b"scales")
    assert calibrator.read_calibration_cache() == b"scales" == cache.read_bytes()


def test_int8_without_calibration_images_is_a_clear_error(trt, models):
    backend = get_backend("tensorrt", TimingSettings(batch=2), precision="int8")
    with pytest.raises(GraphoptError, match="int8 needs calibration images"):
        backend.build_engine(models["dynamic"])


def test_unparseable_model_names_the_first_parser_error(trt):
    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery", domain="graphopt.test")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("graphopt.test", 1)])
    expected = r"^TensorRT cannot parse the model at node 'mystery' \(NoSuchOp\): "
    with pytest.raises(GraphoptError, match=expected) as error:
        get_backend("tensorrt").build_engine(model)
    assert "\n" not in str(error.value)
