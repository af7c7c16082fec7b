"""Precision as the compiler's last stage. With `--precision int8` on onnxruntime every model that drives a
decision is timed in its INT8 form, because what a block saves in INT8 is not what it saves in FP32, and the
result is quantized with onnxruntime's own tooling from the same calibration images.

TensorRT quantizes inside its engine builder (graphopt/runtime/tensorrt.py), so there the ONNX model stays FP32.
"""
from __future__ import annotations

import onnx

from graphopt.errors import GraphoptError
from graphopt.model_io import model_digest
from graphopt.runtime.base import LatencyBackend, Runner

QUANTIZING_RUNTIMES = ("onnxruntime", "onnxruntime-cpu")


def quantizes_graph(runtime: str, precision: str) -> bool:
    """Whether graphopt writes the precision into the ONNX graph itself (INT8 QDQ for onnxruntime's CPU kernels);
    refuses precisions the runtime cannot serve from an ONNX graph, with one line."""
    if runtime == "tensorrt" or precision == "fp32":
        return False
    if precision == "int8" and runtime in QUANTIZING_RUNTIMES:
        return True
    raise GraphoptError(f"--precision {precision} is not available on --runtime {runtime}: onnxruntime serves INT8 "
                        f"on the CPU (QDQ graphs), TensorRT serves fp16 and int8 from its own builder")


def runtime_calibration(runtime: str, precision: str, calibration):
    """What the runtime's own INT8 calibration is fed from the calibration set: TensorRT's batches at int8, else
    nothing (onnxruntime's INT8 is written into the graph from the set itself, by `Int8Timing` and the result)."""
    if runtime != "tensorrt" or precision != "int8" or calibration is None:
        return None
    from graphopt.calibration.data.dataset import tensorrt_batches
    return tensorrt_batches(calibration)


class Int8Timing(LatencyBackend):
    """Times the INT8 form of each model it is given, except `reference` (the original as the user gave it, if
    any), which is timed as it is: every ratio is then a ratio to the original, and `--target-latency` keeps its
    meaning. Models already quantized are timed as they are.

    Latency does not depend on the activation scales, so a form made only to be timed is calibrated on a few
    samples; forms are kept per model, since selection times the same variants more than once.
    """

    def __init__(self, inner: LatencyBackend, calibration, reference: onnx.ModelProto | None = None,
                 timing_samples: int | None = None):
        from graphopt.calibration.quantize.static import TIMING_SAMPLES
        super().__init__(inner.settings)
        self.inner = inner
        self.calibration = calibration
        self.samples = timing_samples or TIMING_SAMPLES
        self.name = f"{inner.name} int8"
        self._reference = model_digest(reference) if reference is not None else None
        self._forms: dict[str, onnx.ModelProto] = {}

    def load(self, model: onnx.ModelProto) -> Runner:
        return self.inner.load(self.int8_form(model))

    def int8_form(self, model: onnx.ModelProto) -> onnx.ModelProto:
        from graphopt.calibration.quantize.static import is_quantized, quantize_int8
        key = model_digest(model)
        if is_quantized(model) or key == self._reference:
            return model
        if key not in self._forms:
            self._forms[key] = quantize_int8(model, self.calibration, samples=self.samples)
        return self._forms[key]

    def describe(self) -> dict:
        return {**self.inner.describe(), "runtime": self.name, "precision": "int8",
                "quantization": "onnxruntime quantize_static, QDQ, per-channel weights, uint8 activations"}
