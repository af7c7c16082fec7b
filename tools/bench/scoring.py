"""How well each way of scoring a cut predicts what it costs on images the calibration never saw.

Every drop of k blocks (k in --ks) is applied without training and measured four ways: the KL divergence of its
class scores from the original's on the held-out calibration images and three augmented views of each (what
`--scoring kl` ranks by), the same on every calibration image, the relative feature error on the held-out images
(the currency of `--scoring recoverability`, here untrained), and the benchmark's own quality on its evaluation
images (agreement on unseen photos for Lite0). The table gives each measure's rank correlation with that quality
and the plan each would pick among those removing at least --min-macs of the multiply-adds.

    python -m tools.bench.scoring --bench lite0 --out docs/studies/scoring_lite0.md

Writes --out (markdown) and its .json twin.
"""
from __future__ import annotations

import argparse
import datetime
import itertools

import numpy as np

from graphopt.blocks import find_blocks
from graphopt.calibration.scoring.cut_scores import PlanError
from graphopt.calibration.data.dataset import load_calibration
from graphopt.features import class_scores, feature_tensors
from graphopt.machine import cpu_name
from graphopt.methods import Planner
from graphopt.methods.blocks import block_actions
from graphopt.model_io import load_model
from graphopt.passes import drop_blocks
from graphopt.settings import KL_VIEWS
from tools.bench.baselines import STUDY_CALIBRATION, get_bench
from tools.bench.common import bench_parser, run_cli, write_study

COMMAND = "python -m tools.bench.scoring"
MEASURES = ("kl_held", "kl_all", "feature_held")


def measure(args: argparse.Namespace) -> tuple[list[dict], dict]:
    bench = get_bench(args.bench)
    model = load_model(bench.model_path())
    calib = load_calibration(bench.calib_folder(STUDY_CALIBRATION[bench.name], 0), model,
                             **bench.accelerate_preprocess)
    _, held = calib.split(0.2, 0)
    views = held.with_views(KL_VIEWS, seed=0)  # what accelerate's KL scoring measures on, at --seed 0
    blocks = find_blocks(model)
    planner = Planner(model, blocks)
    features = feature_tensors(model)
    logits = class_scores(model, features)
    errors = {"kl_held": PlanError(planner, {}, features, views, args.threads, logits),
              "kl_all": PlanError(planner, {}, features, calib.tensors(), args.threads, logits),
              "feature_held": PlanError(planner, {}, features, held.tensors(), args.threads)}
    actions = block_actions(blocks)
    rows = []
    for k in args.ks:
        for plan in itertools.combinations(actions, k):
            ids = [a.target for a in plan]
            row = {"dropped": ids, "macs_share": sum(a.macs_share for a in plan),
                   **{name: error(list(plan)) for name, error in errors.items()},
                   "quality": bench.quality(drop_blocks(model, ids, blocks))["top1"]}
            print(f"{', '.join(ids)}: " + ", ".join(f"{m} {row[m]:.4f}" for m in (*MEASURES, "quality")), flush=True)
            rows.append(row)
    info = {"bench": bench.name, "title": bench.title, "metric": bench.metric, "held_out": len(held),
            "views": len(views), "calibration": len(calib), "cpu": cpu_name()}
    return rows, info


def spearman(a: list[float], b: list[float]) -> float:
    ranks = [np.argsort(np.argsort(x)) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def summarise(rows: list[dict], min_macs: float) -> list[dict]:
    quality = [r["quality"] for r in rows]
    eligible = [r for r in rows if r["macs_share"] >= min_macs]
    summary = []
    for name in MEASURES:
        chosen = min(eligible, key=lambda r: r[name]) if eligible else None
        summary.append({"measure": name, "spearman": -spearman([r[name] for r in rows], quality),
                        "picks": chosen and chosen["dropped"], "picked_quality": chosen and chosen["quality"]})
    best = max(eligible, key=lambda r: r["quality"]) if eligible else None
    summary.append({"measure": "oracle (quality itself)", "spearman": 1.0, "picks": best and best["dropped"],
                    "picked_quality": best and best["quality"]})
    return summary


def markdown(rows: list[dict], summary: list[dict], info: dict, args: argparse.Namespace) -> str:
    lines = [f"# Scoring cuts: {info['title']}", "",
             f"Made by `{COMMAND} --bench {args.bench} --ks {' '.join(map(str, args.ks))} --min-macs {args.min_macs}`"
             f", {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, on {info['cpu']}.", "",
             f"{len(rows)} block drops, each applied without training. `kl_held`: KL divergence of the class scores "
             f"from the original's on the {info['held_out']} held-out calibration images and {KL_VIEWS} augmented "
             f"views of each ({info['views']} inputs; what `--scoring kl` uses). `kl_all`: the same on all "
             f"{info['calibration']} calibration images. `feature_held`: relative error of the feature tensor on "
             f"the held-out images (the currency of `--scoring recoverability`, before adaptor training). "
             f"Quality: {info['metric']} on the benchmark's evaluation images, which calibration never saw. "
             f"Spearman: rank correlation of the measure (lower is better) with quality. Picks: the plan the "
             f"measure scores best among those removing at least {args.min_macs:.0%} of the multiply-adds.", "",
             "| measure | Spearman with quality | picks | its quality |", "|---|---|---|---|"]
    for s in summary:
        picks = ", ".join(s["picks"] or []) or "—"
        quality = "—" if s["picked_quality"] is None else f"{s['picked_quality']:.4f}"
        lines.append(f"| {s['measure']} | {s['spearman']:.3f} | {picks} | {quality} |")
    lines += ["", "Every plan:", "", "| dropped | MACs removed | kl_held | kl_all | feature_held | quality |",
              "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["quality"]):
        lines.append(f"| {', '.join(r['dropped'])} | {r['macs_share']:.3f} | {r['kl_held']:.4f} | {r['kl_all']:.4f} "
                     f"| {r['feature_held']:.4f} | {r['quality']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.set_defaults(threads=2)  # inference only, nothing timed: both cores
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 3], help="numbers of blocks dropped together")
    parser.add_argument("--min-macs", type=float, default=0.17, help="share of multiply-adds a pick must remove")
    args = parser.parse_args(argv)
    rows, info = measure(args)
    summary = summarise(rows, args.min_macs)
    write_study(args.out, markdown(rows, summary, info, args), {"info": info, "summary": summary, "rows": rows})
    return 0


if __name__ == "__main__":
    run_cli(main)
