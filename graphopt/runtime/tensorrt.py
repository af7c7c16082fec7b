"""TensorRT latency backend: an engine built from the ONNX model at the deployment batch and precision, timed with
CUDA events, because that is the latency a TensorRT deployment sees. Every TensorRT call of graphopt lives here
(and in the INT8 calibrator); buffers, streams and events come from PyTorch's CUDA."""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import onnx

from graphopt.atomic import write_atomic
from graphopt.errors import GraphoptError, first_line
from graphopt.runtime.base import LatencyBackend, Runner, TimingSettings
from graphopt.runtime.inputs import input_shape, random_inputs, runtime_inputs
from graphopt.runtime.trt_calibration import CalibrationBatches, calibration_cache_file, entropy_calibrator

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
INSTALL_HINT = "pip install 'graphopt[tensorrt]' on a machine that can reach NVIDIA's package index"


def import_tensorrt():
    """The `tensorrt` module, or a one-line GraphoptError saying what is missing."""
    try:
        import tensorrt
    except ImportError:
        raise GraphoptError(f"TensorRT is not installed ({INSTALL_HINT})") from None
    except OSError as exc:  # the wheel is there but libnvinfer is not
        raise GraphoptError(f"TensorRT is installed but its libraries do not load: {first_line(exc)}"
                            ) from None
    return tensorrt


def require_gpu() -> str:
    """The name of the CUDA GPU that engines are built for, or a one-line GraphoptError."""
    import torch
    if torch.version.cuda is None:
        raise GraphoptError("PyTorch here is a CPU-only build; the TensorRT backend needs a CUDA build of PyTorch")
    if not torch.cuda.is_available():
        raise GraphoptError("no CUDA GPU is visible (TensorRT needs an NVIDIA GPU and its driver)")
    return torch.cuda.get_device_name()


def profile_shapes(model: onnx.ModelProto, settings: TimingSettings
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) for each input: a dynamic batch may run at 1..batch and is tuned for `batch`, so the engine
    timed is the one deployed; shapes given with --input-shape and static shapes are fixed."""
    overrides = settings.input_shapes or {}
    shapes = {}
    for value in runtime_inputs(model):
        full = input_shape(value, settings.batch, overrides)
        dims = value.type.tensor_type.shape.dim
        dynamic_batch = bool(dims) and dims[0].dim_value <= 0 and value.name not in overrides
        shapes[value.name] = ((1, *full[1:]) if dynamic_batch else full, full, full)
    return shapes


@functools.lru_cache(maxsize=None)
def _logger():
    """One logger per process (TensorRT keeps the first it is given); it keeps errors for one-line messages."""
    trt = import_tensorrt()

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.info("TensorRT: %s", msg)

    return Logger()


class _EngineRunner(Runner):
    """An engine with device buffers bound; `run_ms` is CUDA-event time around one `execute_async_v3`."""

    def __init__(self, trt, runtime, plan: bytes, feeds: dict[str, np.ndarray]):
        import torch
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise GraphoptError("TensorRT could not load the engine it just built")
        self.context = self.engine.create_execution_context()
        self.buffers: dict[str, torch.Tensor] = {}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        for name in names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                host = feeds[name].astype(trt.nptype(self.engine.get_tensor_dtype(name)), copy=False)
                if not self.context.set_input_shape(name, host.shape):
                    raise GraphoptError(f"input '{name}' shape {host.shape} is outside the engine's profile")
                self.buffers[name] = torch.from_numpy(np.ascontiguousarray(host)).cuda()
        for name in names:
            if name not in self.buffers:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise GraphoptError(f"output '{name}' has a data-dependent shape {shape}; not supported")
                dtype = torch.from_numpy(np.empty(0, trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
                self.buffers[name] = torch.empty(shape, dtype=dtype, device="cuda")
        for name, buffer in self.buffers.items():
            self.context.set_tensor_address(name, buffer.data_ptr())
        self.stream = torch.cuda.Stream()
        self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()  # inputs were copied on the default stream

    def run_ms(self) -> float:
        self.start.record(self.stream)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise GraphoptError("TensorRT failed to run the engine")
        self.end.record(self.stream)
        self.end.synchronize()
        return self.start.elapsed_time(self.end)

    def close(self) -> None:
        self.stream.synchronize()
        del self.context, self.engine
        self.buffers.clear()


class TensorRTBackend(LatencyBackend):
    """Builds a TensorRT engine per model (FP32, FP16, or INT8 calibrated on graphopt's calibration set) and times
    it on the GPU. One timing cache serves every build of the instance, so the many candidate models of one run,
    which share most layers, build quickly; `timing_cache` keeps it in a file across runs."""

    name = "tensorrt"

    def __init__(self, settings: TimingSettings | None = None, precision: str = "fp32",
                 calibration: CalibrationBatches | None = None, timing_cache: Path | None = None,
                 workspace_mb: int | None = None, calibration_cache: Path | None = None):
        super().__init__(settings)
        if precision not in PRECISIONS:
            raise GraphoptError(f"unknown TensorRT precision '{precision}' (choose from {', '.join(PRECISIONS)})")
        if workspace_mb is not None and workspace_mb < 1:
            raise GraphoptError(f"workspace must be at least 1 MB, got {workspace_mb}")
        if timing_cache and not Path(timing_cache).parent.is_dir():
            raise GraphoptError(f"cannot keep the timing cache in {timing_cache}: its folder does not exist")
        if calibration_cache and not Path(calibration_cache).is_dir():
            raise GraphoptError(f"calibration cache folder {calibration_cache} does not exist")
        self.trt = import_tensorrt()
        self.gpu = require_gpu()
        self.major = int(self.trt.__version__.split(".")[0])
        if self.major >= 11 and precision != "fp32":
            raise GraphoptError(f"TensorRT {self.trt.__version__} has no {precision} builder flag or INT8 calibrator; "
                                f"install TensorRT 10 (pip install 'tensorrt>=10,<11') for --precision {precision}")
        self.precision = precision
        self.calibration = calibration
        self.timing_cache_path = Path(timing_cache) if timing_cache else None
        self.calibration_cache = Path(calibration_cache) if calibration_cache else None
        self.workspace_mb = workspace_mb
        self._logger = _logger()
        self._builder = self.trt.Builder(self._logger)
        self._runtime = self.trt.Runtime(self._logger)
        self._timing_cache = None

    def load(self, model: onnx.ModelProto) -> Runner:
        feeds = random_inputs(model, self.settings.batch, self.settings.input_shapes)
        return _EngineRunner(self.trt, self._runtime, self.build_engine(model), feeds)

    def build_engine(self, model: onnx.ModelProto, path: Path | None = None) -> bytes:
        """The serialised engine of `model`; written to `path` too when given (what `--engine` saves)."""
        trt = self.trt
        network = self._builder.create_network(
            0 if self.major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(model.SerializeToString()):
            raise GraphoptError(_parser_error(parser, model))
        config = self._builder.create_builder_config()
        if self.workspace_mb:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        self._attach_timing_cache(config)
        shapes = profile_shapes(model, self.settings)
        dynamic = any(-1 in tuple(network.get_input(i).shape) for i in range(network.num_inputs))
        if dynamic:
            profile = self._builder.create_optimization_profile()
            for name, (low, opt, high) in shapes.items():
                profile.set_shape(name, low, opt, high)
            config.add_optimization_profile(profile)
        if self.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # INT8 falls back to FP16, not FP32, where it has no kernel
        calibrator = None
        if self.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            calibrator = self._calibrator(model, shapes, config, dynamic)
        self._logger.errors.clear()
        plan = self._builder.build_serialized_network(network, config)
        del calibrator  # TensorRT calls back into it during the build, so it must live until here
        if plan is None:
            reason = self._logger.errors[0].splitlines()[0] if self._logger.errors else "no reason given"
            raise GraphoptError(f"TensorRT could not build an engine ({self.precision}): {reason}")
        if self.timing_cache_path:
            write_atomic(self.timing_cache_path, bytes(self._timing_cache.serialize()))
        engine = bytes(plan)
        if path is not None:
            write_atomic(path, engine)
        return engine

    def describe(self) -> dict:
        return {**super().describe(), "precision": self.precision, "tensorrt": self.trt.__version__, "gpu": self.gpu,
                "timing_cache": str(self.timing_cache_path) if self.timing_cache_path else None}

    def _attach_timing_cache(self, config) -> None:
        """Create the shared cache on the first build (from the file when there is one) and attach it."""
        if self._timing_cache is None:
            saved = self.timing_cache_path.read_bytes() if self.timing_cache_path and self.timing_cache_path.is_file() \
                else b""
            self._timing_cache = config.create_timing_cache(saved)
            if saved and (self._timing_cache is None or not config.set_timing_cache(self._timing_cache, False)):
                log.warning("timing cache %s was made by another TensorRT or GPU; starting a new one",
                            self.timing_cache_path)
                self._timing_cache = config.create_timing_cache(b"")
        if not config.set_timing_cache(self._timing_cache, False):
            raise GraphoptError("TensorRT refused graphopt's timing cache")

    def _calibrator(self, model: onnx.ModelProto, shapes: dict, config, dynamic: bool):
        """Attach an entropy calibrator fed by the calibration set (and a calibration profile at its batch shape)."""
        if self.calibration is None:
            if any(node.op_type == "QuantizeLinear" for node in model.graph.node):
                return None  # explicitly quantised: the scales are in the model
            raise GraphoptError("--precision int8 needs calibration images (--calib FOLDER) "
                                "or a model with QuantizeLinear/DequantizeLinear nodes")
        if list(shapes) != [self.calibration.input_name]:
            raise GraphoptError(f"the calibration set feeds '{self.calibration.input_name}' but the model's inputs are "
                                f"{', '.join(shapes) or 'none'}")
        cache = (calibration_cache_file(self.calibration_cache, model, self.calibration, self.trt.__version__)
                 if self.calibration_cache else None)
        calibrator = entropy_calibrator(self.calibration, cache)
        config.int8_calibrator = calibrator
        if dynamic:
            profile = self._builder.create_optimization_profile()
            profile.set_shape(calibrator.input_name, calibrator.batch_shape, calibrator.batch_shape,
                              calibrator.batch_shape)
            config.set_calibration_profile(profile)
        return calibrator


def _parser_error(parser, model: onnx.ModelProto) -> str:
    """The first of the parser's errors, with the ONNX node it names."""
    if parser.num_errors == 0:
        return "TensorRT cannot parse the model (no reason given)"
    error = parser.get_error(0)
    index, where = error.node(), ""
    if 0 <= index < len(model.graph.node):
        node = model.graph.node[index]
        where = f" at node '{node.name or index}' ({node.op_type})"
    return f"TensorRT cannot parse the model{where}: {str(error.desc()).splitlines()[0]}"
