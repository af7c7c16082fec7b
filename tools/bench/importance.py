"""Channel importance criteria side by side: each prunable group of a model cut to the same width by each
criterion's order, its consumers refit in closed form, and the held-out feature error that is left (lower is
better). The same calibration split and widths for every criterion; Dagger gets the same training time a run with
the default budget gives it.

    python -m tools.bench.importance --bench lite0 --out docs/studies/importance_lite0.md
    python -m tools.bench.importance --bench fmnist --out docs/studies/importance_fmnist.md

Writes --out (markdown) and its .json twin.
"""
from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from graphopt.calibration.scoring.dagger import dagger_order
from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.scoring.cut_scores import PlanError, refitter, score_cuts
from graphopt.calibration.scoring.refit import consumer_statistics
from graphopt.calibration.scoring.refit_order import refit_order
from graphopt.calibration.scoring.taylor import taylor_order
from graphopt.channels import find_channel_groups
from graphopt.channels.importance import l1_order
from graphopt.features import feature_tensors
from graphopt.machine import machine
from graphopt.methods import Planner
from graphopt.methods.filters import filter_actions
from graphopt.model_io import load_model
from graphopt.settings import DAGGER_SHARE, AccelerateSettings
from graphopt.shapes import infer_shapes
from tools.bench.baselines import get_bench, study_inputs
from tools.bench.common import bench_parser, run_cli, write_study

COMMAND = "python -m tools.bench.importance"


def compare(model_path: Path, calib: Path, preprocess: dict, fraction: float, threads: int,
            quality: Callable[[onnx.ModelProto], dict]) -> dict:
    torch.set_num_threads(threads)
    model = load_model(model_path)
    shapes = infer_shapes(model)
    features = feature_tensors(model, None, shapes)
    analysis = find_channel_groups(model, shapes, fixed=features)
    calibration = load_calibration(calib, model, **preprocess)
    train, held = calibration.split(0.2, 0)
    logits = model.graph.output[0].name
    budget = DAGGER_SHARE * 60 * AccelerateSettings().time_budget
    timed = {}
    orders = {}
    start = time.perf_counter()
    consumers = consumer_statistics(model, analysis, train.tensors(), threads)
    statistics_s = time.perf_counter() - start
    for name, make in (("l1", lambda: l1_order(model, analysis)),
                       ("taylor", lambda: taylor_order(model, analysis, logits, train.tensors())),
                       ("dagger", lambda: dagger_order(model, shapes, analysis, features, train, fraction, budget,
                                                       threads=threads)),
                       ("refit", lambda: refit_order(analysis, consumers, orders["taylor"]))):
        start = time.perf_counter()
        orders[name] = make()
        timed[name] = round(time.perf_counter() - start + (statistics_s if name == "refit" else 0), 1)
    errors, qualities = {}, {}
    for name, order in orders.items():
        planner = Planner(model, [], analysis, order)
        actions = filter_actions(model, shapes, analysis, order, fractions=(fraction,))
        error = PlanError(planner, consumers, features, held.tensors(), threads)
        errors[name] = {a.target: s["error"] for a, s in zip(actions, score_cuts(error, actions, quiet=True).values())}
        qualities[name] = {a.target: quality(planner.apply([a], refit=refitter(planner, consumers)))["top1"]
                           for a in actions}
    groups = sorted(errors["l1"])
    wins = {name: sum(min(errors, key=lambda n: errors[n][g]) == name for g in groups) for name in errors}
    return {"groups": groups, "errors": errors, "quality": qualities, "seconds": timed, "wins": wins,
            "mean_error": {name: float(np.mean([errors[name][g] for g in groups])) for name in errors},
            "mean_quality": {name: float(np.mean([qualities[name][g] for g in groups])) for name in errors},
            "train_images": len(train), "held_out_images": len(held), "held_out_files": held.sources()}


def markdown(result: dict, args: argparse.Namespace) -> str:
    names = list(result["errors"])
    metric = get_bench(args.bench).metric
    lines = [f"# Channel importance criteria: {args.bench}", "",
             f"Made by `{COMMAND} --bench {args.bench} --fraction {args.fraction} --threads {args.threads}`, "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()['cpu']}.", "",
             f"Each prunable group is cut to {args.fraction:.0%} of its channels (rounded to a multiple of 8) by "
             f"each criterion's order, its consumers are refit by least squares on {result['train_images']} "
             f"calibration images, and the relative feature error is measured on {result['held_out_images']} "
             f"held-out images ({result['held_out_files']} files); lower is better. Quality: the benchmark's "
             f"{metric} of the model with that one cut (refit, untrained), on images calibration never saw; higher "
             f"is better.", "",
             "| criterion | mean feature error | groups where lowest | mean quality | seconds to order |",
             "|---|---|---|---|---|"]
    for name in names:
        lines.append(f"| {name} | {result['mean_error'][name]:.4f} | {result['wins'][name]} of "
                     f"{len(result['groups'])} | {result['mean_quality'][name]:.4f} | {result['seconds'][name]} |")
    lines += ["", "Feature error, then quality, per group:", "",
              "| group | " + " | ".join(names) + " | " + " | ".join(names) + " |",
              "|---|" + "---|" * 2 * len(names)]
    for group in result["groups"]:
        lines.append(f"| {group} | " + " | ".join(f"{result['errors'][n][group]:.4f}" for n in names) + " | "
                     + " | ".join(f"{result['quality'][n][group]:.4f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--fraction", type=float, default=0.5, help="share of each group's channels kept")
    args = parser.parse_args(argv)
    result = compare(*study_inputs(args.bench), args.fraction, args.threads, get_bench(args.bench).quality)
    write_study(args.out, markdown(result, args), result)
    return 0


if __name__ == "__main__":
    run_cli(main)
