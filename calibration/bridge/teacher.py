"""The original model on onnxruntime as the teacher: it returns the intermediate tensors training needs."""
from __future__ import annotations

import numpy as np
import onnx
import torch

from graphopt.runtime.inputs import runtime_inputs
from graphopt.runtime.onnxrt import make_session
from graphopt.subgraph import with_outputs


class Teacher:
    """Runs the frozen original once per batch of images and hands back the named tensors as torch tensors.

    onnxruntime is faster than the converted PyTorch graph for pure inference, and the teacher never trains.
    The result also holds the images under the graph input's name, so a student cut at the input is fed alike.
    """

    def __init__(self, model: onnx.ModelProto, names: list[str], threads: int | None = None, batch_size: int = 32):
        value = runtime_inputs(model)[0]
        self.input = value.name
        self.names = [name for name in dict.fromkeys(names) if name != self.input]
        self.session = make_session(with_outputs(model, self.names), threads)
        first = value.type.tensor_type.shape.dim[0] if value.type.tensor_type.shape.dim else None
        self.batch_size = first.dim_value if first is not None and first.dim_value > 0 else batch_size

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        data = images.detach().cpu().numpy()
        for start in range(0, len(data), self.batch_size):
            values = self.session.run(self.names, {self.input: data[start:start + self.batch_size]})
            for name, value in zip(self.names, values):
                chunks[name].append(value)
        return {self.input: images, **{name: torch.from_numpy(np.concatenate(parts)) for name, parts in chunks.items()}}
