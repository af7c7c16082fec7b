"""How well the unlabelled held-out estimate of accuracy loss (graphopt/quality.py) predicts labelled top-1 loss.

An accuracy floor is only as good as the estimate it judges by. For each model given (accelerate results, INT8
alone, blocks dropped without training: losses from a tenth of a point to tens of points), this measures

- the labelled top-1 loss on the evaluation photos (ground truth, with its 95% interval),
- the expected-loss estimate on those same photos (many images: is the estimator right on average?),
- the estimate graphopt itself can make: on the held-out fifth of the calibration photos and three augmented
  views of each, with its one-sided 95% upper bound (the figure the floor is judged by),

and how the estimates rank and miss the labelled losses (Spearman rank correlation, mean absolute error in points).

    python -m tools.bench.floor --original lite0.onnx --model int8=int8.onnx --model fp32-0.8=fast.onnx \\
        --calib /work/data/imagenet/calib-100 --images /work/data/imagenet/eval/images \\
        --labels /work/data/imagenet/eval/labels.txt --norm tf --out docs/studies/floor_lite0.md
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

import numpy as np

from graphopt.calibration.data.dataset import load_calibration
from graphopt.evaluate import evaluate
from graphopt.machine import cpu_name
from graphopt.model_io import load_model
from graphopt.quality import DropEstimate, expected_drop
from graphopt.settings import KL_VIEWS
from tools.bench.common import predict, run_cli, write_study

HOLDOUT = 0.2  # accelerate's default --holdout
FLOOR = 1.0  # accelerate's default --max-accuracy-drop, in points


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="a faster model to judge (repeatable)")
    parser.add_argument("--calib", type=Path, required=True, help="the calibration folder accelerate was given")
    parser.add_argument("--images", type=Path, required=True, help="labelled evaluation photos")
    parser.add_argument("--labels", type=Path, help="labels file for --images (else class sub-folders)")
    parser.add_argument("--norm", default="imagenet")
    parser.add_argument("--seed", type=int, default=0, help="accelerate's --seed (the held-out split)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def held_out_views(original: Path, calib: Path, norm: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The images accelerate holds out of training, and KL_VIEWS augmented views of each, as accelerate draws them;
    with each row's source image."""
    held = load_calibration(calib, original, norm=norm).split(HOLDOUT, seed)[1]
    inputs = held.with_views(KL_VIEWS, seed).numpy()
    return inputs, np.tile(np.arange(len(held)), len(inputs) // len(held))


def judge(name: str, path: Path, args, reference: dict, evaluation, held: np.ndarray, groups: np.ndarray) -> dict:
    """One model's labelled loss beside the estimates on the evaluation photos and on the held-out views."""
    score = next(s for s in evaluation.models if s.path == str(path))
    base = evaluation.models[0]
    on_eval = expected_drop(reference["eval"], predict(path, reference["eval_inputs"], threads=args.threads))
    on_held = expected_drop(reference["held"], predict(path, held, threads=args.threads), groups, seed=args.seed)
    return {"model": name, "path": str(path), "top1": score.top1, "top1_interval": score.top1_interval,
            "labelled_drop": 100 * (base.top1 - score.top1), "agreement_eval": score.agreement_top1,
            "estimate_eval": on_eval.to_dict(), "estimate_held": on_held.to_dict()}


def agreement_of_estimates(rows: list[dict], key: str) -> dict:
    """Spearman rank correlation and mean absolute error (points) of an estimate against the labelled loss."""
    from scipy.stats import spearmanr
    truth = np.array([r["labelled_drop"] for r in rows])
    estimate = np.array([r[key]["points"] for r in rows])
    return {"spearman": float(spearmanr(truth, estimate).statistic) if len(rows) > 2 else None,
            "mean_abs_error": float(np.abs(truth - estimate).mean())}


def render(rows: list[dict], summary: dict, args, evaluation) -> str:
    base = evaluation.models[0]
    lines = [f"# Judging an accuracy floor without labels: {args.original.name}", "",
             f"Regenerate with `python -m tools.bench.floor {' '.join(sys.argv[1:])}`", "",
             f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC at commit {_commit()}, "
             f"{cpu_name()}. Labelled: {evaluation.scored} photos of {args.images}, original top-1 "
             f"{100 * base.top1:.1f}%. Held-out: {rows[0]['estimate_held']['images']} of the calibration photos in "
             f"{args.calib} (accelerate's split, seed {args.seed}) and {KL_VIEWS} augmented views of each.", "",
             "Estimated loss: the mean of p[original's class] - p[new class] under the original's softmax (0 where "
             "the two agree; graphopt/quality.py). Upper: one-sided 95% bootstrap bound over source images. "
             f"`floor {FLOOR:g}` says whether the held-out upper bound is within a {FLOOR:g}-point floor, and "
             "whether the labelled loss is.", "",
             "| model | top-1 % (95%) | labelled loss, points | agreement (eval) | estimate on eval | "
             "held-out agreement | held-out estimate (upper) | floor 1: estimate / labelled |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        low, high = r["top1_interval"]
        held = DropEstimate(**r["estimate_held"])
        lines.append(f"| {r['model']} | {100 * r['top1']:.1f} ({100 * low:.1f}–{100 * high:.1f}) | "
                     f"{r['labelled_drop']:.1f} | {100 * r['agreement_eval']:.1f}% | "
                     f"{r['estimate_eval']['points']:.2f} | {100 * held.agreement:.1f}% | {held.points:.2f} "
                     f"({held.upper:.2f}) | {'pass' if held.within(FLOOR) else 'fail'} / "
                     f"{'pass' if r['labelled_drop'] <= FLOOR else 'fail'} |")
    lines += ["", "| estimate | Spearman vs labelled loss | mean absolute error, points |", "|---|---|---|"]
    for key, label in (("estimate_eval", "on the labelled photos"), ("estimate_held", "on the held-out views")):
        spearman = summary[key]["spearman"]
        lines.append(f"| {label} | {'—' if spearman is None else f'{spearman:.2f}'} | "
                     f"{summary[key]['mean_abs_error']:.2f} |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = dict(spec.split("=", 1) for spec in args.model)
    evaluation = evaluate([args.original, *map(Path, models.values())], args.images, labels=args.labels,
                          preprocess={"norm": args.norm}, threads=args.threads)
    eval_inputs = load_calibration(args.images, load_model(args.original), norm=args.norm).tensors().numpy()
    held, groups = held_out_views(args.original, args.calib, args.norm, args.seed)
    reference = {"eval": predict(args.original, eval_inputs, threads=args.threads), "eval_inputs": eval_inputs,
                 "held": predict(args.original, held, threads=args.threads)}
    rows = [judge(name, Path(path), args, reference, evaluation, held, groups) for name, path in models.items()]
    summary = {key: agreement_of_estimates(rows, key) for key in ("estimate_eval", "estimate_held")}
    text = render(rows, summary, args, evaluation)
    print(text)
    write_study(args.out, text, {"rows": rows, "summary": summary, "argv": sys.argv[1:]})
    return 0


if __name__ == "__main__":
    run_cli(main)
