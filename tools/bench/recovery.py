"""Recovery choices side by side on EfficientNet-Lite0: the same blocks dropped, the same calibration crops and
time budget, one recovery setting changed at a time; agreement with the original on photos the calibration
never saw (split by photo). How a recovery idea earns its place as a default.

    python -m tools.bench.recovery --blocks ID,ID --variant features: --variant logits:match_logits=true

Each variant is NAME:KEY=VALUE,... of AccelerateSettings fields. Writes --out (markdown) and its .json twin.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

from graphopt.machine import machine, versions
from graphopt.model_io import load_model
from graphopt.pipeline import accelerate
from tools.bench.common import run_cli
from tools.effnet_lite import INPUT_SPEC, agreement, lite0_path, write_calibration

REPO = Path(__file__).resolve().parents[2]


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, assignments = text.partition(":")
    settings = {}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    return name, settings


def run_variant(name: str, overrides: dict, args: argparse.Namespace, model, calib: Path) -> dict:
    start = time.perf_counter()
    result = accelerate(model, calib, blocks=args.blocks.split(","), threads=args.threads, quiet=True,
                        use_cache=False, time_budget=args.time_budget,
                        preprocess={"norm": INPUT_SPEC["preset"], "resize": INPUT_SPEC["resize"]}, **overrides)
    wall = time.perf_counter() - start
    quality = agreement(result.model, threads=args.threads)
    report = result.report
    row = {"variant": name, "settings": overrides, "wall_s": round(wall, 1), "eval": quality,
           "held_out_agreement": report["agreement_top1"], "feature_error": report["feature_error"],
           "latency_ratio": report["latency"]["ratio"], "seconds": report["seconds"]}
    print(f"{name}: eval top-1 agreement {quality['top1']:.4f} (top-5 {quality['top5']:.4f}), calibration held-out "
          f"{report['agreement_top1']:.3f}, {wall:.0f} s", flush=True)
    return row


def markdown(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = ["# Recovery choices on EfficientNet-Lite0", "", f"Regenerate: `{command}`", "",
             f"- {machine()['cpu']}, {args.threads} thread(s); {', '.join(f'{k} {v}' for k, v in versions().items())}; "
             f"{datetime.date.today()}.",
             f"- Blocks dropped (fixed): {args.blocks}; {args.calib_count} calibration crops of the calibration "
             f"photos; time budget {args.time_budget} min per run.",
             f"- Eval: top-1/top-5 agreement with the original on {rows[0]['eval']['views']} views of photos the "
             f"calibration never saw (split by photo).", "",
             "| variant | settings | eval top-1 agreement | eval top-5 | held-out (calibration files) | "
             "feature error after | steps | wall s |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        error = row["feature_error"]
        lines.append(f"| {row['variant']} | `{json.dumps(row['settings'])}` | {row['eval']['top1']:.4f} | "
                     f"{row['eval']['top5']:.4f} | {row['held_out_agreement']:.3f} | {error['after_recovery']:.4f} | "
                     f"{error['steps']} | {row['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.recovery", description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", required=True, help="block ids to drop, comma-separated")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--calib-count", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-budget", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "studies" / "recovery_choices.md")
    args = parser.parse_args(argv)
    command = "python -m tools.bench.recovery " + " ".join(argv if argv is not None else sys.argv[1:])
    model, calib = load_model(lite0_path()), write_calibration(args.calib_count, 0)
    rows = [run_variant(*parse_variant(text), args, model, calib) for text in args.variant]
    args.out.write_text(markdown(rows, args, command))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
