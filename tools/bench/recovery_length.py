"""What recovery buys on labelled ImageNet photos, by the steps it gets: EfficientNet-Lite0 with three blocks
dropped, recovered on 100 ImageNet calibration photos with no steps, with accelerate's early stopping (held-out
error checked every 20 steps, stop after 4 checks without improvement), and with a fixed number of steps and no
early stopping; the same long recovery for three blocks chosen at random. Each scored by labelled top-1 on the
1,200 held-apart ILSVRC2012 validation photos.

Why: recovery on Lite2 ends by early stopping after about 80 steps (docs/studies/recovery_speed.md); whether
more steps would buy accuracy, and so whether the patience or the budget should move, is a labelled-top-1
question (issue 23 asks for 1,000 steps inside a 10-minute budget).

    python -m tools.bench.recovery_length --steps 1000                   # about 25 minutes on one core
"""
from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from pathlib import Path

import torch

from graphopt.blocks import find_blocks
from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.recovery.mimic import MimicSettings
from graphopt.calibration.recovery.recover import recover
from graphopt.features import feature_tensors
from graphopt.methods import Action, Planner
from graphopt.model_io import load_model
from graphopt.passes import drop_blocks
from graphopt.shapes import infer_shapes
from tools.bench.common import cache_dir, run_cli, write_study
from tools.bench.imagenet import DATA, REPO, calib_folder, eval_set, export, labelled_quality
from tools.effnet_lite import SIZES, input_spec
from tools.make_results import machine

COMMAND = "python -m tools.bench.recovery_length"
CHOSEN = "_blocks.4,_blocks.9,_blocks.10"  # what accelerate dropped on Lite0 at target 0.8 (defaults_imagenet study)


def recovered(original, train, held, blocks: list[str], settings: MimicSettings | None, threads: int):
    """(the model, steps, seconds, held-out error before/after) with `blocks` dropped and `settings` of recovery
    (None: no recovery)."""
    found = find_blocks(original, infer_shapes(original))
    pruned = drop_blocks(original, blocks, found)
    if settings is None:
        return pruned, 0, 0.0, None, None
    cuts = Planner(original, found).cuts([Action("blocks", b) for b in blocks])
    start = time.perf_counter()
    result = recover(original, pruned, cuts, feature_tensors(original), train, held.tensors(), settings, threads,
                     quiet=True)
    return (result.model, result.result.steps, round(time.perf_counter() - start, 1), result.result.error_before,
            result.result.error_after)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lite0", choices=sorted(SIZES))
    p.add_argument("--blocks", default=CHOSEN, help="blocks to drop, comma-separated")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam rate (accelerate's probes pick 1e-4 on Lite0)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--eval-limit", type=int, default=None, metavar="N", help="score the first N photos (smoke runs)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "studies" / "recovery_length.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    evaluation = eval_set(args.data, args.eval_limit, cache_dir("imagenet"))
    original = load_model(export(args.model, evaluation))
    spec = input_spec(SIZES[args.model])
    quality = labelled_quality(original, evaluation, {"norm": spec["preset"], "resize": spec["resize"]})
    train, held = load_calibration(calib_folder(args.data, 100), original, norm=spec["preset"],
                                   resize=spec["resize"]).split(0.2, seed=args.seed)
    chosen = args.blocks.split(",")
    droppable = [b.id for b in find_blocks(original, infer_shapes(original)) if b.droppable]
    randomly = sorted(random.Random(args.seed).sample(droppable, len(chosen)))
    early = MimicSettings(250, 16, args.lr, seed=args.seed)  # accelerate's cap, patience and evaluation interval
    long = MimicSettings(args.steps, 16, args.lr, seed=args.seed, patience=10 ** 6)
    rows = []
    for label, blocks, settings in (("no recovery", chosen, None), ("early stopping (accelerate's)", chosen, early),
                                    (f"{args.steps} steps", chosen, long),
                                    (f"random blocks, {args.steps} steps", randomly, long)):
        model, steps, seconds, before, after = recovered(original, train, held, blocks, settings, args.threads)
        rows.append({"recovery": label, "blocks": blocks, "steps": steps, "seconds": seconds,
                     "held_error_before": before, "held_error_after": after, "quality": quality(model)})
        print(f"{label}: {steps} steps, {seconds} s, top-1 {rows[-1]['quality']['top1']:.4f}", flush=True)
    results = {"command": shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)]),
               "machine": machine(args.threads), "settings": {k: str(v) for k, v in vars(args).items()},
               "original": quality(original), "rows": rows}
    write_study(args.out, markdown(results), results)
    return 0


def _pct(quality: dict, key: str) -> str:
    low, high = quality[f"{key}_interval"]
    return f"{100 * quality[key]:.1f} ({100 * low:.1f}–{100 * high:.1f})"


def markdown(results: dict) -> str:
    env = results["machine"]
    lines = ["# Recovery by the steps it gets, on labelled ImageNet photos", "", f"Regenerate with "
             f"`{results['command']}`", "", f"Generated {env['generated']} at commit {env['commit'] or 'unknown'} "
             f"on {env['cpu']}, torch on {results['settings']['threads']} thread(s), batch 16.", "",
             __doc__.split("\n\n")[0].replace("\n", " "), "",
             f"Original: top-1 {_pct(results['original'], 'top1')}.", "",
             "| recovery | blocks dropped | steps | seconds | held-out feature error (before → after) | top-1 % (95%) "
             "| agreement % (95%) |", "|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        error = "—" if row["held_error_before"] is None else \
            f"{row['held_error_before']:.4f} → {row['held_error_after']:.4f}"
        lines.append(f"| {row['recovery']} | {', '.join(row['blocks'])} | {row['steps']} | {row['seconds']} | "
                     f"{error} | {_pct(row['quality'], 'top1')} | {_pct(row['quality'], 'agreement_top1')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_cli(main)
