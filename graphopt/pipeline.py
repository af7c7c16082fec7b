"""accelerate(): find blocks, time them, score recoverability, select under the target, drop, recover, verify."""
from __future__ import annotations

import io
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from graphopt import __version__
from graphopt.blocks import Block, find_blocks
from graphopt.cache import ScoreCache, cache_key, default_dir
from graphopt.errors import GraphoptError, first_line
from graphopt.features import feature_tensors
from graphopt.machine import machine, versions
from graphopt.model_io import load_model, save_model
from graphopt.passes import DropBlocks, drop_blocks, select_blocks
from graphopt.runtime import LatencyBackend, TimingSettings, get_backend
from graphopt.selection import check_reachable, latency_table, select
from graphopt.settings import ADAPTOR_LR, LR_CANDIDATES, AccelerateSettings
from graphopt.shapes import infer_shapes


@dataclass
class AccelerateResult:
    model: onnx.ModelProto
    report: dict

    def save(self, path: str | os.PathLike) -> Path:
        return save_model(self.model, path)


class _Stages:
    """Wall time per stage, for the report."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)


def accelerate(model, calib: str | os.PathLike, output: str | os.PathLike | None = None, *,
               example_input=None, settings: AccelerateSettings | None = None, quiet: bool = False,
               engine: str | os.PathLike | None = None, **overrides) -> AccelerateResult:
    """Make `model` faster with the calibration images in `calib`.

    `model` is an ONNX path, an `onnx.ModelProto` or a `torch.nn.Module` (exported first with `example_input`).
    Settings come from `settings` and/or keyword overrides (e.g. `target_latency=0.8`). The result holds the
    accelerated model and the report; with `output` the model is also written (atomically) after verification.
    """
    settings = settings or AccelerateSettings()
    unknown = [key for key in overrides if not hasattr(settings, key)]
    if unknown:
        raise GraphoptError(f"unknown setting(s): {', '.join(unknown)}")
    settings = replace(settings, **overrides)  # the caller's settings object stays as it was
    _check_settings(settings)
    if engine is not None and settings.runtime != "tensorrt":
        raise GraphoptError("--engine writes a TensorRT engine: it needs --runtime tensorrt")
    if settings.threads:
        import torch
        torch.set_num_threads(settings.threads)
    stages = _Stages()
    with stages("load"):
        original = _as_onnx(model, example_input)
        from graphopt.calibration.dataset import load_calibration
        calibration = load_calibration(calib, original, **settings.preprocess)
        train, held = calibration.split(settings.holdout, settings.seed)
    with stages("blocks"):
        shapes = infer_shapes(original)
        blocks = find_blocks(original, shapes)
        droppable = [b for b in blocks if b.droppable]
        if not droppable:
            raise GraphoptError("the model has no droppable residual blocks: nothing to accelerate")
        features = feature_tensors(original, settings.feature_tensor, shapes)
    timing = TimingSettings(settings.batch, settings.warmup, settings.repeats, settings.min_seconds)
    backend = get_backend(settings.runtime, timing, threads=settings.threads, precision=settings.precision,
                          calibration=calibration)
    with stages("latency table"):
        _say(quiet, f"timing {len(droppable)} droppable blocks on {backend.name} at batch {settings.batch}")
        table = latency_table(backend, original, droppable, quiet)
        target = settings.target_latency if settings.target_ms is None else settings.target_ms / table.base.median_ms
        if target is not None:
            check_reachable(backend, original, droppable, target)
    if settings.blocks:
        ranked, scores, cached = select_blocks(blocks, settings.blocks), {}, False
        DropBlocks(ranked)  # refuses blocks that cannot be dropped, before any training
        count = len(ranked)
    else:
        with stages("recoverability"):
            scores, cached = _recoverability(original, droppable, features, train, held, settings, quiet)
            ranked = sorted(droppable, key=lambda b: scores[b.id]["error"] / max(table.savings_ms[b.id], 1e-3))
        count = settings.drop
    with stages("selection"):
        selection = select(backend, original, droppable, ranked, table, target=target, count=count)
        _say(quiet, f"dropping {', '.join(b.id for b in selection.blocks)}: measured ratio {selection.ratio:.3f}")
    with stages("recovery"):
        from graphopt.calibration.mimic import MimicSettings
        from graphopt.calibration.recovery import recover
        pruned = drop_blocks(original, [b.id for b in selection.blocks], blocks)
        mimic_settings = MimicSettings(settings.recover_iterations, settings.batch_size,
                                       settings.lr or LR_CANDIDATES[0], seed=settings.seed)
        recovered = recover(original, pruned, selection.blocks, features, train, held.tensors(), mimic_settings,
                            settings.threads, quiet, blocks=blocks,
                            lr_candidates=() if settings.lr else LR_CANDIDATES)
    with stages("verify"):
        agreement = _verify(original, recovered, held.tensors(), settings.threads)
    with stages("final latency"):
        final = backend.compare(original, recovered.model)
    if output is not None:
        with stages("write"):
            save_model(recovered.model, output)
    if engine is not None:
        with stages("engine"):
            _build_engine(backend, recovered.model, engine)
    report = {
        "graphopt": __version__,
        "versions": versions(),
        "machine": machine(),
        "settings": asdict(settings),
        "runtime": backend.describe(),
        "calibration": {"folder": str(calib), "images": len(calibration), "train": len(train), "held_out": len(held),
                        "fingerprint": calibration.fingerprint()},
        "features": features,
        "blocks": {"found": len(blocks), "droppable": len(droppable)},
        "latency_table": table.to_dict(),
        "recoverability": scores,
        "recoverability_cached": cached,
        "ranking": [b.id for b in ranked],
        "selection": selection.to_dict(),
        "dropped": [b.id for b in selection.blocks],
        "latency": final.to_dict(),
        "feature_error": {"before_recovery": recovered.result.error_before,
                          "after_recovery": recovered.result.error_after, "steps": recovered.result.steps,
                          "lr": recovered.lr},
        "agreement_top1": agreement,
        "output": str(output) if output is not None else None,
        "engine": str(engine) if engine is not None else None,
        "seconds": stages.seconds,
    }
    return AccelerateResult(recovered.model, report)


def _check_settings(settings: AccelerateSettings) -> None:
    if settings.targets() != 1:
        raise GraphoptError("give exactly one of --target-latency, --target-ms, --drop or --blocks")
    if settings.target_latency is not None and not 0 < settings.target_latency < 1:
        raise GraphoptError(f"--target-latency is a ratio to the original's latency, between 0 and 1 "
                            f"(got {settings.target_latency})")
    if settings.target_ms is not None and settings.target_ms <= 0:
        raise GraphoptError(f"--target-ms must be positive (got {settings.target_ms})")
    if settings.drop is not None and settings.drop < 1:
        raise GraphoptError(f"--drop must be at least 1 (got {settings.drop})")
    for name in ("batch", "repeats", "score_iterations", "recover_iterations", "batch_size"):
        if getattr(settings, name) < 1:
            raise GraphoptError(f"{name.replace('_', '-')} must be at least 1")


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


def _recoverability(original, droppable: list[Block], features, train, held, settings: AccelerateSettings,
                    quiet: bool) -> tuple[dict[str, dict], bool]:
    from graphopt.calibration.mimic import MimicSettings
    from graphopt.calibration.recoverability import score_blocks
    key = cache_key(original.SerializeToString(), train.fingerprint(), held.fingerprint(), __version__,
                    {"features": features, "iterations": settings.score_iterations, "lr": ADAPTOR_LR,
                     "batch_size": settings.batch_size, "seed": settings.seed})
    cache = ScoreCache(None if not settings.use_cache else Path(settings.cache_dir) if settings.cache_dir
                       else default_dir())
    hit = cache.get(key)
    if hit is not None and set(hit) >= {b.id for b in droppable}:
        _say(quiet, "recoverability scores taken from the cache")
        return hit, True
    # adaptors start at identity and have few weights: a larger step, and a short patience since the held-out
    # error of a tiny set settles within a few dozen steps
    mimic = MimicSettings(settings.score_iterations, settings.batch_size, ADAPTOR_LR, eval_every=10, patience=2,
                          seed=settings.seed)
    scores = score_blocks(original, droppable, features, train.tensors(), held.tensors(), mimic, settings.threads,
                          quiet)
    result = {block: score.to_dict() for block, score in scores.items()}
    cache.put(key, result)
    return result, False


def _verify(original: onnx.ModelProto, recovered, images, threads) -> float | None:
    """Refuse to hand back a model that is invalid or differs from the trained PyTorch model; return top-1
    agreement with the original on the held-out images (None when the output is not a class score vector)."""
    import torch
    from graphopt.calibration.teacher import Teacher
    model = recovered.model
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise GraphoptError(f"internal error: the accelerated model fails onnx.checker: {exc}") from None
    outputs = [o.name for o in model.graph.output]
    student = recovered.student
    ours = Teacher(model, outputs, threads)(images)
    reference = Teacher(original, [*outputs, student.cut], threads)(images)
    with torch.no_grad():
        trained = student.outputs(reference[student.cut])
    for name in outputs:
        expected = trained[name].cpu().numpy()
        scale = max(1.0, float(np.abs(expected).max()))
        if not np.allclose(ours[name].numpy(), expected, rtol=1e-3, atol=1e-3 * scale):
            raise GraphoptError(f"internal error: onnxruntime's '{name}' differs from the recovered PyTorch model")
    first = outputs[0]
    if ours[first].dim() == 2 and ours[first].shape[1] > 1:
        return float((ours[first].argmax(1) == reference[first].argmax(1)).float().mean())
    return None


def _build_engine(backend: LatencyBackend, model: onnx.ModelProto, path) -> None:
    if not hasattr(backend, "build_engine"):
        raise GraphoptError("--engine needs --runtime tensorrt")
    backend.build_engine(model, Path(path))


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, flush=True)
