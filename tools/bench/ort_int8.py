"""The user's alternative to graphopt: onnxruntime's static INT8 quantization of the original, from the same
calibration folder, written the way onnxruntime's documentation shows (pre-process, then `quantize_static`, QDQ,
per-channel weights). No graphopt code quantizes here, so the results table compares against what a user would
get without us.

    python -m tools.bench.ort_int8 MODEL.onnx CALIB_FOLDER OUT.onnx [--preset tf] [--resize crop]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from tools.bench.common import run_cli


class _FolderReader(CalibrationDataReader):
    """One image at a time, as the onnxruntime quantization examples feed a folder."""

    def __init__(self, input_name: str, images: np.ndarray):
        self._feeds = iter([{input_name: image[None]} for image in images])

    def get_next(self):
        return next(self._feeds, None)


def quantize_static_baseline(model: onnx.ModelProto, images: np.ndarray) -> onnx.ModelProto:
    """`model` quantized by onnxruntime from `images` (N, C, H, W float32, already preprocessed for the model)."""
    with tempfile.TemporaryDirectory() as folder:
        source, prepared, output = (str(Path(folder) / n) for n in ("model.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(model, source)
        quant_pre_process(source, prepared)
        quantize_static(prepared, output, _FolderReader(model.graph.input[0].name, images),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        return onnx.load(output)


def folder_images(model: onnx.ModelProto, folder: Path, preset: str, resize: str) -> np.ndarray:
    """The folder's images preprocessed for `model` (graphopt's decoder, so both sides see identical inputs)."""
    from graphopt.calibration.data.dataset import load_calibration
    return load_calibration(folder, model, norm=preset, resize=resize).tensors().numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.ort_int8", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("calib", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--preset", default="imagenet")
    parser.add_argument("--resize", default="crop")
    args = parser.parse_args(argv)
    model = onnx.load(str(args.model))
    onnx.save(quantize_static_baseline(model, folder_images(model, args.calib, args.preset, args.resize)),
              str(args.output))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    run_cli(main)
