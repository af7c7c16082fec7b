"""The `graphopt` command: subcommands share the model loader, latency options and reporting."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from graphopt.version import __version__
from graphopt.bounds import check_threads
from graphopt.errors import GraphoptError, TargetUnreachable
from graphopt.methods.registry import default_names, methods
from graphopt.runtime.base import TimingSettings
from graphopt.settings import IMPORTANCE, LR_CANDIDATES, SCORING_SHARE, AccelerateSettings, with_goal

if TYPE_CHECKING:
    import onnx


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="ONNX model file")


Expert = Callable[[str], str]  # an expert option's help: the text under --help-all, suppressed under --help


def _expert_help(everything: bool) -> Expert:
    return (lambda text: text) if everything else (lambda text: argparse.SUPPRESS)


def _add_latency_options(parser: argparse.ArgumentParser, expert: Expert) -> None:
    group = parser.add_argument_group("latency measurement")
    group.add_argument("--runtime", default="onnxruntime",
                       help="onnxruntime (CPU, default), onnxruntime-cuda, onnxruntime-tensorrt or tensorrt")
    group.add_argument("--precision", choices=["fp32", "fp16", "int8"],
                       help="serving precision: int8 on onnxruntime (CPU) quantizes with onnxruntime's own tooling "
                            "(QDQ, per-channel) from the calibration images; fp16/int8 on tensorrt are built into "
                            "the engine")
    group.add_argument("--batch", type=int, default=1, help="deployment batch size (fills a dynamic batch)")
    group.add_argument("--threads", type=int, default=None,
                       help="threads for the runtime (and for training in accelerate); 0 or unset: the runtime's "
                            "default")
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
    _add_input_shape(group)


def _add_input_shape(parser) -> None:
    parser.add_argument("--input-shape", action="append", metavar="NAME:D0xD1x...",
                        help="shape of an input with dynamic dimensions other than the batch (repeatable)")


def _input_shapes(args: argparse.Namespace, models: list[onnx.ModelProto]) -> dict[str, tuple[int, ...]] | None:
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
                              min_seconds=args.min_seconds, input_shapes=_input_shapes(args, models),
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


def cmd_blocks(args: argparse.Namespace) -> int:
    from graphopt.blocks import find_blocks
    from graphopt.model_io import load_model
    from graphopt.output import emit_json, table
    from graphopt.shapes import infer_shapes
    model = load_model(args.model)
    blocks = find_blocks(model, infer_shapes(model, input_shapes=_input_shapes(args, [model])))
    if args.json:
        emit_json({"model": str(args.model), "blocks": [b.to_dict() for b in blocks]})
        if not blocks:
            print("no residual blocks found in this model", file=sys.stderr)
        return 0
    if not blocks:
        print("No residual blocks found in this model: there is nothing graphopt can drop.")
        return 0
    rows = [[b.id, b.droppable, b.shortcut, len(b.nodes), b.params, round(100 * b.macs_share, 2),
             "x".join(map(str, b.shape or [])) or "?"] for b in blocks]
    print(table(["block", "droppable", "shortcut", "nodes", "params", "MACs %", "shape"], rows))
    print(f"\n{len(blocks)} residual blocks, {sum(b.droppable for b in blocks)} droppable")
    return 0


def cmd_channels(args: argparse.Namespace) -> int:
    from graphopt.channels import find_channel_groups
    from graphopt.model_io import load_model
    from graphopt.output import emit_json, table
    from graphopt.shapes import infer_shapes
    model = load_model(args.model)
    groups = find_channel_groups(model, infer_shapes(model, input_shapes=_input_shapes(args, [model]))).groups
    if args.json:
        emit_json({"model": str(args.model), "channel_groups": [g.to_dict() for g in groups]})
        return 0
    if not groups:
        print("No channel groups found in this model: no convolution or matrix product makes its channels.")
        return 0
    rows = [[g.id, g.size, g.prunable, len(g.producers), g.reason or ""] for g in groups]
    print(table(["group", "channels", "prunable", "producers", "why it stays whole"], rows))
    print(f"\n{len(groups)} channel groups, {sum(g.prunable for g in groups)} prunable")
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    from graphopt.blocks import find_blocks
    from graphopt.model_io import load_model, save_model
    from graphopt.passes import drop_blocks
    from graphopt.paths import check_outputs
    from graphopt.shapes import infer_shapes
    ids = [i.strip() for i in args.blocks.split(",") if i.strip()]
    check_outputs({"-o": args.output}, args.model)
    model = load_model(args.model)
    blocks = find_blocks(model, infer_shapes(model, input_shapes=_input_shapes(args, [model])))
    save_model(drop_blocks(model, ids, blocks), args.output)
    print(f"dropped {len(ids)} block(s): {', '.join(ids)} -> {args.output}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from graphopt.model_io import load_model
    from graphopt.output import emit_json, table
    models = [load_model(args.model)] + ([load_model(args.model2)] if args.model2 else [])
    calibration = None
    if args.calib:
        from graphopt.calibration.data.dataset import load_calibration
        calibration = load_calibration(args.calib, models[0])
    backend = backend_from_args(args, models, calibration)
    stats = backend.measure_many(models)
    names = [str(args.model)] + ([str(args.model2)] if args.model2 else [])
    payload = {"runtime": backend.describe(), "models": [{"model": n, **s.to_dict()} for n, s in zip(names, stats)]}
    if len(stats) == 2:
        payload["ratio"] = stats[1].median_ms / stats[0].median_ms
    if args.json:
        emit_json(payload)
        return 0
    rows = [[n, s.median_ms, s.p10_ms, s.p90_ms, s.runs] for n, s in zip(names, stats)]
    print(table(["model", "median ms", "p10 ms", "p90 ms", "runs"], rows))
    print(f"runtime {backend.name}, batch {args.batch}")
    if "ratio" in payload:
        print(f"ratio (second / first, interleaved runs): {payload['ratio']:.3f}")
    return 0


def cmd_accelerate(args: argparse.Namespace) -> int:
    from graphopt.paths import check_outputs
    from graphopt.pipeline import accelerate
    from graphopt.runtime.inputs import parse_input_shapes
    preprocess = _preprocess_options(args)
    settings = AccelerateSettings(
        target_latency=args.target_latency, target_ms=args.target_ms, drop=args.drop,
        max_accuracy_drop=args.max_accuracy_drop, keep_best=args.keep_best,
        eval_images=_text(args.eval), eval_labels=_text(args.eval_labels), eval_classes=_text(args.eval_classes),
        blocks=[i.strip() for i in args.blocks.split(",") if i.strip()] if args.blocks else None, runtime=args.runtime,
        precision=args.precision, batch=args.batch, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
        min_seconds=args.min_seconds, noise_threshold=args.noise_threshold,
        max_timing_seconds=args.max_timing_seconds, input_shapes=parse_input_shapes(args.input_shape) or None,
        feature_tensor=args.feature_tensor, holdout=args.holdout, seed=args.seed,
        time_budget=args.time_budget, match_logits=args.match_logits, int8_recovery=args.int8_recovery,
        score_iterations=args.score_iterations, recover_iterations=args.recover_iterations, lr=args.lr,
        batch_size=args.batch_size, importance=args.importance, scoring=args.scoring,
        methods=[m.strip() for m in args.methods.split(",")] if args.methods else None,
        preprocess=preprocess, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    settings = with_goal(settings)
    args.output = args.output or _default_output(args.model, settings.precision)
    check_outputs({"-o": args.output, "--report": args.report, "--engine": args.engine, "--plot": args.plot},
                  args.model, args.calib)
    try:
        result = accelerate(args.model, args.calib, args.output, settings=settings, quiet=args.quiet,
                            engine=args.engine, plot=args.plot)
    except TargetUnreachable as exc:
        if args.report:  # a build pipeline reads why the step failed, with the figures graphopt measured
            _write_failure_report(args.report, args.model, settings, exc)
        if not args.quiet and getattr(exc, "frontier", None):
            _print_frontier(exc.frontier, settings.max_accuracy_drop)
        raise
    report = result.report
    if args.report:
        from graphopt.output import write_json
        write_json(report, args.report)
    if not args.quiet:
        _print_summary(report, args.output)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from graphopt.evaluate import evaluate, format_table
    from graphopt.output import emit_json
    check_threads(args.threads)
    result = evaluate(args.models, args.images, labels=args.labels, classes=args.classes,
                      preprocess=_preprocess_options(args), batch=args.batch, threads=args.threads or None,
                      progress=not args.quiet)
    if args.json:
        emit_json(result.to_dict())
    else:
        print(format_table(result))
    return 0


def _default_output(model: Path, precision: str) -> Path:
    """Beside the input, named for what it is: lite2.onnx -> lite2.graphopt-int8.onnx (or lite2.graphopt.onnx)."""
    return model.with_name(f"{model.stem}.graphopt{'-int8' if precision == 'int8' else ''}.onnx")


def _preprocess_options(args: argparse.Namespace) -> dict:
    """The preprocessing options given on the command line, as Preprocess.for_model's keyword arguments."""
    return {k: v for k, v in {"size": _size(args.size), "norm": args.norm, "mean": args.mean, "std": args.std,
                              "bgr": args.bgr or None, "resize": args.resize}.items() if v is not None}


def _write_failure_report(path: Path, model: Path, settings: AccelerateSettings, exc: TargetUnreachable) -> None:
    from dataclasses import asdict

    from graphopt.machine import machine, versions
    from graphopt.output import write_json
    write_json({"graphopt": __version__, "status": "target not met", "exit_code": exc.exit_code, "error": str(exc),
                "model": str(model), "output": getattr(exc, "kept", None), "frontier": getattr(exc, "frontier", None),
                "seconds": getattr(exc, "seconds", None), "budget": getattr(exc, "budget", None),
                "settings": asdict(settings), "versions": versions(), "machine": machine()}, path)


def _print_summary(report: dict, output: Path) -> None:
    """Every measured attempt (predicted beside measured), the original beside the result, and the figures."""
    from graphopt.output import table
    attempts = [[", ".join(a["actions"]) or "(none)", a["stage"], a["predicted_ratio"], a["measured_ratio"],
                 a["noise"], "noisy" if a["noisy"] else ""] for a in report["selection"]["attempts"]]
    print(table(["cuts", "stage", "predicted ratio", "measured ratio", "noise ±", ""], attempts))
    if report["selection"].get("landing"):
        print(f"below the target: {report['selection']['landing']}")
    print(table(["model", "latency ratio", "top-1 agreement"],
                [[row["model"], f"{row['ratio']:.3f}", _percent(row["agreement_top1"])] for row in report["rows"]]))
    latency, recovery, int8 = report["latency"], report["feature_error"], report["int8_recovery"]
    held = report["calibration"]
    rows = [["blocks dropped", ", ".join(report["dropped"]) or "none"],
            ["channels kept (group: channels)", ", ".join(f"{g}: {k}" for g, k in report["pruned"].items()) or
             "all"],
            ["bases kept (node: bases)", ", ".join(f"{n}: {k}" for n, k in report["split"].items()) or "all"],
            ["latency before (ms)", f"{latency['base']['median_ms']:.3f}"],
            ["latency after (ms)", f"{latency['other']['median_ms']:.3f}"],
            ["latency ratio (measured side by side)",
             f"{latency['ratio']:.3f} ± {latency['noise']:.3f}" + (" (noisy)" if latency["noisy"] else "")],
            *([["feature error before recovery", f"{recovery['before_recovery']:.4f}"],
               ["feature error after recovery", f"{recovery['after_recovery']:.4f}"]] if recovery else []),
            *([["INT8 error, rounded to nearest", f"{int8['error_before']:.4f}"],
               ["INT8 error after INT8 recovery", f"{int8['error_after']:.4f}"]] if int8 else []),
            [f"top-1 agreement, {held['held_out_files']} held-out files", _percent(report["agreement_top1"])
             + ("" if held["agreement_reliable"] else " (unreliable: fewer than 8 held-out files)")],
            *_quality_rows(report["quality"]),
            *_budget_rows(report["budget"]),
            *[[f"time: {stage} (s)", f"{seconds:.1f}"] for stage, seconds in report["seconds"].items()],
            ["output", str(output)]]
    print(table(["", ""], rows))
    _print_frontier(report["frontier"], report["quality"]["floor_points"] if report["quality"] else None)


def _print_frontier(frontier: list[dict], floor: float | None) -> None:
    """Each model measured, its latency ratio and estimated top-1 loss, whether it is inside the floor, and which
    one was handed back."""
    from graphopt.output import table

    def loss(row: dict) -> str:
        estimate = row["estimate"]
        return "not recovered" if estimate is None else f"{estimate['points']:.2f} ({estimate['upper']:.2f})"

    def inside(row: dict) -> str:
        if floor is None or row["estimate"] is None:
            return ""
        return "yes" if row["estimate"]["upper"] <= floor else "no"

    rows = [[row["model"], len(row["cuts"]), "—" if row["ratio"] is None else f"{row['ratio']:.3f}", loss(row),
             inside(row), "handed back" if row["chosen"] else ""] for row in frontier]
    print(table(["model", "cuts", "latency ratio", "est. top-1 loss, points (95% upper)",
                 "inside floor" if floor is None else f"inside floor {floor:g}", ""], rows))


def _budget_rows(budget: dict) -> list[list[str]]:
    """How the run shared its time budget, and a note when recovery got too few steps."""
    if not budget:
        return []
    spent = budget["spent_s"]
    steps = "" if budget["recovery_steps"] is None else f" ({budget['recovery_steps']} steps)"
    rows = [["time budget (s)", f"{budget['budget_s']:.0f}, {budget['recovery_kept_s']:.0f} of it kept for recovery"],
            ["time spent (s)", f"{budget['total_s']:.0f}: prepare {spent['prepare']:.0f}, search {spent['search']:.0f}, "
                               f"recovery {spent['recovery']:.0f}{steps}, checks {spent['checks']:.0f}"]]
    return rows + ([["note", budget["note"]]] if budget.get("note") else [])


def _quality_rows(quality: dict | None) -> list[list[str]]:
    """The estimated top-1 loss beside the floor it was judged against."""
    if not quality or quality["estimate"] is None:
        return [["estimated top-1 loss", quality["note"] if quality else "n/a"]]
    estimate = quality["estimate"]
    floor = "no floor" if quality["floor_points"] is None else f"floor {quality['floor_points']:g}"
    what = "measured" if estimate.get("labelled") else "estimated"
    return [[f"{what} top-1 loss, points (95% upper bound)",
             f"{estimate['points']:.2f} ({estimate['upper']:.2f}; {floor})"],
            ["judged on", f"{estimate['images']} {quality['judged_on']}"]]


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _points(text: str) -> float | None:
    """--max-accuracy-drop: a number of points, or `none` for no floor."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of points or 'none', got '{text}'") from None


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise GraphoptError(f"bad --size '{text}': expected N or HxW") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise GraphoptError(f"bad --size '{text}': expected N or HxW")
    return (parts[0], parts[-1])


def _add_preprocessing_options(parser: argparse.ArgumentParser, expert: Expert) -> None:
    prep = parser.add_argument_group("preprocessing")
    prep.add_argument("--size", help="input size N or HxW (default: from the model's input shape)")
    prep.add_argument("--norm", choices=["imagenet", "tf", "unit"], help="normalisation preset (default imagenet)")
    prep.add_argument("--mean", type=float, nargs="+", help=expert("explicit per-channel mean"))
    prep.add_argument("--std", type=float, nargs="+", help=expert("explicit per-channel std"))
    prep.add_argument("--bgr", action="store_true", help=expert("the model takes BGR channel order"))
    prep.add_argument("--resize", choices=["crop", "direct"], help="resize short side + centre crop, or direct")


def _add_training_options(parser: argparse.ArgumentParser, expert: Expert) -> None:
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
    train.add_argument("--lr", type=float, default=None,
                       help=expert("recovery learning rate (default: short probes pick from "
                                   f"{', '.join(f'{lr:g}' for lr in LR_CANDIDATES)} by held-out feature error)"))
    train.add_argument("--cache-dir", help=expert("recoverability cache (default ~/.cache/graphopt or "
                                                  "$GRAPHOPT_CACHE_DIR)"))
    train.add_argument("--no-cache", action="store_true", help=expert("recompute recoverability scores"))


def build_parser(everything: bool = False) -> argparse.ArgumentParser:
    """The command line; expert options (timing loop, training internals, scoring choices) are listed only with
    `everything` (`--help-all`), as Polygraphy keeps its everyday options in front."""
    expert = _expert_help(everything)
    parser = argparse.ArgumentParser(prog="graphopt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"graphopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("accelerate", help="make the model faster: drop the blocks and prune the channels easiest "
                                          "to lose, recover on calibration images, optionally quantize to INT8")
    _add_model(p)
    p.add_argument("--calib", type=Path, required=True, help="folder of calibration images (or .npy tensors)")
    p.add_argument("-o", "--output", type=Path,
                   help="accelerated ONNX model to write (default: beside the input, MODEL.graphopt[-int8].onnx)")
    p.add_argument("--max-accuracy-drop", type=_points, default=AccelerateSettings.max_accuracy_drop,
                   metavar="POINTS|none",
                   help="points of top-1 the result may lose (default %(default)s), judged by the upper bound of an "
                        "estimate on held-out images; a result over it is not handed back (exit 3); none: latency "
                        "only")
    p.add_argument("--eval", type=Path, metavar="DIR",
                   help="images to judge the floor on instead of the held-out calibration images (never trained "
                        "on): labelled (class sub-folders or --eval-labels) for a measured top-1 loss, else an "
                        "estimate on more images")
    p.add_argument("--eval-labels", type=Path, metavar="FILE", help="`NAME LABEL` lines for the --eval images")
    p.add_argument("--eval-classes", type=Path, metavar="FILE",
                   help="class names (wnids) in the model's index order, for --eval labels given by name")
    p.add_argument("--keep-best", action="store_true",
                   help="when the result is over the floor, still exit 3 but write the fastest model inside it "
                        "(INT8 alone) to -o")
    goal = p.add_mutually_exclusive_group()  # none: the fastest model inside the accuracy floor (INT8 on the CPU)
    goal.add_argument("--target-latency", type=float, help="latency as a ratio of the original's as given (FP32 even with "
                                                              "--precision int8), e.g. 0.8")
    goal.add_argument("--target-ms", type=float, help="latency in milliseconds")
    goal.add_argument("--drop", type=int, help="drop this many blocks")
    goal.add_argument("--blocks", help="drop exactly these comma-separated block ids, then recover")
    p.add_argument("--report", type=Path, help="write a JSON report here")
    p.add_argument("--engine", type=Path, help="also write the TensorRT engine of the result (--runtime tensorrt)")
    p.add_argument("--plot", type=Path, help="draw what was measured here (PNG): latency ratio against estimated "
                                             "top-1 loss, with the floor, the target and the chosen model marked")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    p.add_argument("--help-all", action="help", help="show every option, the expert ones too")
    p.add_argument("--feature-tensor",
                   help=expert("tensor to mimic (default: last feature map before global pooling)"))
    p.add_argument("--methods", help="kinds of cut to search, comma-separated: "
                   + ", ".join(f"{m.name} ({m.summary})" for m in methods()) + f"; default: {','.join(default_names())}")
    p.add_argument("--importance", default=AccelerateSettings.importance, choices=list(IMPORTANCE),
                   help=expert("which channels a group gives up first: refit (default: those the least-squares refit "
                               "of their consumers restores best, chosen greedily), first-order Taylor on the "
                               "calibration images (l1 for models without class scores), smallest L1 weight norm, or "
                               "Dagger's learned weight-based gates"))
    p.add_argument("--scoring", default="auto", choices=["auto", "kl", "recoverability"],
                   help=expert("what a cut costs: kl (the class scores' divergence from the original's on held-out "
                               "images, cuts applied without training), recoverability (held-out feature error after "
                               "adaptor training, PRACTISE), or auto (default: kl for models with class scores)"))
    _add_preprocessing_options(p, expert)
    _add_training_options(p, expert)
    _add_latency_options(p, expert)
    p.set_defaults(func=cmd_accelerate)

    p = sub.add_parser("eval", help="top-1 and top-5 accuracy on labelled images, and agreement with the first model, "
                                    "each with a 95%% interval: how to check what accelerate gave you")
    p.add_argument("models", type=Path, nargs="+", help="ONNX models; agreement is measured against the first")
    p.add_argument("--images", type=Path, required=True,
                   help="folder of images: class sub-folders (wnid or index names) give the labels, else --labels")
    p.add_argument("--labels", type=Path, help="file of 'NAME LABEL' lines (names relative to --images); without "
                                               "labels only agreement is reported")
    p.add_argument("--classes", type=Path, help="class names (wnids) one per line in the models' index order "
                                                "(default: sorted folder names)")
    p.add_argument("--batch", type=int, default=32, help="images per inference batch")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: the runtime's)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_preprocessing_options(p, expert)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("blocks", help="list the residual blocks of a model")
    _add_model(p)
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    _add_input_shape(p)
    p.set_defaults(func=cmd_blocks)

    p = sub.add_parser("channels", help="list the channel groups of a model (channels pruned together)")
    _add_model(p)
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    _add_input_shape(p)
    p.set_defaults(func=cmd_channels)

    p = sub.add_parser("drop", help="write the model without the given blocks")
    _add_model(p)
    p.add_argument("--blocks", required=True, help="comma-separated block ids (see `graphopt blocks`)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output ONNX file")
    _add_input_shape(p)
    p.set_defaults(func=cmd_drop)

    p = sub.add_parser("bench", help="measure latency; with two models, their ratio measured side by side")
    _add_model(p)
    p.add_argument("model2", type=Path, nargs="?", help="second model, timed interleaved with the first")
    p.add_argument("--calib", type=Path, help="calibration images for --precision int8 (each model is timed in its "
                                                 "INT8 form on onnxruntime; TensorRT calibrates its engine)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.add_argument("--help-all", action="help", help="show every option, the expert ones too")
    _add_latency_options(p, expert)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    everything = "--help-all" in argv
    args = build_parser(everything).parse_args(["--help" if a == "--help-all" else a for a in argv])
    with _terminate_as_interrupt():
        try:
            code = args.func(args)
            sys.stdout.flush()  # inside the try: a reader that went away is seen here, not at interpreter exit
            return code
        except BrokenPipeError:
            # `graphopt channels m.onnx --json | head`: the reader stopped reading; end quietly, as a tool killed by
            # SIGPIPE would, with stdout pointed at /dev/null so the final flush cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except GraphoptError as exc:
            print(f"graphopt: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except MemoryError:
            print("graphopt: error: out of memory (a smaller --batch, --batch-size or input shape needs less)",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM turned into an Interrupted
            signum = getattr(exc, "signum", signal.SIGINT)
            print("graphopt: interrupted" if signum == signal.SIGINT else
                  f"graphopt: stopped by {signal.Signals(signum).name}", file=sys.stderr)
            return 128 + signum


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread so every `finally` and temporary folder cleans up on the way
    out; the exit status is the shell's 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__()
        self.signum = signum


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (what `kill`, timeouts and CI runners send) handled like Ctrl-C, the previous handlers restored after."""
    def raise_interrupted(signum, frame):
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():  # handlers can only be set from the main thread
        yield
        return
    previous = {signum: signal.signal(signum, raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
