"""What the best plans each set of methods offers could reach before recovery: a greedy search that prices every
cut by the benchmark's own quality on images the calibration never saw (an oracle no run has), blocks alone against
blocks and channel groups together, to the same ratio predicted from the same measured latency table.

The search is accelerate's own (single cuts ranked by loss per millisecond saved, then re-ranked lazily by what
each adds to the plan's loss), with channel cuts refit as accelerate applies them, but its loss is the fall in the
benchmark's quality; cuts are added until their summed savings predict the target, and the plan's ratio is then
measured against the original side by side. Because the
search reads the evaluation images, its quality bounds from above what any scoring on the calibration images
could choose; recovery then adds what it adds (1–8 points on Lite0 in every run so far).

    python -m tools.bench.ceiling --bench lite0 --target 0.8 --out docs/studies/ceiling_lite0_08.md

Writes --out (markdown) and its .json twin.
"""
from __future__ import annotations

import argparse
import datetime
import time

import torch

from graphopt.calibration.scoring.cut_scores import refitter
from graphopt.machine import cpu_name
from graphopt.stages.rank import rerank_by_plan
from graphopt.selection import latency_table, predicted_ratio
from graphopt.settings import IMPORTANCE, AccelerateSettings
from graphopt.stages.prepare import prepare
from tools.bench.baselines import get_bench, study_inputs
from tools.bench.common import bench_parser, run_cli, write_study

COMMAND = "python -m tools.bench.ceiling"
SEARCHES = {"blocks": ["blocks"], "blocks+filters": ["blocks", "filters"]}


def search(bench, run, table, target: float, methods: list[str]) -> dict:
    """The product's search (single cuts ranked by loss per millisecond saved, then re-ranked lazily by what they
    lose together) over the run's cuts of `methods`, with the benchmark's quality loss as the loss."""
    refit = refitter(run.planner, run.consumers()) if run.channels else None
    candidates = [a for a in run.actions if a.method in methods]
    evaluated: dict[tuple, float] = {}

    def loss(plan) -> float:
        key = tuple(a.id for a in run.planner.normalise(plan))
        if key not in evaluated:
            evaluated[key] = 1.0 - bench.quality(run.planner.apply(plan, refit=refit))["top1"] if plan else 0.0
        return evaluated[key]

    def enough(plan) -> bool:
        return predicted_ratio(run.planner.normalise(plan), table) <= target

    saved = table.savings_ms
    single = {a.id: loss([a]) for a in candidates}
    by_single = sorted(candidates, key=lambda a: single[a.id] / max(saved[a.id], 1e-3))
    ranked = rerank_by_plan(by_single, single, saved, loss, enough)
    size = next((n for n in range(1, len(ranked) + 1) if enough(ranked[:n])), len(ranked))
    plan = run.planner.normalise(ranked[:size])
    comparison = run.backend.compare(run.planner.model, run.planner.apply(plan, refit=refit))
    print(f"{'+'.join(methods)}: {[a.id for a in plan]} {1 - loss(plan):.4f} at {comparison.ratio:.3f} "
          f"({len(evaluated)} plans evaluated)", flush=True)
    return {"methods": methods, "plan": [a.id for a in plan], "quality": 1.0 - loss(plan),
            "predicted_ratio": predicted_ratio(plan, table), "measured_ratio": comparison.ratio,
            "single_cuts": [{"cut": a.id, "quality": 1.0 - single[a.id], "saved_ms": saved[a.id]}
                            for a in by_single],
            "plans_evaluated": len(evaluated)}


def measure(args: argparse.Namespace) -> dict:
    bench = get_bench(args.bench)
    model_path, calib, preprocess = study_inputs(args.bench)
    torch.set_num_threads(args.threads)
    settings = AccelerateSettings(methods=["blocks", "filters"], importance=args.importance, threads=args.threads,
                                  preprocess=preprocess, target_latency=args.target, seed=0)
    run = prepare(str(model_path), None, str(calib), settings, None, True, time.monotonic() + 3600)
    table = latency_table(run.backend, run.planner, run.actions, quiet=True)
    results = [search(bench, run, table, args.target, methods) for methods in SEARCHES.values()]
    return {"bench": bench.name, "title": bench.title, "metric": bench.metric, "cpu": cpu_name(),
            "original_ms": table.base.median_ms, "table_noise": table.noise, "searches": results}


def markdown(result: dict, args: argparse.Namespace) -> str:
    lines = [f"# Ceiling before recovery: {result['title']}", "",
             f"Made by `{COMMAND} --bench {args.bench} --target {args.target} --importance {args.importance} "
             f"--threads {args.threads}`, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, on "
             f"{result['cpu']}; onnxruntime, {args.threads} thread(s), original {result['original_ms']:.3f} ms, "
             f"latency table noise ±{result['table_noise']:.3f}.", "",
             f"accelerate's search (single cuts ranked by loss per millisecond saved, then re-ranked lazily by what "
             f"the plan loses with each added) with the loss it cannot know: the fall in {result['metric']} on the "
             f"benchmark's evaluation images, untrained, channel cuts refit. Cuts are added until their measured "
             f"single-cut savings predict the target. The quality bounds what a scoring on calibration images "
             f"could pick from the same cuts.", "",
             "| methods | plan | quality (untrained) | predicted ratio | measured ratio | plans evaluated |",
             "|---|---|---|---|---|---|"]
    for s in result["searches"]:
        lines.append(f"| {'+'.join(s['methods'])} | {', '.join(s['plan'])} | {s['quality']:.4f} "
                     f"| {s['predicted_ratio']:.3f} | {s['measured_ratio']:.3f} | {s['plans_evaluated']} |")
    cuts = result["searches"][-1]["single_cuts"]
    lines += ["", "Every cut alone, best to lose first:", "", "| cut | quality (untrained) | saved ms | lost per ms |",
              "|---|---|---|---|"]
    lines += [f"| {c['cut']} | {c['quality']:.4f} | {c['saved_ms']:.3f} | "
              f"{(1 - c['quality']) / max(c['saved_ms'], 1e-3):.3f} |" for c in cuts]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--importance", default="taylor", choices=list(IMPORTANCE))
    args = parser.parse_args(argv)
    result = measure(args)
    write_study(args.out, markdown(result, args), result)
    return 0


if __name__ == "__main__":
    run_cli(main)
