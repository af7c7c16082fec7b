"""Latency backends behind one interface; `get_backend` picks one by the name users type."""
from __future__ import annotations

from graphopt.errors import GraphoptError
from graphopt.runtime.base import Comparison, LatencyBackend, LatencyStats, TimingRun, TimingSettings

RUNTIMES = ("onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")


def get_backend(runtime: str = "onnxruntime", settings: TimingSettings | None = None, threads: int | None = None,
                precision: str = "fp32", calibration=None) -> LatencyBackend:
    """Build the backend named `runtime` (see RUNTIMES); `calibration` (trt_calibration.CalibrationBatches) feeds
    TensorRT's INT8 calibration."""
    if runtime in ("onnxruntime", "onnxruntime-cpu"):
        from graphopt.runtime.onnxrt import OnnxRuntimeBackend
        return OnnxRuntimeBackend(settings, threads=threads)
    if runtime == "onnxruntime-cuda":
        from graphopt.runtime.onnxrt import OnnxRuntimeBackend
        return OnnxRuntimeBackend(settings, threads=threads, provider="cuda")
    if runtime == "onnxruntime-tensorrt":
        from graphopt.runtime.onnxrt import OnnxRuntimeBackend
        return OnnxRuntimeBackend(settings, threads=threads, provider="tensorrt")
    if runtime == "tensorrt":
        from graphopt.runtime.tensorrt import TensorRTBackend
        return TensorRTBackend(settings, precision=precision, calibration=calibration)
    raise GraphoptError(f"unknown runtime '{runtime}' (choose from {', '.join(RUNTIMES)})")


__all__ = ["Comparison", "LatencyBackend", "LatencyStats", "TimingRun", "TimingSettings", "get_backend", "RUNTIMES"]
