"""The calibration set: samples in memory, eval and augmented tensors, held-out split, feeds, cache fingerprint."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import torch

from graphopt.calibration.data.images import listing, load_arrays, load_images, scan
from graphopt.calibration.data.preprocess import Preprocess, input_dims
from graphopt.errors import GraphoptError
from graphopt.model_io import load_model
from graphopt.runtime.inputs import input_dtype, runtime_inputs
from graphopt.shapes import typed, value_infos

DEFAULT_FEED_BATCH = 16
# Ops that hand integer values on unchanged (only their arrangement changes), so a Gather behind them indexes with
# the input's own values.
VALUE_PRESERVING_OPS = frozenset({"Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"})


@dataclass(frozen=True, repr=False, eq=False)
class CalibrationSet:
    """Samples for one model input. For images, `data` holds uint8 (N, C, h, w) at `preprocess.stored_size`;
    for .npy folders (`preprocess` None) it holds the samples themselves in the input's dtype."""

    data: torch.Tensor
    files: tuple[str, ...]
    digests: tuple[str, ...]
    preprocess: Preprocess | None
    input_name: str
    input_dtype: np.dtype
    fixed_batch: int | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        kind = "images" if self.preprocess else ".npy samples"
        return f"CalibrationSet({len(self)} {kind} for '{self.input_name}', {tuple(self.tensors(1).shape[1:])})"

    def tensors(self, limit: int | None = None) -> torch.Tensor:
        """Deterministic model inputs (the first `limit` samples): float32 (N, C, H, W) for images."""
        data = self.data[:limit]
        return self.preprocess.evaluate(data) if self.preprocess else data

    def augmented(self, generator: torch.Generator) -> torch.Tensor:
        """A fresh augmented batch of every sample (random resized crop, flip), reproducible from the generator.
        Tensors other than images are not augmented: they come back as they are."""
        return self.preprocess.augment(self.data, generator) if self.preprocess else self.data

    def with_views(self, views: int, seed: int = 0) -> torch.Tensor:
        """The deterministic inputs followed by `views` seeded augmented copies of every sample; samples that are
        not images are not augmented, so they come back once."""
        images = self.tensors()
        if self.preprocess is None or views < 1:
            return images
        generator = torch.Generator().manual_seed(seed)
        return torch.cat([images, *(self.augmented(generator) for _ in range(views))])

    def split(self, holdout_fraction: float, seed: int = 0) -> tuple[CalibrationSet, CalibrationSet]:
        """(train, held-out) by source file, at least one file in each; the same seed gives the same split.

        Files with identical contents count as one source (a copy under another name never lands on both sides),
        so agreement measured on the held-out side is on images training never saw.
        """
        if not 0 < holdout_fraction < 1:
            raise GraphoptError(f"held-out fraction must be between 0 and 1, got {holdout_fraction}")
        sources: dict[str, list[int]] = {}
        for index, digest in enumerate(self.digests):
            sources.setdefault(digest, []).append(index)
        groups = list(sources.values())
        if len(groups) < 2:
            raise GraphoptError(f"need at least 2 distinct calibration files to hold some out, have {len(groups)}")
        held = min(len(groups) - 1, max(1, round(len(groups) * holdout_fraction)))
        order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
        members = [torch.tensor([i for g in chosen for i in groups[g]]) for chosen in (order[held:], order[:held])]
        return self._subset(members[0]), self._subset(members[1])

    def sources(self) -> int:
        """Distinct source files (identical contents counted once)."""
        return len(set(self.digests))

    def head(self, count: int) -> CalibrationSet:
        """The first `count` samples (all of them when there are fewer)."""
        return self._subset(torch.arange(min(count, len(self))))

    def fingerprint(self) -> str:
        """A stable hash of the files' paths and contents, the preprocessing and the input it feeds: a cache key."""
        record = {"files": list(zip(self.files, self.digests)), "input": self.input_name,
                  "dtype": str(self.input_dtype), "preprocess": asdict(self.preprocess) if self.preprocess else None}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()

    def feeds(self, batch_size: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """{input name: array} batches in the input's dtype, for onnxruntime or TensorRT INT8 calibration.

        A model with a fixed batch dimension gets only full batches of that size; otherwise the last may be short.
        """
        if self.fixed_batch is not None:
            if batch_size not in (None, self.fixed_batch):
                raise GraphoptError(f"input '{self.input_name}' has a fixed batch of {self.fixed_batch}; "
                                    f"cannot feed batches of {batch_size}")
            if len(self) < self.fixed_batch:
                raise GraphoptError(f"input '{self.input_name}' has a fixed batch of {self.fixed_batch}; "
                                    f"the calibration set has only {len(self)} samples")
            batch_size, stop = self.fixed_batch, len(self) - len(self) % self.fixed_batch
        else:
            batch_size, stop = batch_size or DEFAULT_FEED_BATCH, len(self)
        if batch_size < 1:
            raise GraphoptError(f"batch size must be positive, got {batch_size}")
        inputs = self.tensors().numpy().astype(self.input_dtype, copy=False)
        for start in range(0, stop, batch_size):
            yield {self.input_name: inputs[start:start + batch_size]}

    def _subset(self, indices: torch.Tensor) -> CalibrationSet:
        keep = indices.sort().values.tolist()
        return CalibrationSet(self.data[keep], tuple(self.files[i] for i in keep), tuple(self.digests[i] for i in keep),
                              self.preprocess, self.input_name, self.input_dtype, self.fixed_batch)


def load_calibration(folder: str | os.PathLike, model: str | os.PathLike | onnx.ModelProto,
                     preprocess: Preprocess | None = None, **preset_kwargs) -> CalibrationSet:
    """Load a folder of images (or .npy tensors) for the model's input.

    Image preprocessing is `preprocess` or else `Preprocess.for_model(model, **preset_kwargs)`
    (size, norm, mean, std, bgr, resize).
    """
    if preprocess is not None and preset_kwargs:
        raise GraphoptError(f"give a Preprocess or preset settings, not both ({', '.join(preset_kwargs)})")
    if not isinstance(model, onnx.ModelProto):
        model = load_model(model)
    inputs = runtime_inputs(model)
    if len(inputs) != 1:
        raise GraphoptError(f"the model has {len(inputs)} inputs; calibration data feeds single-input models only")
    value = inputs[0]
    dims = input_dims(value)
    fixed_batch = dims[0] if dims else None
    dtype = input_dtype(value)
    found = scan(folder)
    if found.arrays:
        samples, preprocess = load_arrays(found, tuple(dims[1:]), dtype, value.name), None
        if np.issubdtype(dtype, np.integer):
            check_index_ranges(model, value.name, samples.data, samples.files)
    else:
        preprocess = preprocess or Preprocess.for_model(model, **preset_kwargs)
        samples = load_images(found, preprocess)
    return CalibrationSet(samples.data, samples.files, samples.digests, preprocess, value.name, dtype, fixed_batch)


def check_index_ranges(model: onnx.ModelProto, input_name: str, data: torch.Tensor, files: tuple[str, ...]) -> None:
    """Refuse integer samples that index out of range where the input feeds Gather as indices (token ids into an
    embedding table): GraphoptError naming the files, a value each, and the valid range.

    Why a check on the graph rather than one onnxruntime run of the original over the samples: it costs no
    inference at load (a large model on hundreds of samples would take a while before any real work), it can say
    the valid range (a runtime failure names the op, not the input or the file), and it knows which sample is
    wrong without running them one at a time. It covers what token-id inputs do (Gather, directly or after ops
    that only rearrange the values); an index computed by arithmetic is beyond it.
    """
    flat = data.reshape(len(data), -1)
    for node, size in _gathers_indexed_by(model, input_name):
        outside = (flat < -size) | (flat >= size)
        bad = [f"{files[i]} ({int(flat[i][outside[i]][0])})" for i in outside.any(dim=1).nonzero().flatten().tolist()]
        if bad:
            raise GraphoptError(f"calibration samples out of range for input '{input_name}', which indexes "
                                f"{size} entries (Gather '{node.name or node.output[0]}') and so takes values from "
                                f"{-size} to {size - 1}: {listing(bad)}")


def _gathers_indexed_by(model: onnx.ModelProto, name: str) -> list[tuple[onnx.NodeProto, int]]:
    """(Gather node, size of its gathered axis) for each Gather whose indices are the tensor `name` or come from it
    through VALUE_PRESERVING_OPS; Gathers whose axis size is unknown are left out."""
    work = typed(model)
    shapes = _known_dims(work)
    found, carriers, frontier = [], {name}, [name]
    while frontier:
        tensor = frontier.pop()
        for node in work.graph.node:
            if node.op_type == "Gather" and node.input[1] == tensor:
                data_shape = shapes.get(node.input[0], ())
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                if -len(data_shape) <= axis < len(data_shape) and data_shape[axis] > 0:
                    found.append((node, data_shape[axis]))
            elif node.op_type in VALUE_PRESERVING_OPS and node.input[0] == tensor and node.output[0] not in carriers:
                carriers.add(node.output[0])
                frontier.append(node.output[0])
    return found


def _known_dims(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Dims of every tensor whose rank is known, by name (-1 for a dim that is not): initializers and the values
    shape inference typed."""
    dims = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for name, value in value_infos(model).items():
        if value.type.tensor_type.HasField("shape"):
            dims[name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
    return dims


def tensorrt_batches(calibration: CalibrationSet, batch_size: int = DEFAULT_FEED_BATCH):
    """The calibration set as TensorRT's INT8 calibration takes it (graphopt/runtime/trt_calibration.py): equal-sized,
    C-contiguous batches in the input's dtype that cover every sample.

    TensorRT calibrates a dynamic-batch network at one fixed shape (the calibration profile), so a short last
    batch is topped up with the first samples instead of being dropped: a tiny set cannot spare any. A model
    with a fixed batch gets the set's own full batches of that size.
    """
    from graphopt.runtime.trt_calibration import CalibrationBatches
    if batch_size < 1:
        raise GraphoptError(f"calibration batch size must be positive, got {batch_size}")
    size = calibration.fixed_batch or min(batch_size, len(calibration))
    batches = [np.ascontiguousarray(feed[calibration.input_name]) for feed in calibration.feeds(size)]
    short = size - len(batches[-1])
    if short:
        batches[-1] = np.ascontiguousarray(np.concatenate([batches[-1], batches[0][:short]]))
    return CalibrationBatches(calibration.input_name, tuple(batches), calibration.fingerprint())
