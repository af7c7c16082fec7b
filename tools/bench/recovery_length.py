"""What recovery buys on labelled ImageNet photos within a 10-minute budget: an EfficientNet with blocks dropped,
recovered on 100 ImageNet calibration photos for up to 1,000 steps or the budget, whichever ends first, beside no
recovery, the same recovery with each augmented copy of the photos serving 4 epochs (the teacher run a quarter as
often), the same recovery of as many blocks chosen at random, and onnxruntime's quantize_static alone. Each scored by
labelled top-1 on the 1,200 held-apart ILSVRC2012 validation photos.

Why (issue 23): on Lite2 a 10-minute accelerate run left recovery tens of steps; whether 1,000 steps fit a
10-minute budget, and what they buy in labelled top-1 against the user's alternatives, is what this measures. The
blocks are those `graphopt accelerate --methods blocks --target-latency 0.85` dropped (`--blocks-from` its
report) or a list.

    python -m tools.bench.recovery_length --model lite0 --blocks-from RUN.report.json  # about 30 minutes on one core
"""
from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from graphopt.blocks import find_blocks
from graphopt.calibration.data.dataset import load_calibration
from graphopt.calibration.recovery.mimic import MimicSettings
from graphopt.calibration.recovery.recover import recover
from graphopt.errors import GraphoptError
from graphopt.features import feature_tensors
from graphopt.methods import Action, Planner
from graphopt.model_io import load_model
from graphopt.passes import drop_blocks
from graphopt.shapes import infer_shapes
from tools.bench.common import cache_dir, run_cli, write_study
from tools.bench.imagenet import DATA, REPO, EvalSet, calib_folder, eval_set, export, labelled_quality
from tools.bench.ort_int8 import folder_images, quantize_static_baseline
from tools.effnet_lite import SIZES, input_spec
from tools.make_results import machine

COMMAND = "python -m tools.bench.recovery_length"
CHOSEN = "_blocks.4,_blocks.9,_blocks.10"  # what accelerate dropped on Lite0 at target 0.8 (defaults_imagenet study)
REUSED = 4  # epochs an augmented copy serves in the row that pays the teacher's pass less often


def recovered(original, train, held, blocks: list[str], settings: MimicSettings | None, threads: int) -> dict:
    """The model with `blocks` dropped and recovered with `settings` (None: not recovered), and what recovery did."""
    found = find_blocks(original, infer_shapes(original))
    pruned = drop_blocks(original, blocks, found)
    if settings is None:
        return {"model": pruned, "steps": 0, "seconds": 0.0, "stopped": None, "held_error_before": None,
                "held_error_after": None}
    cuts = Planner(original, found).cuts([Action("blocks", b) for b in blocks])
    start = time.perf_counter()
    result = recover(original, pruned, cuts, feature_tensors(original), train, held.tensors(), settings, threads,
                     quiet=True)
    return {"model": result.model, "steps": result.result.steps, "seconds": round(time.perf_counter() - start, 1),
            "stopped": result.result.stopped, "held_error_before": result.result.error_before,
            "held_error_after": result.result.error_after}


def add_drop_arguments(p: argparse.ArgumentParser, model: str) -> None:
    """What the recovery studies share: the model, the blocks to drop, and how training runs."""
    p.add_argument("--model", default=model, choices=sorted(SIZES))
    p.add_argument("--blocks", default=CHOSEN, help="blocks to drop, comma-separated")
    p.add_argument("--blocks-from", type=Path, default=None, metavar="REPORT",
                   help="drop the blocks a graphopt --report dropped")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads for training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=DATA)


def drop_setup(args: argparse.Namespace, evaluation: EvalSet) -> tuple:
    """(the exported model, its input spec, the 100 calibration photos split into training and held-out, the
    blocks to drop), with torch on --threads."""
    torch.set_num_threads(args.threads)
    original = load_model(export(args.model, evaluation))
    spec = input_spec(SIZES[args.model])
    train, held = load_calibration(calib_folder(args.data, 100), original, norm=spec["preset"],
                                   resize=spec["resize"]).split(0.2, seed=args.seed)
    return original, spec, train, held, blocks_to_drop(args)


def blocks_to_drop(args: argparse.Namespace) -> list[str]:
    """--blocks-from a graphopt report (its dropped blocks), else --blocks."""
    if args.blocks_from is None:
        return args.blocks.split(",")
    dropped = json.loads(args.blocks_from.read_text()).get("dropped") or []
    if not dropped:
        raise GraphoptError(f"{args.blocks_from} drops no block")
    return dropped


def int8_alone(original, calib: Path, spec: dict):
    """onnxruntime's quantize_static from all the calibration photos: what a user gets without graphopt."""
    return quantize_static_baseline(original, folder_images(original, calib, spec["preset"], spec["resize"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    add_drop_arguments(p, "lite0")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--budget", type=float, default=600.0, metavar="SECONDS", help="recovery's wall-time cap")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam rate (accelerate's probes pick 1e-4 on Lite0)")
    p.add_argument("--eval-limit", type=int, default=None, metavar="N", help="score the first N photos (smoke runs)")
    p.add_argument("--note", default="", help="what else ran on the machine (printed as given)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "studies" / "recovery_length.md")
    args = p.parse_args(argv)
    evaluation = eval_set(args.data, args.eval_limit, cache_dir("imagenet"))
    original, spec, train, held, chosen = drop_setup(args, evaluation)
    quality = labelled_quality(original, evaluation, {"norm": spec["preset"], "resize": spec["resize"]})
    droppable = [b.id for b in find_blocks(original, infer_shapes(original)) if b.droppable]
    randomly = sorted(random.Random(args.seed).sample(droppable, len(chosen)))
    long = MimicSettings(args.steps, 16, args.lr, seed=args.seed, patience=10 ** 6, seconds=args.budget)
    steps = f"up to {args.steps} steps in {args.budget:.0f} s"
    rows = []
    for label, blocks, settings in (
            ("no recovery", chosen, None), (steps, chosen, long),
            (f"{steps}, each augmented copy serving {REUSED} epochs", chosen, replace(long, view_epochs=REUSED)),
            (f"random blocks, {steps}", randomly, long)):
        row = {"recovery": label, "blocks": blocks, **recovered(original, train, held, blocks, settings, args.threads)}
        row["quality"] = quality(row.pop("model"))
        rows.append(row)
        print(f"{label}: {row['steps']} steps, {row['seconds']} s, top-1 {row['quality']['top1']:.4f}", flush=True)
    start = time.perf_counter()
    int8 = int8_alone(original, calib_folder(args.data, 100), spec)
    rows.append({"recovery": "onnxruntime quantize_static alone (no block dropped)", "blocks": [], "steps": 0,
                 "seconds": round(time.perf_counter() - start, 1), "stopped": None, "held_error_before": None,
                 "held_error_after": None, "quality": quality(int8)})
    results = {"command": shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)]),
               "machine": machine(args.threads), "settings": {k: str(v) for k, v in vars(args).items()},
               "original": quality(original), "rows": rows, "note": args.note}
    write_study(args.out, markdown(results), results)
    return 0


def _pct(quality: dict, key: str) -> str:
    low, high = quality[f"{key}_interval"]
    return f"{100 * quality[key]:.1f} ({100 * low:.1f}–{100 * high:.1f})"


def markdown(results: dict) -> str:
    env = results["machine"]
    lines = ["# Recovery by the steps it gets, on labelled ImageNet photos", "", f"Regenerate with "
             f"`{results['command']}`", "", f"Generated {env['generated']} at commit {env['commit'] or 'unknown'} "
             f"on {env['cpu']}, torch on {results['settings']['threads']} thread(s), batch 16, learning rate "
             f"{results['settings']['lr']}.", "",
             __doc__.split("\n\n")[0].replace("\n", " "), "",
             *(f"**{key.capitalize()}:** {results[key]}\n" for key in ("note", "relabelled") if results.get(key)),
             f"Original: top-1 {_pct(results['original'], 'top1')}.", "",
             "| recovery | blocks dropped | steps (why it ended) | seconds | held-out feature error (before → after) "
             "| top-1 % (95%) | agreement % (95%) |", "|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        error = "—" if row["held_error_before"] is None else \
            f"{row['held_error_before']:.4f} → {row['held_error_after']:.4f}"
        ended = f" ({row['stopped']})" if row.get("stopped") else ""
        lines.append(f"| {row['recovery']} | {', '.join(row['blocks']) or '—'} | {row['steps']}{ended} | "
                     f"{row['seconds']} | {error} | {_pct(row['quality'], 'top1')} | "
                     f"{_pct(row['quality'], 'agreement_top1')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_cli(main)
