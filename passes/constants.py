"""Reading the constant operands of a node (weights, shapes, sizes) as graphsurgeon presents them."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from graphopt.errors import GraphoptError


def constant_value(tensor: gs.Tensor, pass_name: str) -> np.ndarray:
    """The value of a constant operand: an initializer, a Constant node's value, or either behind Identity nodes
    (TorchScript's deduplicated weights). Anything computed at run time is an error naming `pass_name`."""
    if isinstance(tensor, gs.Constant):
        return tensor.values
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is not None and producer.op == "Identity":
        return constant_value(producer.inputs[0], pass_name)
    if producer is not None and producer.op == "Constant" and "value" in producer.attrs:
        return producer.attrs["value"].values
    raise GraphoptError(f"{pass_name}: {tensor.name} is not a constant")
