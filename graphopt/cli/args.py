"""Argument groups the subcommands share (as Polygraphy builds its tools from reusable argument groups), and what
they turn into: the model argument, latency measurement and the backend it asks for, input shapes, preprocessing,
training; expert options are listed only under --help-all."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from graphopt.bounds import check_threads
from graphopt.errors import GraphoptError
from graphopt.runtime.base import TimingSettings
from graphopt.settings import LR_CANDIDATES, SCORING_SHARE, AccelerateSettings

if TYPE_CHECKING:
    import onnx


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="ONNX model file")


Expert = Callable[[str], str]  # an expert option's help: the text under --help-all, suppressed under --help


def expert_help(everything: bool) -> Expert:
    return (lambda text: text) if everything else (lambda text: argparse.SUPPRESS)


def add_latency_options(parser: argparse.ArgumentParser, expert: Expert) -> None:
    group = parser.add_argument_group("latency measurement")
    group.add_argument("--runtime", default="onnxruntime",
                       help="onnxruntime (CPU, default), onnxruntime-cuda, onnxruntime-tensorrt or tensorrt")
    group.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                       help="serving precision: int8 on onnxruntime (CPU) quantizes with onnxruntime's own tooling "
                            "(QDQ, per-channel) from the calibration images; fp16/int8 on tensorrt are built into "
                            "the engine")
    group.add_argument("--batch", type=int, default=1, help="deployment batch size (fills a dynamic batch)")
    group.add_argument("--threads", type=int, default=None,
                       help="threads the runtime is timed with: the deployment's setting; 0 or unset: the "
                            "runtime's default")
    group.add_argument("--warmup", type=int, default=TimingSettings.warmup,
                       help=expert("untimed runs before timing"))
    group.add_argument("--repeats", type=int, default=TimingSettings.repeats,
                       help=expert("timed runs per model (at least)"))
    group.add_argument("--min-seconds", type=float, default=TimingSettings.min_seconds,
                       help=expert("keep timing until this much timed run time has passed (fast models get more "
                                   "runs)"))
    group.add_argument("--noise-threshold", type=float, default=TimingSettings.noise_threshold,
                       help=expert("relative noise of a latency ratio above which timing goes on (default "
                                   "%(default)s)"))
    group.add_argument("--max-timing-seconds", type=float, default=TimingSettings.max_seconds,
                       help=expert("cap on the wall time of one measurement while its noise stays above the "
                                   "threshold; a ratio still noisy then is reported as noisy (default %(default)s)"))
    add_input_shape(group)


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="run cut scoring as tasks of this Ray cluster (auto, ray://HOST:PORT, or local for one "
                             "on this machine), and time latency on its nodes that declare the graphopt_timing "
                             "resource, one run per node at once (pip install 'graphopt[ray]')")


def add_input_shape(parser) -> None:
    parser.add_argument("--input-shape", action="append", metavar="NAME:D0xD1x...",
                        help="shape of an input with dynamic dimensions other than the batch (repeatable)")


def input_shapes(args: argparse.Namespace, models: list[onnx.ModelProto]) -> dict[str, tuple[int, ...]] | None:
    """--input-shape values, each checked against every model's inputs so a typo is an error, not ignored."""
    from graphopt.runtime.inputs import checked_input_shapes, parse_input_shapes
    shapes = parse_input_shapes(args.input_shape)
    for model in models:
        checked_input_shapes(model, shapes)
    return shapes or None


def backend_from_args(args: argparse.Namespace, models: list[onnx.ModelProto], calibration=None):
    """The latency backend the options ask for; `models` are the ones it will time (to check --input-shape)."""
    from graphopt.precision import Int8Timing, quantizes_graph, runtime_calibration
    from graphopt.runtime import TimingSettings, get_backend
    check_threads(args.threads)
    settings = TimingSettings(batch=args.batch, warmup=args.warmup, repeats=args.repeats,
                              min_seconds=args.min_seconds, input_shapes=input_shapes(args, models),
                              noise_threshold=args.noise_threshold, max_seconds=args.max_timing_seconds)
    settings.check()
    precision = args.precision or "fp32"
    backend = get_backend(args.runtime, settings, threads=args.threads, precision=precision,
                          calibration=runtime_calibration(args.runtime, precision, calibration))
    if not quantizes_graph(args.runtime, precision):
        return backend
    if calibration is None:
        raise GraphoptError("--precision int8 on onnxruntime quantizes each model first: give --calib FOLDER")
    return Int8Timing(backend, calibration)


def add_preprocessing_options(parser: argparse.ArgumentParser, expert: Expert) -> None:
    prep = parser.add_argument_group("preprocessing")
    prep.add_argument("--size", help="input size N or HxW (default: from the model's input shape)")
    prep.add_argument("--norm", choices=["imagenet", "tf", "unit"], help="normalisation preset (default imagenet)")
    prep.add_argument("--mean", type=float, nargs="+", help=expert("explicit per-channel mean"))
    prep.add_argument("--std", type=float, nargs="+", help=expert("explicit per-channel std"))
    prep.add_argument("--bgr", action="store_true", help=expert("the model takes BGR channel order"))
    prep.add_argument("--resize", choices=["crop", "direct"], help="resize short side + centre crop, or direct")


def preprocess_options(args: argparse.Namespace) -> dict:
    """The preprocessing options given on the command line, as Preprocess.for_model's keyword arguments."""
    return {k: v for k, v in {"size": size(args.size), "norm": args.norm, "mean": args.mean, "std": args.std,
                              "bgr": args.bgr or None, "resize": args.resize}.items() if v is not None}


def size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise GraphoptError(f"bad --size '{text}': expected N or HxW") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise GraphoptError(f"bad --size '{text}': expected N or HxW")
    return (parts[0], parts[-1])


def add_training_options(parser: argparse.ArgumentParser, expert: Expert) -> None:
    train = parser.add_argument_group("training")
    defaults = AccelerateSettings()
    train.add_argument("--seed", type=int, default=defaults.seed, help="seed of every random choice (default 0)")
    train.add_argument("--holdout", type=float, default=defaults.holdout,
                       help=expert("fraction of images held out for scoring and the floor"))
    train.add_argument("--time-budget", type=float, default=defaults.time_budget, metavar="MINUTES",
                       help="wall time for the whole run (default %(default)s): half is kept for recovery, "
                            "the search stops early rather than eat into it")
    train.add_argument("--score-iterations", type=int, default=defaults.score_iterations,
                       help=expert("adaptor steps per block (at most), for --scoring recoverability, which gets "
                                   f"{round(100 * SCORING_SHARE)}%% of the time left when it starts"))
    train.add_argument("--recover-iterations", type=int, default=defaults.recover_iterations,
                       help=expert("recovery steps (at most)"))
    train.add_argument("--match-logits", action="store_true",
                       help=expert("recovery also matches the original's class scores (relative squared error), not "
                                   "only the features before pooling"))
    train.add_argument("--no-int8-recovery", dest="int8_recovery", action="store_false",
                       help=expert("with --precision int8: quantize by rounding to nearest only, without first "
                                   "fine-tuning the weights through INT8 rounding on the calibration images"))
    train.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help=expert("images per training step"))
    train.add_argument("--work-threads", type=int, default=None, metavar="N",
                       help="threads for training, scoring and the runtime's passes that are not timing; 0 or "
                            "unset: every core (--threads sets only what is timed)")
    train.add_argument("--recovery-processes", type=int, default=defaults.recovery_processes, metavar="N",
                       help=expert("train recovery in N processes on this machine with torch.distributed (gloo on "
                                   "the CPU, one GPU each with NCCL), each on its own augmented batches: a step sees "
                                   "N x --batch-size images"))
    train.add_argument("--lr", type=float, default=None,
                       help=expert("recovery learning rate (default: short probes pick from "
                                   f"{', '.join(f'{lr:g}' for lr in LR_CANDIDATES)} by held-out feature error)"))
    train.add_argument("--cache-dir", help=expert("recoverability cache (default ~/.cache/graphopt or "
                                                  "$GRAPHOPT_CACHE_DIR)"))
    train.add_argument("--no-cache", action="store_true", help=expert("recompute recoverability scores"))


def points(text: str) -> float | None:
    """--max-accuracy-drop: a number of points, or `none` for no floor."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of points or 'none', got '{text}'") from None


def text(path: Path | None) -> str | None:
    return None if path is None else str(path)
