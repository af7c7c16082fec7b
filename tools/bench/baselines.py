"""Baselines that need no training, so the results table is never empty and accelerate has something to beat.

Each row drops residual blocks with no recovery and reports quality (Fashion-MNIST test top-1, or Lite0 agreement
with the original) and the latency ratio to the original, measured side by side (see `paired_timing`).

    python -m tools.bench.baselines fmnist      # or lite0; prints the table and writes a JSON (see --out)

Baselines:
- random-k: k droppable blocks drawn at random (several seeds);
- last-per-stage: the last droppable block of each stage (blocks grouped by the shape of their skip tensor);
- proxy-k: the k blocks whose residual branch matters least by a data-free proxy, ||F(x)|| / ||x|| with F(x) = y - x
  the branch output at the block's join, averaged over Gaussian-noise inputs to the original model. A branch that
  barely changes its input is the cheapest to lose; no image and no label is needed.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from graphopt.blocks import Block, find_blocks
from graphopt.errors import GraphoptError
from graphopt.model_io import load_model
from graphopt.passes import drop_blocks
from graphopt.runtime import LatencyBackend, TimingSettings, get_backend
from graphopt.runtime.inputs import random_inputs
from graphopt.runtime.onnxrt import make_session
from tools.bench.common import run_cli


@dataclass
class Bench:
    """One benchmark: its model, how to score and time a model, and what a user would hand accelerate."""

    name: str
    title: str
    model_path: Callable[[], Path]
    model_record: Callable[[], dict]  # the JSON written beside the model (teacher accuracy, export check)
    quality: Callable[[onnx.ModelProto], dict]  # {"top1": ...} and optionally {"top5": ...}
    metric: str  # what quality["top1"] means, for table headers
    timing: TimingSettings
    calib_folder: Callable[[int, int], Path]  # (size, seed) -> image folder
    calib_sizes: tuple[int, ...]
    preprocessing: dict  # how the model's inputs are made from images, as a user would tell graphopt

    @property
    def accelerate_preprocess(self) -> dict:
        """The preprocessing as accelerate's `preprocess` setting takes it."""
        return {"norm": self.preprocessing["preset"], "resize": self.preprocessing["resize"]}


@dataclass
class Row:
    """One model in a results table. `recovery` and `wall_s` are filled by accelerate rows."""

    bench: str
    method: str
    dropped: list[str]
    quality: dict
    latency: dict  # the model's LatencyStats
    latency_ratio: float  # model median / original median, measured side by side (paired_timing)
    ratio_p10: float
    ratio_p90: float
    seed: int | None = None
    k: int | None = None
    recovery: str = "none"
    calibration: str | None = None
    wall_s: float | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _fmnist_bench() -> Bench:
    from tools import fmnist
    return Bench("fmnist", "Fashion-MNIST ResNet-20 (top-1 on the 10,000 test images)",
                 model_path=lambda: Path(fmnist.train_teacher()["model"]), model_record=fmnist.train_teacher,
                 quality=lambda m: {"top1": fmnist.evaluate(m)}, metric="test top-1",
                 timing=TimingSettings(batch=1, warmup=50, repeats=300),
                 calib_folder=fmnist.sample_calibration, calib_sizes=fmnist.CALIB_SIZES,
                 preprocessing=fmnist.INPUT_SPEC)


def _lite0_bench() -> Bench:
    from tools import effnet_lite
    return Bench("lite0", "EfficientNet-Lite0 (agreement with the original on held-out photos)",
                 model_path=effnet_lite.lite0_path,
                 model_record=lambda: json.loads(effnet_lite.lite0_path().with_suffix(".json").read_text()),
                 quality=effnet_lite.agreement, metric="top-1 agreement",
                 timing=TimingSettings(batch=1, warmup=10, repeats=100),
                 calib_folder=effnet_lite.write_calibration, calib_sizes=(100, 500),
                 preprocessing=effnet_lite.INPUT_SPEC)


BENCHES: dict[str, Callable[[], Bench]] = {"fmnist": _fmnist_bench, "lite0": _lite0_bench}


def get_bench(name: str) -> Bench:
    if name not in BENCHES:
        raise GraphoptError(f"unknown benchmark '{name}' (choose from {', '.join(BENCHES)})")
    return BENCHES[name]()


STUDY_CALIBRATION = {"lite0": 64, "fmnist": 100}  # images in the calibration folder (seed 0) a study uses


def study_inputs(name: str) -> tuple[Path, Path, dict]:
    """(model, calibration folder, accelerate preprocessing) of a benchmark for a one-model study: Lite0 with 64
    crops, or the Fashion-MNIST ResNet-20 with 100 training images, seed 0."""
    bench = get_bench(name)
    return bench.model_path(), bench.calib_folder(STUDY_CALIBRATION[name], 0), bench.accelerate_preprocess


# --------------------------------------------------------------------------- choosing blocks

def stages(blocks: list[Block]) -> list[list[Block]]:
    """Droppable blocks grouped by the shape of their skip tensor (one group per stage), in graph order."""
    groups: OrderedDict[tuple, list[Block]] = OrderedDict()
    for block in blocks:
        if block.droppable:
            groups.setdefault(tuple(block.shape or ()), []).append(block)
    return list(groups.values())


def residual_ratios(model: onnx.ModelProto, blocks: list[Block], samples: int = 8, seed: int = 0
                    ) -> dict[str, float]:
    """Data-free proxy per droppable block: mean over noise inputs of ||y - x|| / ||x|| at the block's join."""
    droppable = [b for b in blocks if b.droppable]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    wanted = {name for b in droppable for name in (b.skip, b.output)} - {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in sorted(wanted))
    session = make_session(probe)
    names = [o.name for o in session.get_outputs()]
    ratios: dict[str, list[float]] = {b.id: [] for b in droppable}
    for i in range(samples):
        values = dict(zip(names, session.run(None, random_inputs(model, batch=1, seed=seed + i))))
        for b in droppable:
            x, y = values[b.skip], values[b.output]
            ratios[b.id].append(float(np.linalg.norm(y - x) / max(np.linalg.norm(x), 1e-12)))
    return {key: float(np.mean(vals)) for key, vals in ratios.items()}


def baseline_choices(model: onnx.ModelProto, blocks: list[Block], ks: list[int], seeds: list[int]
                     ) -> list[dict]:
    """{method, k, seed, dropped ids} for every training-free baseline row."""
    droppable = [b.id for b in blocks if b.droppable]
    if not droppable:
        raise GraphoptError("the model has no droppable residual blocks")
    ks = [k for k in ks if 0 < k <= len(droppable)]
    choices = [{"method": "random", "seed": s, "dropped": sorted(random.Random(s).sample(droppable, k),
                                                                 key=droppable.index)}
               for k in ks for s in seeds]
    choices.append({"method": "last-per-stage", "seed": None, "dropped": [group[-1].id for group in stages(blocks)]})
    ratios = residual_ratios(model, blocks)
    ranked = sorted(droppable, key=ratios.get)
    choices += [{"method": "proxy", "seed": None, "dropped": sorted(ranked[:k], key=droppable.index),
                 "extra": {"proxy": {i: round(ratios[i], 4) for i in ranked[:k]}}} for k in ks]
    return [{**choice, "k": len(choice["dropped"])} for choice in choices]


# --------------------------------------------------------------------------- measuring rows

def measure_rows(bench: Bench, original: onnx.ModelProto, variants: list[tuple[dict, onnx.ModelProto]],
                 threads: int | None = 1, log: Callable[[str], None] = print) -> list[Row]:
    """Time every variant against the original, then score each.

    `variants` pairs each model with the Row fields that describe it (method, dropped, seed, ...). Row 0 is the
    original; the last row times the original against itself ("original-repeat"), so the table shows how far a
    ratio strays from 1 by noise alone.
    """
    backend = get_backend("onnxruntime", bench.timing, threads=threads)
    log(f"[{bench.name}] timing {len(variants) + 1} models against the original (batch {bench.timing.batch}, "
        f"{threads or 'default'} thread(s), {bench.timing.repeats} runs each after {bench.timing.warmup} warm-up)")
    models = [({"method": "original", "dropped": []}, original), *variants,
              ({"method": "original-repeat", "dropped": []}, original)]
    rows: list[Row] = []
    for fields, model in models:
        start = time.perf_counter()
        timing = paired_timing(backend, original, model) if rows else _self_timing(backend, original)
        quality = rows[0].quality if model is original and rows else bench.quality(model)
        rows.append(Row(bench=bench.name, quality=quality, **timing, **fields))
        log(f"[{bench.name}] {fields['method']:<16} {','.join(fields['dropped']) or '-':<40} "
            f"{bench.metric} {quality['top1']:.4f}  latency x{timing['latency_ratio']:.3f}  "
            f"({time.perf_counter() - start:.0f} s)")
    return rows


def paired_timing(backend: LatencyBackend, original: onnx.ModelProto, model: onnx.ModelProto) -> dict:
    """Latency of `model` relative to the original, the two timed in one interleaved run (graphopt's backend
    alternates which goes first, so neither carries the first-of-a-round slowdown); p10/p90 over the original's
    median."""
    comparison = backend.compare(original, model)
    base, other = comparison.base, comparison.other
    return {"latency": other.to_dict(), "latency_ratio": comparison.ratio,
            "ratio_p10": other.p10_ms / base.median_ms, "ratio_p90": other.p90_ms / base.median_ms}


def _self_timing(backend: LatencyBackend, original: onnx.ModelProto) -> dict:
    stats = backend.measure(original)
    return {"latency": stats.to_dict(), "latency_ratio": 1.0, "ratio_p10": stats.p10_ms / stats.median_ms,
            "ratio_p90": stats.p90_ms / stats.median_ms}


def baseline_variants(original: onnx.ModelProto, ks: list[int], seeds: list[int]
                      ) -> list[tuple[dict, onnx.ModelProto]]:
    """Every training-free baseline of `original`: (Row fields, model) pairs ready for measure_rows."""
    blocks = find_blocks(original)
    return [({key: choice[key] for key in ("method", "k", "seed", "dropped", "extra") if key in choice},
             drop_blocks(original, choice["dropped"], blocks))
            for choice in baseline_choices(original, blocks, ks, seeds)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.baselines", description=__doc__.splitlines()[0])
    parser.add_argument("bench", choices=sorted(BENCHES))
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 4], help="numbers of blocks to drop")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the random baseline")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (1: steadiest on a shared "
                        "2-core machine)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    bench = get_bench(args.bench)
    original = load_model(bench.model_path())
    rows = measure_rows(bench, original, baseline_variants(original, args.k, args.seeds), args.threads)
    if args.out:
        args.out.write_text(json.dumps([r.to_dict() for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
