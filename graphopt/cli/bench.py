"""`graphopt bench`: latency of one model, or two measured side by side."""
from __future__ import annotations

import argparse
from pathlib import Path

from graphopt.cli.args import Expert, add_latency_options, add_model, backend_from_args


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


def register(sub, expert: Expert) -> None:
    """The bench subcommand and its latency options."""
    p = sub.add_parser("bench", help="measure latency; with two models, their ratio measured side by side")
    add_model(p)
    p.add_argument("model2", type=Path, nargs="?", help="second model, timed interleaved with the first")
    p.add_argument("--calib", type=Path, help="calibration images for --precision int8 (each model is timed in its "
                                                 "INT8 form on onnxruntime; TensorRT calibrates its engine)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.add_argument("--help-all", action="help", help="show every option, the expert ones too")
    add_latency_options(p, expert)
    p.set_defaults(func=cmd_bench)
