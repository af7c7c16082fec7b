"""Are channel counts that are multiples of 8 faster? The channel groups that carry the most multiply-adds, each
pruned to every width from 8k−7 to 8k around half its size, timed against the original on onnxruntime (each
variant interleaved with the original, as accelerate's latency table does). If latency steps at multiples of 8,
widths between them waste accuracy for no time; if it falls smoothly, finer widths are worth offering.

    python -m tools.bench.widths --bench lite0 --out docs/studies/widths_lite0.md

Writes --out (markdown) and its .json twin.
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
import torch

from graphopt.channels import find_channel_groups
from graphopt.channels.importance import l1_order, removed_macs_share
from graphopt.features import feature_tensors
from graphopt.machine import machine
from graphopt.methods import Action, Planner
from graphopt.model_io import load_model
from graphopt.runtime import TimingSettings, get_backend
from graphopt.selection import latency_table
from graphopt.shapes import infer_shapes
from tools.bench.baselines import study_inputs
from tools.bench.common import bench_parser, run_cli, write_study

COMMAND = "python -m tools.bench.widths"


def measure(model_path: Path, groups: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    model = load_model(model_path)
    shapes = infer_shapes(model)
    analysis = find_channel_groups(model, shapes, fixed=feature_tensors(model, None, shapes))
    orders = l1_order(model, analysis)
    share = {g.id: removed_macs_share(model, shapes, analysis, {g.id: orders[g.id][:g.size // 2]})
             for g in analysis.prunable if g.size >= 32}
    chosen = sorted(share, key=share.get, reverse=True)[:groups]
    actions = []
    for group_id in chosen:
        top = int(analysis.group(group_id).size // 2 // 8 * 8)
        actions += [Action("filters", group_id, width, removed_macs_share(
            model, shapes, analysis, {group_id: orders[group_id][:width]})) for width in range(top - 7, top + 1)]
    table = latency_table(get_backend("onnxruntime", TimingSettings(), threads=threads),
                          Planner(model, [], analysis, orders), actions, quiet=True)
    rows = [{"group": a.target, "size": analysis.group(a.target).size, "width": a.keep, "macs_share": a.macs_share,
             "latency_saved": table.savings[a.id]} for a in actions]
    return {"rows": rows, "noise": table.noise, "base_ms": table.base.median_ms}


def step_at_multiples(rows: list[dict]) -> dict:
    """Per group: the extra latency saved going from width 8k to 8k−1 (a step there is what multiples buy),
    against the mean extra saving per channel elsewhere in the range."""
    out = {}
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = sorted((r for r in rows if r["group"] == group), key=lambda r: -r["width"])
        steps = np.diff([r["latency_saved"] for r in mine])
        out[group] = {"step_below_multiple": float(steps[0]), "mean_step_elsewhere": float(np.mean(steps[1:]))}
    return out


def markdown(result: dict, args: argparse.Namespace) -> str:
    steps = step_at_multiples(result["rows"])
    lines = [f"# Channel widths and latency: {args.bench}", "",
             f"Made by `{COMMAND} --bench {args.bench} --groups {args.groups} --threads {args.threads}`, "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()['cpu']}; "
             f"onnxruntime CPU, {args.threads} thread(s), batch 1; original {result['base_ms']:.3f} ms, "
             f"table noise ±{result['noise']:.3f}.", "",
             "| group | saved going 8k → 8k−1 | mean saved per channel below |", "|---|---|---|",
             *[f"| {g} | {s['step_below_multiple']:+.4f} | {s['mean_step_elsewhere']:+.4f} |"
               for g, s in steps.items()], "",
             "| group | size | width | MACs removed | latency saved |", "|---|---|---|---|---|"]
    lines += [f"| {r['group']} | {r['size']} | {r['width']} | {r['macs_share']:.4f} | {r['latency_saved']:+.4f} |"
              for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--groups", type=int, default=4, help="how many of the heaviest groups to sweep")
    args = parser.parse_args(argv)
    result = measure(study_inputs(args.bench)[0], args.groups, args.threads)
    result["steps"] = step_at_multiples(result["rows"])
    write_study(args.out, markdown(result, args), result)
    return 0


if __name__ == "__main__":
    run_cli(main)
