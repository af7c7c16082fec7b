"""TensorRT's INT8 entropy calibration from batches of model inputs, whatever made them: the runtime needs only the
input's name, equal batches and a fingerprint of the data (`CalibrationBatches`); graphopt's calibration set makes
them (calibration/data/dataset.py `tensorrt_batches`), so one small image folder serves both block selection and
quantisation without the runtime depending on the training side. Importable without TensorRT: the calibrator
class is made on demand."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from graphopt.errors import GraphoptError
from graphopt.model_io import model_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationBatches:
    """Equal-sized, C-contiguous batches of the input named `input_name`, covering every sample; `fingerprint`
    names the data (the cache of scales is kept per model, data and TensorRT version)."""

    input_name: str
    batches: tuple[np.ndarray, ...]
    fingerprint: str

    def __post_init__(self):
        if not self.batches or len({b.shape for b in self.batches}) != 1:
            raise GraphoptError("TensorRT calibration needs at least one batch, all of one shape")


def calibration_cache_file(folder: Path, model: onnx.ModelProto, calibration: CalibrationBatches,
                           tensorrt_version: str) -> Path:
    """Where the scales of this model, calibrated on this set by this TensorRT, are kept.

    TensorRT trusts whatever cache it is handed, and dropping a block changes the ranges of every tensor after
    it, so the name carries the model's hash, the set's fingerprint and the TensorRT version.
    """
    model_hash = model_digest(model)[:16]
    return Path(folder) / f"{model_hash}-{calibration.fingerprint[:16]}-trt{tensorrt_version}.calib"


def entropy_calibrator(calibration: CalibrationBatches, cache_path: Path | None = None):
    """A `tensorrt.IInt8EntropyCalibrator2` over `calibration.batches`.

    With `cache_path`, scales are read from that file when it exists (calibration is skipped) and written there
    after calibrating. Device memory is one batch, reused.
    """
    import torch

    from graphopt.atomic import write_atomic
    from graphopt.runtime.tensorrt import import_tensorrt

    trt = import_tensorrt()
    batches = calibration.batches

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.input_name = calibration.input_name
            self.batch_shape = batches[0].shape
            self._pending = iter(batches)
            self._device = torch.empty(batches[0].shape, dtype=torch.from_numpy(batches[0]).dtype, device="cuda")

        def get_batch_size(self) -> int:
            return self.batch_shape[0]

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._pending, None)
            if batch is None:
                return None
            self._device.copy_(torch.from_numpy(batch))
            torch.cuda.current_stream().synchronize()  # TensorRT reads it on its own stream
            return [self._device.data_ptr()]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path and cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            if cache_path:
                try:
                    write_atomic(cache_path, bytes(cache))
                except GraphoptError as exc:  # never raise into TensorRT's build; the scales are only not kept
                    log.warning("INT8 scales not cached: %s", exc)

    return EntropyCalibrator()
