"""The load stage: the model as ONNX (exported first when it is a torch module), its input shapes, and the
calibration images split by source file into training and held-out sides."""
from __future__ import annotations

import io
import os
import sys
import warnings
from dataclasses import dataclass

import onnx

from graphopt.errors import GraphoptError, first_line
from graphopt.model_io import load_model
from graphopt.runtime.inputs import checked_input_shapes, runtime_inputs
from graphopt.settings import AccelerateSettings
from graphopt.stages.state import RELIABLE_HELD_OUT_FILES


@dataclass
class Loaded:
    original: onnx.ModelProto
    calibration: object  # CalibrationSet (imported lazily: it pulls in torch)
    train: object
    held: object
    input_shapes: dict | None  # per runtime input, at the deployment batch; None where the model fixes them


def load(model, example_input, calib, settings: AccelerateSettings, quiet: bool) -> Loaded:
    """The model and its calibration images; warns when too few held-out files make agreement unreliable."""
    original = _as_onnx(model, example_input)
    input_shapes = checked_input_shapes(original, settings.input_shapes)
    from graphopt.calibration.data.dataset import load_calibration
    calibration = load_calibration(calib, original, **_preprocess(settings, original, input_shapes))
    train, held = calibration.split(settings.holdout, settings.seed)
    if held.sources() < RELIABLE_HELD_OUT_FILES and not quiet:
        print(f"graphopt: warning: only {held.sources()} held-out calibration files: top-1 agreement on them is "
              f"unreliable (give more images or a larger --holdout)", file=sys.stderr)
    input_shapes = input_shapes or _shapes_from_calibration(original, calibration, settings.batch)
    return Loaded(original, calibration, train, held, input_shapes)


def _preprocess(settings: AccelerateSettings, model: onnx.ModelProto, input_shapes: dict | None) -> dict:
    """Preprocessing options; an --input-shape of the image input sets the image size unless --size does."""
    options = dict(settings.preprocess)
    name = runtime_inputs(model)[0].name
    if input_shapes and name in input_shapes and "size" not in options and len(input_shapes[name]) == 4:
        options["size"] = tuple(input_shapes[name][2:])
    return options


def _shapes_from_calibration(model: onnx.ModelProto, calibration, batch: int) -> dict | None:
    """Input shapes for a model whose input has dynamic dimensions besides the batch: the calibration samples'
    size at the deployment batch (None when the model fixes them itself)."""
    value = runtime_inputs(model)[0]
    if all(d.HasField("dim_value") for d in value.type.tensor_type.shape.dim[1:]):
        return None
    return {calibration.input_name: (batch, *calibration.tensors(1).shape[1:])}


def _as_onnx(model, example_input) -> onnx.ModelProto:
    """An ONNX model from a path, a ModelProto, or a torch module (exported with a dynamic batch)."""
    if isinstance(model, (str, os.PathLike, onnx.ModelProto)):
        return load_model(model)
    import torch
    if not isinstance(model, torch.nn.Module):
        raise GraphoptError(f"cannot accelerate a {type(model).__name__}: give an ONNX path, a ModelProto or a "
                            f"torch.nn.Module")
    if example_input is None:
        raise GraphoptError("a torch module needs example_input (a tensor of the input's shape) to be exported")
    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer chatter is not for our users
            torch.onnx.export(model, (example_input,), buffer, dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    except Exception as exc:  # exporter errors are many and varied
        raise GraphoptError(f"torch.onnx.export failed: {first_line(exc)}") from None
    finally:
        model.train(was_training)
    return load_model(onnx.load_from_string(buffer.getvalue()))
