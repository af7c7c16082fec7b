"""Loading and saving ONNX models safely: clear errors on bad files, atomic writes, never touching the input."""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

from graphopt.errors import GraphoptError, first_line

FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16})

# Protobuf cannot serialise a message over 2 GiB; keep a margin for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000

# onnxruntime only guarantees opsets from 7 (it warns below). blocks, drop and bench work from there; accelerate's
# recovery (onnx2torch) needs opset 9 for BatchNormalization and names the node it cannot convert otherwise.
MIN_OPSET = 7


def load_model(source: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Load and validate a model (external data included); a ModelProto is copied so the caller's stays untouched."""
    if isinstance(source, onnx.ModelProto):
        model = _copy(source)
    else:
        path = Path(source)
        if not path.exists():
            raise GraphoptError(f"model not found: {path}")
        if not path.is_file():
            raise GraphoptError(f"model path is not a file: {path}")
        try:
            model = onnx.load(str(path), load_external_data=True)
        except (DecodeError, RuntimeError, ValueError, OSError) as exc:
            raise GraphoptError(f"{path} is not a readable ONNX model ({first_line(exc)})") from None
        except Exception as exc:  # protobuf raises assorted types on truncated files
            raise GraphoptError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise GraphoptError("the ONNX model has an empty graph (is it an ONNX file?)")
    _check_opset(model)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise GraphoptError(f"the ONNX model is invalid: {first_line(exc)}") from None
    _check_finite_weights(model)
    return model


# Operators whose initializer inputs are learned weights. An infinite value elsewhere can be meant (attention masks
# filled with -inf, clamps); in a weight, as NaN anywhere, it only spreads NaN through every score and recovery.
WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization", "InstanceNormalization",
                        "LayerNormalization", "GroupNormalization", "PRelu"})


def _check_finite_weights(model: onnx.ModelProto) -> None:
    """One line naming the first float initializer that holds NaN, or ±Inf where it is a weight."""
    weights = {name for node in model.graph.node if node.op_type in WEIGHT_OPS for name in node.input}
    for tensor in model.graph.initializer:
        if tensor.data_type not in FLOAT_TYPES:
            continue
        values = onnx.numpy_helper.to_array(tensor)
        if np.isnan(values).any() or (tensor.name in weights and np.isinf(values).any()):
            bad = int((~np.isfinite(values)).sum())
            raise GraphoptError(f"the model's initializer '{tensor.name}' holds {bad} value(s) that are NaN or "
                                f"infinite; graphopt needs finite weights")


def supported_opsets() -> range:
    """The default-domain opsets graphopt handles: from MIN_OPSET to the newest both onnx and onnxruntime know."""
    newest = onnx.defs.onnx_opset_version()
    while newest > MIN_OPSET and not _runtime_loads_opset(newest):
        newest -= 1
    return range(MIN_OPSET, newest + 1)


def _check_opset(model: onnx.ModelProto) -> None:
    """Refuse an opset outside the supported range up front; later it surfaces as an obscure operator error."""
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None:
        return
    supported = supported_opsets()
    if version not in supported:
        import onnxruntime
        raise GraphoptError(f"the model's opset {version} is not supported: graphopt handles ONNX opsets "
                            f"{supported.start} to {supported.stop - 1} (onnx {onnx.__version__}, "
                            f"onnxruntime {onnxruntime.__version__})")


@functools.lru_cache(maxsize=None)
def _runtime_loads_opset(version: int) -> bool:
    """Whether onnxruntime loads a one-node model stamped with `version`. Measured, because onnxruntime has no public
    call naming its newest opset; it refuses opsets newer than the last ONNX release it was built with."""
    import onnxruntime
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "opset_probe", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    opset = helper.make_opsetid("", version)
    probe = helper.make_model(graph, opset_imports=[opset], ir_version=helper.find_min_ir_version_for([opset]))
    try:
        onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    except Fail:
        return False
    return True


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write atomically (temporary file then rename); weights go to `<name>.data` beside it when over 2 GB."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise GraphoptError(f"cannot write {path}: folder {parent} does not exist")
    if path.is_dir():
        raise GraphoptError(f"cannot write {path}: it is a folder")
    external = model.ByteSize() > EXTERNAL_DATA_THRESHOLD if _fits_protobuf(model) else True
    try:
        with tempfile.TemporaryDirectory(dir=parent, prefix=f".{path.name}.") as tmp:
            tmp_model = Path(tmp) / path.name
            if external:
                data_name = f"{path.name}.data"
                model = _copy(model)  # onnx rewrites tensors to point at the data file in place
                onnx.save_model(model, str(tmp_model), save_as_external_data=True,
                                all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
                os.replace(Path(tmp) / data_name, parent / data_name)
            else:
                onnx.save_model(model, str(tmp_model))
            os.replace(tmp_model, path)
    except PermissionError:
        raise GraphoptError(f"cannot write {path}: permission denied") from None
    except OSError as exc:
        raise GraphoptError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _fits_protobuf(model: onnx.ModelProto) -> bool:
    try:
        model.ByteSize()
        return True
    except ValueError:
        return False


def model_digest(model: onnx.ModelProto) -> str:
    """SHA-256 of the model's deterministic serialization: the same graph and weights give the same digest."""
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
