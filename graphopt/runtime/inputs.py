"""Example inputs built from a model's own input names, dtypes and shapes."""
from __future__ import annotations

import math
import os

import numpy as np
import onnx
from onnx import helper

from graphopt.errors import GraphoptError


def runtime_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs a caller must feed (old exporters also list initializers as inputs)."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def input_shape(value: onnx.ValueInfoProto, batch: int, overrides: dict[str, tuple[int, ...]] | None = None
                ) -> tuple[int, ...]:
    """Concrete shape: overrides first, a dynamic leading dim becomes `batch`, any other dynamic dim is an error."""
    if overrides and value.name in overrides:
        check_input_bytes(value.name, tuple(overrides[value.name]), input_dtype(value))
        return tuple(overrides[value.name])
    dims = value.type.tensor_type.shape.dim
    shape = []
    for axis, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(dim.dim_value)
        elif axis == 0:
            shape.append(batch)
        else:
            raise GraphoptError(
                f"input '{value.name}' has a dynamic dimension {axis} ({dim.dim_param or '?'}); "
                f"give its shape with --input-shape {value.name}:D0xD1x...")
    check_input_bytes(value.name, tuple(shape), input_dtype(value))
    return tuple(shape)


def check_input_bytes(name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse an input that would take over a quarter of this machine's memory (the model's activations need many
    times its size), with one line, before any array is allocated."""
    need = math.prod(shape) * np.dtype(dtype).itemsize
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > memory // 4:
        raise GraphoptError(f"input '{name}' of shape {'x'.join(map(str, shape))} takes {need / 2**30:.1f} GiB, over "
                            f"a quarter of this machine's {memory / 2**30:.0f} GiB of memory; give a smaller "
                            f"--input-shape, --size or --batch")


def input_dtype(value: onnx.ValueInfoProto) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))


def random_inputs(model: onnx.ModelProto, batch: int = 1, overrides: dict[str, tuple[int, ...]] | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds matching the model's inputs; integers stay small so index inputs remain valid."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in runtime_inputs(model):
        shape = input_shape(value, batch, overrides)
        dtype = input_dtype(value)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[value.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def parse_input_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse `name:1x3x224x224` strings from the command line."""
    shapes = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise GraphoptError(f"bad --input-shape '{spec}': expected NAME:D0xD1x... such as "
                                f"input:1x3x224x224") from None
    return shapes


def checked_input_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None
                         ) -> dict[str, tuple[int, ...]] | None:
    """`shapes` (from --input-shape) after checking each names an input of `model` with that many dimensions."""
    if not shapes:
        return None
    inputs = {value.name: value for value in runtime_inputs(model)}
    for name, shape in shapes.items():
        if name not in inputs:
            raise GraphoptError(f"--input-shape names '{name}', which is not an input of the model "
                                f"(inputs: {', '.join(inputs)})")
        rank = len(inputs[name].type.tensor_type.shape.dim)
        if len(shape) != rank or min(shape) < 1:
            raise GraphoptError(f"--input-shape {name}: {'x'.join(map(str, shape))} does not fit an input of "
                                f"{rank} dimensions (every dimension at least 1)")
        for axis, dim in enumerate(inputs[name].type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != shape[axis]:
                raise GraphoptError(f"--input-shape {name}: dimension {axis} is fixed at {dim.dim_value} by the "
                                    f"model (got {shape[axis]})")
        check_input_bytes(name, shape, input_dtype(inputs[name]))
    return dict(shapes)
