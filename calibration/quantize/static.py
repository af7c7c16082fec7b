"""INT8 for onnxruntime with onnxruntime's own static quantization (QDQ, per-channel weights), calibrated on
graphopt's calibration set, so one small image folder serves block selection, recovery and quantization.

QDQ keeps the graph in standard ONNX (QuantizeLinear/DequantizeLinear pairs around each quantized op) that
onnxruntime fuses into integer kernels at session load and `onnx.checker` accepts.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from graphopt.calibration.data.dataset import CalibrationSet
from graphopt.errors import GraphoptError, first_line

# Latency does not depend on the scales, so a variant quantized only to be timed is calibrated on a few samples.
TIMING_SAMPLES = 4


@dataclass(frozen=True)
class QuantizeSettings:
    """What `quantize_int8` asks of onnxruntime.quantization (defaults: what its docs recommend for x86 CPUs)."""

    per_channel: bool = True
    activations: str = "uint8"  # U8S8: uint8 activations, int8 weights (fast on AVX-512 VNNI and AVX2)
    method: str = "minmax"  # minmax | entropy | percentile
    batch: int = 16


def quantize_int8(model: onnx.ModelProto, calibration: CalibrationSet, settings: QuantizeSettings = QuantizeSettings(),
                  samples: int | None = None) -> onnx.ModelProto:
    """`model` statically quantized to INT8 (QDQ), activation ranges calibrated on the first `samples` calibration
    samples (all when None). The input model is not changed."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if settings.method not in methods:
        raise GraphoptError(f"unknown INT8 calibration method '{settings.method}' (choose from {', '.join(methods)})")
    activations = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[settings.activations]
    subset = calibration if samples is None else calibration.head(samples)
    feeds = subset.feeds(settings.batch)

    class Feeds(CalibrationDataReader):  # defined here: importing the tooling is slow, and only INT8 runs need it
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    reader = Feeds()
    with tempfile.TemporaryDirectory(prefix="graphopt-int8-") as folder:
        source, prepared, target = (Path(folder) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(model, str(source))
        # the documented preparation: symbolic shapes and basic graph optimisation, so more ops get quantized
        logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
            quantize_static(str(prepared), str(target), reader, quant_format=QuantFormat.QDQ,
                            per_channel=settings.per_channel, activation_type=activations,
                            weight_type=QuantType.QInt8, calibrate_method=methods[settings.method])
        except Exception as exc:  # the tooling raises many kinds; the user gets one line
            raise GraphoptError(f"onnxruntime could not quantize the model to INT8: {first_line(exc)}") from None
        return onnx.load(str(target))


def is_quantized(model: onnx.ModelProto) -> bool:
    """True when the graph already holds QDQ (or QOperator) INT8 nodes."""
    return any(node.op_type in ("QuantizeLinear", "QLinearConv", "ConvInteger") for node in model.graph.node)
