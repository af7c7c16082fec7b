"""Methods side by side at one latency target: blocks alone, channel pruning (by each importance criterion) alone,
and the joint search, each from the same calibration folders (several seeds), with the user's alternatives beside
them (onnxruntime quantize_static on the same images; random blocks with the same recovery). Every model is timed
against the original in its own interleaved run and scored on images the calibration never saw.

    python -m tools.bench.methods --bench fmnist --target 0.7 --calib-size 100 --seeds 0 1 2
    python -m tools.bench.methods --bench lite0 --target 0.8 --calib-size 64 --seeds 0 --variants blocks joint

Writes --out (markdown) and its .json twin.
"""
from __future__ import annotations

import argparse
import datetime
import random
import time
from pathlib import Path

import numpy as np

from graphopt.blocks import find_blocks
from graphopt.errors import TargetUnreachable
from graphopt.model_io import load_model
from graphopt.pipeline import accelerate
from tools.bench.baselines import get_bench, measure_rows
from tools.bench.common import run_cli, write_study
from tools.make_results import _ort_int8_variant, machine

COMMAND = "python -m tools.bench.methods"
VARIANTS = {
    "blocks": {"methods": ["blocks"]},
    "filters-l1": {"methods": ["filters"], "importance": "l1"},
    "filters-taylor": {"methods": ["filters"], "importance": "taylor"},
    "filters-dagger": {"methods": ["filters"], "importance": "dagger"},
    "joint": {"methods": ["blocks", "filters"], "importance": "taylor"},
    "joint-logits": {"methods": ["blocks", "filters"], "importance": "taylor", "match_logits": True},
    "blocks-recoverability": {"methods": ["blocks"], "scoring": "recoverability"},
    "joint-recoverability": {"methods": ["blocks", "filters"], "importance": "taylor", "scoring": "recoverability"},
    "joint-l1": {"methods": ["blocks", "filters"], "importance": "l1"},
    "joint-dagger": {"methods": ["blocks", "filters"], "importance": "dagger"},
    "joint-refit": {"methods": ["blocks", "filters"], "importance": "refit"},
    "filters-refit": {"methods": ["filters"], "importance": "refit"},
    "basis": {"methods": ["basis"]},
    "blocks+basis": {"methods": ["blocks", "basis"]},
    "joint-all": {"methods": ["blocks", "filters", "basis"], "importance": "taylor"},
}


def run(args: argparse.Namespace) -> tuple[list, dict]:
    bench = get_bench(args.bench)
    original = load_model(bench.model_path())
    preprocess = bench.accelerate_preprocess
    droppable = [b.id for b in find_blocks(original) if b.droppable]
    variants, unreachable = [], []
    for seed in args.seeds:
        folder = bench.calib_folder(args.calib_size, seed)
        variants.append(_ort_int8_variant(bench, original, folder, args.calib_size, seed))
        for name in args.variants:
            start = time.perf_counter()
            try:
                result = accelerate(original, folder, target_latency=args.target, threads=args.threads,
                                    preprocess=preprocess, quiet=True, time_budget=args.time_budget, seed=seed,
                                    **VARIANTS[name])
            except TargetUnreachable as exc:  # a method that cannot get there is a result too
                unreachable.append({"method": name, "seed": seed, "why": str(exc)})
                print(f"[{bench.name}] {name} seed {seed}: {exc}", flush=True)
                continue
            report = result.report
            fields = {"method": name, "dropped": report["dropped"], "seed": seed, "recovery": "distillation",
                      "calibration": f"{args.calib_size} images", "wall_s": round(time.perf_counter() - start, 1),
                      "extra": {"pruned": report["pruned"], "split": report["split"],
                                "own_latency_ratio": report["latency"]["ratio"],
                                "held_out_agreement": report["agreement_top1"], "seconds": report["seconds"]}}
            print(f"[{bench.name}] {name} seed {seed}: dropped {report['dropped']}, pruned {report['pruned']}, "
                  f"split {report['split']}, "
                  f"own ratio {report['latency']['ratio']:.3f}, {fields['wall_s']:.0f} s", flush=True)
            variants.append((fields, result.model))
            if name == "blocks" and report["dropped"]:
                drawn = sorted(random.Random(seed).sample(droppable, len(report["dropped"])), key=droppable.index)
                twin = accelerate(original, folder, blocks=drawn, threads=args.threads, preprocess=preprocess,
                                  quiet=True, time_budget=args.time_budget, seed=seed)
                variants.append(({"method": "random blocks + recovery", "dropped": drawn, "seed": seed,
                                  "recovery": "distillation", "calibration": f"{args.calib_size} images"},
                                 twin.model))
    rows = measure_rows(bench, original, variants, args.threads)
    return rows, {"bench": bench.name, "title": bench.title, "metric": bench.metric, "unreachable": unreachable}


def summarise(rows: list) -> list[dict]:
    """Mean and spread over seeds per method, in the order methods first appear."""
    methods = list(dict.fromkeys(r.method for r in rows))
    out = []
    for method in methods:
        mine = [r for r in rows if r.method == method]
        quality = [r.quality["top1"] for r in mine]
        ratio = [r.latency_ratio for r in mine]
        out.append({"method": method, "runs": len(mine), "quality_mean": float(np.mean(quality)),
                    "quality_min": float(np.min(quality)), "quality_max": float(np.max(quality)),
                    "ratio_mean": float(np.mean(ratio)), "ratio_min": float(np.min(ratio)),
                    "ratio_max": float(np.max(ratio)),
                    "wall_s_mean": float(np.mean([r.wall_s for r in mine if r.wall_s])) if any(
                        r.wall_s for r in mine) else None})
    return out


def markdown(rows: list, summary: list[dict], info: dict, args: argparse.Namespace) -> str:
    seeds = " ".join(map(str, args.seeds))
    lines = [f"# Methods at target {args.target}: {info['title']}", "",
             f"Made by `{COMMAND} --bench {args.bench} --target {args.target} --calib-size {args.calib_size} "
             f"--seeds {seeds} --variants {' '.join(args.variants)} --threads {args.threads} --time-budget "
             f"{args.time_budget}`, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, code of commit "
             f"{info['machine']['commit']} (as the run began), on {info['machine']['cpu']}.", "",
             f"Quality: {info['metric']}. Latency ratio: the model's median over the original's, the two timed in "
             f"one interleaved run ({args.threads} onnxruntime thread); `original-repeat` is the original against "
             f"itself (the noise floor).", "",
             f"| method | runs | {info['metric']} mean (min–max) | latency ratio mean (min–max) | wall s |",
             "|---|---|---|---|---|"]
    for s in summary:
        wall = f"{s['wall_s_mean']:.0f}" if s["wall_s_mean"] else ""
        lines.append(f"| {s['method']} | {s['runs']} | {s['quality_mean']:.4f} ({s['quality_min']:.4f}–"
                     f"{s['quality_max']:.4f}) | {s['ratio_mean']:.3f} ({s['ratio_min']:.3f}–{s['ratio_max']:.3f})"
                     f" | {wall} |")
    lines += [f"- {u['method']} (seed {u['seed']}) gave no model: {u['why']}" for u in info["unreachable"]]
    lines += ["", "Every run:", "", f"| method | seed | {info['metric']} | latency ratio | blocks dropped | "
              "channels kept | bases kept |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        pruned = ", ".join(f"{g}: {k}" for g, k in r.extra.get("pruned", {}).items())
        split = ", ".join(f"{n}: {k}" for n, k in r.extra.get("split", {}).items())
        lines.append(f"| {r.method} | {'' if r.seed is None else r.seed} | {r.quality['top1']:.4f} | "
                     f"{r.latency_ratio:.3f} | {', '.join(r.dropped)} | {pruned} | {split} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--bench", choices=["fmnist", "lite0"], default="fmnist")
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--calib-size", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=["blocks", "filters-l1", "filters-taylor", "filters-dagger", "joint"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time-budget", type=float, default=10.0, help="accelerate's --time-budget (minutes)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    env = machine(args.threads)  # the code that runs is the code as it was when the run began
    rows, info = run(args)
    info["machine"] = env
    summary = summarise(rows)
    write_study(args.out, markdown(rows, summary, info, args), {
        "summary": summary, "rows": [r.to_dict() for r in rows], "unreachable": info["unreachable"], "machine": env})
    return 0


if __name__ == "__main__":
    run_cli(main)
