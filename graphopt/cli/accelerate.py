"""`graphopt accelerate`: the settings from the command line, the run, the report and the summary; a run that misses
its goal still writes its failure report (exit 3)."""
from __future__ import annotations

import argparse
from pathlib import Path

from graphopt.cli.args import (Expert, add_cluster_options, add_latency_options, add_model,
                               add_preprocessing_options, add_training_options, points, preprocess_options, text)
from graphopt.cli.summary import print_frontier, print_summary
from graphopt.errors import TargetUnreachable
from graphopt.methods.registry import default_names, methods
from graphopt.settings import IMPORTANCE, AccelerateSettings, with_goal
from graphopt.version import __version__


def cmd_accelerate(args: argparse.Namespace) -> int:
    from graphopt.paths import check_outputs
    from graphopt.pipeline import accelerate
    from graphopt.runtime.inputs import parse_input_shapes
    preprocess = preprocess_options(args)
    settings = AccelerateSettings(
        target_latency=args.target_latency, target_ms=args.target_ms, drop=args.drop,
        max_accuracy_drop=args.max_accuracy_drop, keep_best=args.keep_best,
        eval_images=text(args.eval), eval_labels=text(args.eval_labels), eval_classes=text(args.eval_classes),
        blocks=[i.strip() for i in args.blocks.split(",") if i.strip()] if args.blocks else None, runtime=args.runtime,
        precision=args.precision, batch=args.batch, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
        min_seconds=args.min_seconds, noise_threshold=args.noise_threshold,
        max_timing_seconds=args.max_timing_seconds, input_shapes=parse_input_shapes(args.input_shape) or None,
        feature_tensor=args.feature_tensor, holdout=args.holdout, seed=args.seed,
        time_budget=args.time_budget, match_logits=args.match_logits, int8_recovery=args.int8_recovery,
        score_iterations=args.score_iterations, recover_iterations=args.recover_iterations, lr=args.lr,
        batch_size=args.batch_size, recovery_processes=args.recovery_processes, ray=args.ray,
        work_threads=args.work_threads, importance=args.importance, scoring=args.scoring,
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
            print_frontier(exc.frontier, settings.max_accuracy_drop)
        raise
    report = result.report
    if args.report:
        from graphopt.output import write_json
        write_json(report, args.report)
    if not args.quiet:
        print_summary(report, args.output)
    return 0


def _default_output(model: Path, precision: str) -> Path:
    """Beside the input, named for what it is: lite2.onnx -> lite2.graphopt-int8.onnx (or lite2.graphopt.onnx)."""
    return model.with_name(f"{model.stem}.graphopt{'-int8' if precision == 'int8' else ''}.onnx")


def _write_failure_report(path: Path, model: Path, settings: AccelerateSettings, exc: TargetUnreachable) -> None:
    from dataclasses import asdict

    from graphopt.machine import machine, versions
    from graphopt.output import write_json
    write_json({"graphopt": __version__, "status": "target not met", "exit_code": exc.exit_code, "error": str(exc),
                "model": str(model), "output": getattr(exc, "kept", None), "frontier": getattr(exc, "frontier", None),
                "seconds": getattr(exc, "seconds", None), "budget": getattr(exc, "budget", None),
                "settings": asdict(settings), "versions": versions(), "machine": machine()}, path)


def register(sub, expert: Expert) -> None:
    """The accelerate subcommand and its options; expert ones only under --help-all."""
    p = sub.add_parser("accelerate", help="make the model faster: drop the blocks and prune the channels easiest "
                                          "to lose, recover on calibration images, optionally quantize to INT8")
    add_model(p)
    p.add_argument("--calib", type=Path, required=True, help="folder of calibration images (or .npy tensors)")
    p.add_argument("-o", "--output", type=Path,
                   help="accelerated ONNX model to write (default: beside the input, MODEL.graphopt[-int8].onnx)")
    p.add_argument("--max-accuracy-drop", type=points, default=AccelerateSettings.max_accuracy_drop,
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
    add_preprocessing_options(p, expert)
    add_training_options(p, expert)
    add_latency_options(p, expert)
    add_cluster_options(p)
    p.set_defaults(func=cmd_accelerate)
