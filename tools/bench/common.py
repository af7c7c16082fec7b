"""Pieces every benchmark shares: the cache folder, batched onnxruntime inference, the common arguments and outputs
of one-model studies, and one-line failures."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from graphopt.errors import GraphoptError
from graphopt.model_io import load_model
from graphopt.runtime.onnxrt import make_session

CACHE_ENV = "GRAPHOPT_BENCH_CACHE"


class BenchDataMissing(GraphoptError):
    """A data source or optional package the benchmark reads is not installed; the message says how to get it."""


def cache_dir(*parts: str) -> Path:
    """Where trained teachers, exports and calibration folders live (`$GRAPHOPT_BENCH_CACHE` or ~/.cache)."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "graphopt-bench")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def predict(model: str | os.PathLike | onnx.ModelProto, inputs: np.ndarray, batch: int = 256,
            threads: int | None = None) -> np.ndarray:
    """First output of `model` on `inputs`, run in batches; a model with a fixed batch size is fed that size."""
    proto = load_model(model)
    session = make_session(proto, threads=threads)
    feed = session.get_inputs()[0]
    fixed = feed.shape[0] if isinstance(feed.shape[0], int) and feed.shape[0] > 0 else None
    step = fixed or batch
    outputs = []
    for start in range(0, len(inputs), step):
        chunk = inputs[start:start + step]
        pad = step - len(chunk) if fixed else 0
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        out = session.run(None, {feed.name: np.ascontiguousarray(chunk, dtype=np.float32)})[0]
        outputs.append(out[:len(out) - pad])
    return np.concatenate(outputs)


def export_torchscript(model, example, path: Path) -> onnx.ModelProto:
    """Export the way graphopt's users do: TorchScript exporter (module paths in node names), opset 17, input
    `input` and output `logits` with a dynamic batch. Returns the model; `path` is only a scratch file."""
    import torch

    model.eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript", category=DeprecationWarning)
        # Lite0's TF-style padding defeats torch's constant folding, which warns; graphopt folds its working copy.
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(model, example, str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    exported = onnx.load(str(path))
    path.unlink()
    return exported


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments every study of one benchmark model takes: --bench, --threads, --out."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--bench", choices=["lite0", "fmnist"], default="lite0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    return parser


def write_study(out: Path, text: str, result: dict) -> None:
    """The study as markdown at `out`, its figures as JSON beside it, and the markdown on stdout."""
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(text)


def run_cli(main: Callable[[list[str] | None], int]) -> None:
    """Run a tool's main; a GraphoptError becomes one line on stderr and exit code 1, never a traceback."""
    try:
        sys.exit(main(None))
    except GraphoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 1))
