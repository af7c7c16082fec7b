"""Recovery steps per second on EfficientNet-Lite: graphopt's student beside the same work in native PyTorch and
beside the floor this machine's measured arithmetic throughput sets, and where a step's time goes.

Why (issue 23): recovery is where quality comes back, and on Lite2 a 10-minute run left it tens of steps. How far
a step is from what the machine can do is a number to know before making steps cheaper. One step here is what
recovery runs: the student (the pruned model after its first cut, converted by onnx2torch, `calibration/bridge/student.py`)
forward on a batch of the cut tensor, the relative feature error against the teacher's features, backward, one Adam
update of the weights the features depend on. The native row does the same in the authors' PyTorch modules with
the same weights and the same blocks replaced by identities (BatchNorm unfolded and in eval mode there, folded into
the convolutions in the ONNX export). The floor is 3x the student's forward multiply-adds (forward, and backward
for inputs and weights) at the multiply-add rate this machine measures on a large float32 matrix product with the
same threads; depthwise convolutions are bound by memory, not arithmetic, so no real step reaches it.

    python -m tools.bench.recovery_speed --models lite0 lite2 --out docs/studies/recovery_speed.md
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from graphopt.blocks import find_blocks
from graphopt.calibration.recovery.mimic import MimicSettings, feature_error
from graphopt.calibration.bridge.student import Student, build_student
from graphopt.calibration.bridge.teacher import Teacher
from graphopt.features import feature_tensors
from graphopt.machine import machine, versions
from graphopt.macs import model_macs
from graphopt.methods import Action, Planner
from graphopt.model_io import load_model
from graphopt.shapes import infer_shapes
from tools.bench.common import run_cli, write_study

COMMAND = "python -m tools.bench.recovery_speed"
BATCH = 16
DROPPED = 3


def chosen_blocks(model, count: int = DROPPED) -> list[str]:
    """`count` droppable blocks spread evenly over the network (deterministic: the same on every run)."""
    droppable = [b.id for b in find_blocks(model, infer_shapes(model)) if b.droppable]
    picks = np.linspace(1, len(droppable) - 2, count).round().astype(int)
    return [droppable[i] for i in dict.fromkeys(picks)]


def student_of(model, dropped: list[str]) -> tuple[Student, list[torch.nn.Parameter], object]:
    """The student recovery trains after dropping `dropped`, its trainable weights, and the pruned model."""
    planner = Planner(model, find_blocks(model, infer_shapes(model)))
    plan = [Action("blocks", block) for block in dropped]
    pruned = planner.apply(plan)
    features = feature_tensors(model)
    student = build_student(pruned, planner.cuts(plan)[0], features,
                            extra_outputs=[o.name for o in pruned.graph.output])
    return student, student.parameters(student.feature_weights(features)), pruned


def time_steps(forward: Callable[[torch.Tensor], list[torch.Tensor]], params: list[torch.nn.Parameter],
               inputs: torch.Tensor, targets: list[torch.Tensor], steps: int, warmup: int = 2) -> float:
    """Median seconds of one step: forward, feature error, backward, Adam update."""
    optimizer = torch.optim.Adam(params, lr=1e-4)
    times = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        loss = feature_error(forward(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_rate(threads: int, size: int = 1024, repeats: int = 5) -> float:
    """Multiply-adds per second of a float32 square matrix product on this machine with `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return repeats * size ** 3 / (time.perf_counter() - start)


def profile_step(forward, params, inputs, targets, rows: int = 12) -> list[dict]:
    """The operators that take most of a step's time (self CPU time, over 3 steps)."""
    from torch.profiler import ProfilerActivity, profile
    optimizer = torch.optim.Adam(params, lr=1e-4)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            loss = feature_error(forward(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "share": e.self_cpu_time_total / total, "calls_per_step": e.count / 3,
             "ms_per_step": e.self_cpu_time_total / 3000} for e in events[:rows]]


# --------------------------------------------------------------------------- native PyTorch

def native_student(name: str, dropped: list[str]):
    """(forward from the first dropped block's input to the features (and logits), trainable parameters, prefix)
    in the authors' PyTorch modules, with the same blocks skipped; `prefix` maps images to the cut tensor."""
    from tools.effnet_lite import _load_torch_model
    model = _load_torch_model(name)
    skipped = {int(block.split(".")[-1]) for block in dropped}
    first = min(skipped)
    kept = [block for index, block in enumerate(model._blocks) if index >= first and index not in skipped]

    def prefix(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = model._swish(model._bn0(model._conv_stem(images)))
            for block in model._blocks[:first]:
                x = block(x)
            return x

    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        for block in kept:
            x = block(x)
        features = model._swish(model._bn1(model._conv_head(x)))
        model._fc(torch.flatten(model._avg_pooling(features), 1))  # the logits, computed as the student does
        return [features]

    params = [p for block in kept for p in block.parameters()] + list(model._conv_head.parameters()) + \
        list(model._bn1.parameters())
    return forward, params, prefix


# --------------------------------------------------------------------------- one model

def overheads(name: str, model, student: Student, features: list[str], data, threads: int) -> dict:
    """Per-step seconds of what surrounds a step in recovery: each augmented copy's augmentation and teacher pass
    over the 80 training images (5 steps of 16 an epoch, `view_epochs` epochs a copy), and the held-out evaluation
    of 20 images every 20 steps."""
    from graphopt.calibration.data.dataset import load_calibration
    from tools.effnet_lite import SIZES
    if data is None:
        return {}
    calibration = load_calibration(data, model, size=(SIZES[name], SIZES[name]), norm="tf", resize="crop")
    train, held = calibration.split(0.2)
    teacher = Teacher(model, [student.cut, *features], threads)
    start = time.perf_counter()
    images = train.augmented(torch.Generator().manual_seed(0))
    augment = time.perf_counter() - start
    start = time.perf_counter()
    teacher(images)
    teaching = time.perf_counter() - start
    values = teacher(held.tensors())
    start = time.perf_counter()
    with torch.no_grad():
        student.forward(values[student.cut])
    steps_per_copy = -(-len(train) // BATCH) * MimicSettings.view_epochs
    return {"augmentation": augment / steps_per_copy, "teacher": teaching / steps_per_copy,
            "view_epochs": MimicSettings.view_epochs,
            "held-out evaluation": (time.perf_counter() - start) / 20, "train_images": len(train),
            "held_images": len(held)}


def measure(name: str, steps: int, threads: int, data) -> dict:
    """Every figure of one model."""
    from tools.effnet_lite import SIZES, model_path
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load_model(model_path(name))
    dropped = chosen_blocks(model)
    student, params, _ = student_of(model, dropped)
    features = feature_tensors(model)
    size = SIZES[name]
    images = torch.randn(BATCH, 3, size, size)
    values = Teacher(model, [student.cut, *features], threads)(images)
    inputs, targets = values[student.cut], [values[f] for f in features]
    graphopt = time_steps(student.forward, params, inputs, targets, steps)
    forward, native_params, prefix = native_student(name, dropped)
    native = time_steps(forward, native_params, prefix(images), targets, steps)
    shapes = infer_shapes(student.onnx_model, 1, {student.cut: (1, *inputs.shape[1:])})
    macs = model_macs(student.onnx_model, shapes) * BATCH
    rate = matmul_rate(threads)
    torch.set_num_threads(threads)
    return {"model": name, "size": size, "dropped": dropped, "cut": student.cut, "batch": BATCH, "steps": steps,
            "trainable_parameters": sum(p.numel() for p in params),
            "graphopt_step_s": graphopt, "native_step_s": native, "forward_macs": macs,
            "matmul_macs_per_s": rate, "floor_step_s": 3 * macs / rate,
            "overheads_per_step_s": overheads(name, model, student, features, data, threads),
            "profile": profile_step(student.forward, params, inputs, targets)}


# --------------------------------------------------------------------------- report

def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = ["# Recovery step speed on EfficientNet-Lite (issue 23)", "",
             f"Regenerate with `{results['command']}`", "",
             f"Machine: {results['machine'].get('cpu', '?')}, torch {results['versions'].get('torch', '?')}, "
             f"{settings['threads']} thread(s); batch {BATCH}, {DROPPED} blocks dropped (spread evenly), median of "
             f"{settings['steps']} steps after 2 warm-up steps. {settings['note']}", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             "| model | dropped | trainable params | graphopt s/step (steps/s) | native PyTorch s/step | floor s/step "
             "| graphopt / native | graphopt / floor |", "|---|---|---|---|---|---|---|---|"]
    for r in results["models"]:
        g, n, f = r["graphopt_step_s"], r["native_step_s"], r["floor_step_s"]
        lines.append(f"| {r['model']} ({r['size']} px) | {', '.join(r['dropped'])} | {r['trainable_parameters']:,} "
                     f"| {g:.3f} ({1 / g:.2f}) | {n:.3f} | {f:.3f} | {g / n:.2f}x | {g / f:.1f}x |")
    for r in results["models"]:
        over = r["overheads_per_step_s"]
        lines += ["", f"## {r['model']}: where a step's time goes", "",
                  f"Student forward: {r['forward_macs'] / 1e9:.2f} G multiply-adds per batch of {BATCH}; matrix "
                  f"product rate {r['matmul_macs_per_s'] / 1e9:.1f} G multiply-adds/s.", ""]
        if over:
            whole = r["graphopt_step_s"] + over["augmentation"] + over["teacher"] + over["held-out evaluation"]
            lines += [f"Around each step (per step, {over['train_images']} training and {over['held_images']} "
                      f"held-out images, each augmented copy serving {over['view_epochs']} "
                      f"epoch{'s' if over['view_epochs'] != 1 else ''}): augmentation "
                      f"{over['augmentation']:.3f} s, teacher pass {over['teacher']:.3f} s, held-out evaluation "
                      f"{over['held-out evaluation']:.3f} s. A step with what surrounds it: {whole:.3f} s, so 1,000 "
                      f"steps take {1000 * whole / 60:.1f} minutes.", ""]
        lines += ["| operator (profile of the graphopt step) | share | calls/step | ms/step |", "|---|---|---|---|"]
        lines += [f"| `{p['op']}` | {100 * p['share']:.1f}% | {p['calls_per_step']:.0f} | {p['ms_per_step']:.1f} |"
                  for p in r["profile"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["lite0", "lite2"], choices=["lite0", "lite1", "lite2"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=Path("/work/data/imagenet/calib-100"),
                   help="calibration images for the augmentation and teacher figures (skipped when missing)")
    p.add_argument("--note", default="", help="a line on the machine's state (e.g. what else was running)")
    p.add_argument("--out", type=Path, default=Path("docs/studies/recovery_speed.md"))
    args = p.parse_args(argv)
    data = args.data if args.data.is_dir() else None
    results = {"command": shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)]),
               "machine": machine(), "versions": versions(),
               "settings": {"steps": args.steps, "threads": args.threads, "note": args.note},
               "models": [measure(name, args.steps, args.threads, data) for name in args.models]}
    write_study(args.out, markdown(results), results)
    return 0


if __name__ == "__main__":
    run_cli(main)
