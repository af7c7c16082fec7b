"""Regenerate docs/results.md, docs/results.png and docs/results.json in one command, on this machine.

    python -m tools.make_results                 # training-free baselines on Fashion-MNIST and EfficientNet-Lite0
    python -m tools.make_results --accelerate    # plus graphopt.accelerate rows (slow: one run per row)
    python -m tools.make_results --accelerate --precisions fp32 int8   # plus INT8 rows and quantize_static

Needs the bench extra and the Debian data (bash tools/install_bench_data.sh). The first run trains the
Fashion-MNIST teacher (cached afterwards).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from graphopt.blocks import find_blocks
from graphopt.errors import GraphoptError
from graphopt.machine import cpu_name
from graphopt.model_io import load_model
from tools.bench.baselines import BENCHES, Bench, baseline_variants, get_bench, measure_rows
from tools.bench.common import run_cli

COMMAND = "python -m tools.make_results"
REPO = Path(__file__).resolve().parent.parent
IMAGENET_PAGE = "results_imagenet.md"  # written by tools/bench/imagenet.py beside the results page
STUDIES = "studies"  # the one-off study reports: this folder beside the results page (docs/studies/)
MARKERS = {"original": "*", "original-repeat": "x", "random": "o", "last-per-stage": "s", "proxy": "^",
           "accelerate": "D", "random + recovery": "v", "ort quantize_static": "P", "accelerate int8": "X"}


# --------------------------------------------------------------------------- accelerate rows (hook)

def accelerate_variants(bench: Bench, original: onnx.ModelProto, sizes: list[int], seeds: list[int],
                        targets: list[float], threads: int | None, overrides: dict, random_recovered: bool = True,
                        log: Callable[[str], None] = print) -> list[tuple[dict, onnx.ModelProto]]:
    """Models from graphopt.accelerate, one per calibration size x seed x target, with their Row fields.

    accelerate gets the folder a user would hand it, the bench's preprocessing preset and resize policy, the same
    runtime threads as the table's timing, and any `overrides` (AccelerateSettings fields). Its own latency and
    agreement go to the row's `extra`; the table's ratio comes from the shared interleaved run.

    With `random_recovered`, each accelerate row gets a twin: as many blocks drawn at random (seeded by the
    calibration seed) and the same recovery (`accelerate(blocks=...)`), which isolates what block choice is worth.
    """
    from graphopt.pipeline import accelerate

    preprocess = bench.accelerate_preprocess
    method = "accelerate int8" if overrides.get("precision") == "int8" else "accelerate"
    recovery = "feature mimicking" + (" + INT8 recovery" if method == "accelerate int8"
                                      and overrides.get("int8_recovery", True) else "")
    variants = []
    for size in sizes:
        for seed in seeds:
            folder = bench.calib_folder(size, seed)
            if method == "accelerate int8":
                variants.append(_ort_int8_variant(bench, original, folder, size, seed))
            for target in targets:
                start = time.perf_counter()
                result = accelerate(original, folder, target_latency=target, threads=threads, preprocess=preprocess,
                                    quiet=True, **overrides)
                wall = time.perf_counter() - start
                report = result.report
                log(f"[{bench.name}] accelerate: {size} images, seed {seed}, target {target}: dropped "
                    f"{','.join(report['dropped'])} in {wall:.0f} s")
                variants.append(({"method": method, "dropped": report["dropped"], "k": len(report["dropped"]),
                                  "seed": seed, "recovery": recovery, "calibration": f"{size} images",
                                  "wall_s": round(wall, 1),
                                  "extra": {"target_latency": target, "settings": overrides,
                                            "own_latency_ratio": report["latency"]["ratio"],
                                            "held_out_agreement": report["agreement_top1"],
                                            "seconds": report["seconds"]}}, result.model))
                if random_recovered and report["dropped"]:
                    droppable = [b.id for b in find_blocks(original) if b.droppable]
                    drawn = sorted(random.Random(seed).sample(droppable, len(report["dropped"])), key=droppable.index)
                    twin = accelerate(original, folder, blocks=drawn, threads=threads, preprocess=preprocess,
                                      quiet=True, **overrides)
                    log(f"[{bench.name}] random + recovery: {size} images, seed {seed}: {','.join(drawn)}")
                    variants.append(({"method": "random + recovery", "dropped": drawn, "k": len(drawn), "seed": seed,
                                      "recovery": recovery, "calibration": f"{size} images",
                                      "extra": {"target_latency": target, "settings": overrides,
                                                "held_out_agreement": twin.report["agreement_top1"]}}, twin.model))
    return variants


def _ort_int8_variant(bench: Bench, original: onnx.ModelProto, folder: Path, size: int,
                      seed: int) -> tuple[dict, onnx.ModelProto]:
    """The user's alternative: onnxruntime quantize_static (QDQ, per-channel) from the same calibration folder."""
    from tools.bench.ort_int8 import folder_images, quantize_static_baseline
    start = time.perf_counter()
    images = folder_images(original, folder, bench.preprocessing["preset"], bench.preprocessing["resize"])
    model = quantize_static_baseline(original, images)
    return ({"method": "ort quantize_static", "dropped": [], "k": 0, "seed": seed, "recovery": "none",
             "calibration": f"{size} images", "wall_s": round(time.perf_counter() - start, 1)}, model)


def _setting(text: str) -> tuple[str, object]:
    """KEY=VALUE from the command line; VALUE parsed as JSON where it can be (numbers, booleans), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise GraphoptError(f"bad --accelerate-set '{text}': expected KEY=VALUE such as recover_iterations=100")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# --------------------------------------------------------------------------- environment

def machine(threads: int | None) -> dict:
    """CPU, threads, runtime and library versions: every result file names them."""
    import onnxruntime
    import torch

    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "threads": threads,
            "runtime": f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)",
            "python": platform.python_version(), "os": platform.platform(), "onnx": onnx.__version__,
            "torch": torch.__version__, "numpy": np.__version__, "commit": commit,
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


# --------------------------------------------------------------------------- writing results

def _mean_std(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def _groups(rows: list[dict]) -> list[list[dict]]:
    """Rows that differ only by seed (random draws, calibration seeds) are shown as one line with mean ± std."""
    groups: OrderedDict[tuple, list[dict]] = OrderedDict()
    for row in rows:
        key = (row["method"], row["k"], row["recovery"], row["calibration"], json.dumps(row["extra"].get(
            "target_latency")), None if row["seed"] is not None else ",".join(row["dropped"]))
        groups.setdefault(key, []).append(row)
    return list(groups.values())


def bench_markdown(result: dict) -> list[str]:
    """One bench's section: what the model is, how it was timed, and the table."""
    record, rows, metric = result["model"], result["rows"], result["metric"]
    has_top5 = "top5" in rows[0]["quality"]
    lines = [f"## {result['title']}", ""]
    if "test_top1" in record:
        lines.append(f"Teacher: {record['recipe']['arch']} trained on all 60,000 training images "
                     f"({record['recipe']['epochs']} epochs, seed {record['recipe']['seed']}): test top-1 "
                     f"**{record['test_top1']:.4f}**; training took {record['train_seconds']:.0f} s wall "
                     f"({record['train_cpu_seconds']:.0f} s CPU) on {record['train_threads']} thread(s) "
                     f"(`python -m tools.fmnist train`).")
    else:
        check = record["check"]
        lines.append(f"Model: {record['params']:,} parameters, ImageNet weights; ONNX export (TorchScript, opset 17) "
                     f"checked on {check['images']} photos: max |PyTorch - onnxruntime| {check['max_abs_diff']:.1e}, "
                     f"same top-1 on {check['top1_same']:.0%}. Agreement is measured on "
                     f"{rows[0]['quality']['views']} views of photos kept out of calibration.")
    base = rows[0]["latency"]
    timing = result["timing"]
    lines += ["", f"Original latency: median {base['median_ms']:.3f} ms (p10 {base['p10_ms']:.3f}, p90 "
                  f"{base['p90_ms']:.3f}) at batch {timing['batch']}; {timing['repeats']} timed runs per model and "
                  f"order after {timing['warmup']} warm-up. p10–p90: the model's percentiles over the original's "
                  f"median.", ""]
    header = ["method", "k", "blocks dropped", "recovery", "calibration", metric]
    header += ["top-5 agreement"] if has_top5 else []
    header += ["latency ratio", "p10–p90", "accelerate s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in _groups(rows):
        first = group[0]
        seeds = sorted({r["seed"] for r in group if r["seed"] is not None})
        dropped = "; ".join(OrderedDict.fromkeys(",".join(r["dropped"]) for r in group)) or "—"
        method = first["method"] + (f" (seeds {','.join(map(str, seeds))})" if seeds else "")
        cells = [method, str(first["k"] or 0), dropped, first["recovery"], first["calibration"] or "—",
                 _mean_std([r["quality"]["top1"] for r in group])]
        cells += [_mean_std([r["quality"]["top5"] for r in group])] if has_top5 else []
        cells += [_mean_std([r["latency_ratio"] for r in group], 3),
                  f"{np.mean([r['ratio_p10'] for r in group]):.3f}–{np.mean([r['ratio_p90'] for r in group]):.3f}",
                  _mean_std([r["wall_s"] for r in group], 0) if first["wall_s"] is not None else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def write_markdown(results: dict, path: Path) -> None:
    env = results["machine"]
    lines = ["# graphopt benchmark results", "",
             f"Regenerate with `{results['command']}` (after `bash tools/install_bench_data.sh`). "
             f"Generated {env['generated']} at commit {env['commit'] or 'unknown'}.", "",
             f"Machine: {env['cpu']}, {env['logical_cpus']} logical CPUs, {env['threads']} runtime thread(s); "
             f"{env['runtime']}; Python {env['python']}, onnx {env['onnx']}, torch {env['torch']}, "
             f"numpy {env['numpy']}; {env['os']}.", "",
             "Every latency ratio comes from one interleaved run of the model against the original in which the "
             "order alternates each round (the model leading a round read up to 7% slower here). "
             "`original-repeat` times the original against itself, "
             "the noise floor of a ratio. One runtime thread by default: on "
             "a shared 2-core machine a second thread spins while another process holds the core. Rows with no "
             "recovery are the training-free baselines (`tools/bench/baselines.py`): `random` draws k droppable blocks, "
             "`last-per-stage` drops the last droppable block of each stage, `proxy` drops the k blocks whose "
             "residual branch changes its input least, ||F(x)|| / ||x|| on Gaussian-noise inputs (data-free). "
             "Calibration folders for accelerate: `python -m tools.fmnist sample` (10/50/100/500 training images, "
             "seeds 0-2) and `python -m tools.effnet_lite calib`. Plot: `results.png`; raw rows: `results.json`.",
             ""]
    lines += imagenet_markdown(path.parent)
    for result in results["benches"].values():
        section = bench_markdown(result)
        made = f"Section made by `{result.get('command', COMMAND)}`, {result.get('generated', env['generated'])}."
        lines += [*section[:2], made, "", *section[2:]]
    lines += studies_markdown(path.parent / STUDIES, path.parent)
    path.write_text("\n".join(lines))


def imagenet_markdown(folder: Path) -> list[str]:
    """The model sections of the labelled-ImageNet page beside the results page (tools/bench/imagenet.py), first:
    labelled top-1 on ImageNet photos is the main yardstick, and the sections after it are Fashion-MNIST and photos
    unlike the deployment data."""
    source = folder / IMAGENET_PAGE
    if not source.is_file():
        return []
    text = source.read_text().splitlines()
    command = next((line for line in text if line.startswith("Regenerate with")), "")
    start = next((i for i, line in enumerate(text) if line.startswith("## ")), len(text))
    warnings = _bold_paragraphs(text[:start])  # what the page says about how it was measured (load, reuse)
    return ["## Labelled ImageNet photos (the main yardstick)", "",
            f"From [{IMAGENET_PAGE}]({IMAGENET_PAGE}) (machine, preprocessing and method notes there; plot: "
            f"[{Path(IMAGENET_PAGE).with_suffix('.png').name}]({Path(IMAGENET_PAGE).with_suffix('.png').name})). "
            f"{command}.", "", *warnings, *("#" + line if line.startswith("## ") else line for line in text[start:]),
            ""]


def _bold_paragraphs(lines: list[str]) -> list[str]:
    """The paragraphs among `lines` that open in bold, each followed by a blank line."""
    kept, inside = [], False
    for line in lines:
        inside = line.startswith("**") or (inside and bool(line.strip()))
        if inside:
            kept.append(line)
        elif kept and kept[-1]:
            kept.append("")
    return kept + ([""] if kept and kept[-1] else [])


def studies_markdown(folder: Path, page: Path | None = None) -> list[str]:
    """The summary table of every methods study in `folder` (docs/studies/methods_*.json, written by
    tools/bench/methods.py), with the command that made it and a link to its every-run table, relative to the
    folder of the page (`page`, default `folder`)."""
    lines = []
    for study in sorted(folder.glob("methods_*.json")):
        every_run = study.with_suffix(".md")
        text = every_run.read_text().splitlines() if every_run.is_file() else []
        data = json.loads(study.read_text())
        if not text or "summary" not in data:
            continue
        made = next((line for line in text if line.startswith("Made by")), "")
        link = Path(os.path.relpath(every_run, page or folder)).as_posix()
        lines += ["", f"## {text[0].lstrip('# ')} ({study.stem})", "", f"{made} Every run: [{every_run.name}]"
                  f"({link}).", "",
                  "| method | runs | quality mean (min–max) | latency ratio mean (min–max) |", "|---|---|---|---|"]
        lines += [f"| {s['method']} | {s['runs']} | {s['quality_mean']:.4f} ({s['quality_min']:.4f}–"
                  f"{s['quality_max']:.4f}) | {s['ratio_mean']:.3f} ({s['ratio_min']:.3f}–{s['ratio_max']:.3f}) |"
                  for s in data["summary"]]
        lines += [f"- {u['method']} (seed {u['seed']}): {u['why']}" for u in data.get("unreachable", [])]
    return lines


def write_plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = list(results["benches"].values())
    fig, axes = plt.subplots(1, len(benches), figsize=(6.5 * len(benches), 4.8), squeeze=False)
    for ax, result in zip(axes[0], benches):
        for method, marker in MARKERS.items():
            rows = [r for r in result["rows"] if r["method"] == method]
            if rows:
                ax.scatter([r["latency_ratio"] for r in rows], [r["quality"]["top1"] for r in rows], marker=marker,
                           s=70 if method == "original" else 36, label=method, alpha=0.8)
        ax.set_xlabel("measured latency ratio to the original (lower is faster)")
        ax.set_ylabel(result["metric"])
        ax.set_title(result["title"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{results['machine']['cpu']}, {results['machine']['runtime']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_bench(bench: Bench, args: argparse.Namespace) -> dict:
    """All rows of one bench: baselines, then accelerate rows when asked, each timed against the same original."""
    original = load_model(bench.model_path())
    variants = baseline_variants(original, args.k, args.seeds)
    if args.accelerate:
        for precision in args.precisions:
            overrides = {**dict(_setting(t) for t in args.accelerate_set), "precision": precision}
            targets = args.int8_targets if precision == "int8" and args.int8_targets else args.targets
            variants += accelerate_variants(bench, original, args.calib_sizes or list(bench.calib_sizes),
                                            args.calib_seeds, targets, args.threads, overrides,
                                            args.random_recovered)
    rows = measure_rows(bench, original, variants, args.threads)
    return {"title": bench.title, "metric": bench.metric, "model": bench.model_record(),
            "preprocessing": bench.preprocessing, "timing": {k: v for k, v in vars(bench.timing).items()
                                                             if k != "input_shapes"},
            "rows": [r.to_dict() for r in rows]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--bench", nargs="+", choices=sorted(BENCHES), default=["fmnist", "lite0"])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 4], help="numbers of blocks to drop")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the random baseline")
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime threads for timing (1: steadiest on a shared 2-core machine)")
    parser.add_argument("--accelerate", action="store_true", help="add graphopt.accelerate rows")
    parser.add_argument("--calib-sizes", type=int, nargs="+", default=None,
                        help="calibration set sizes for accelerate (default: 10 50 100 500 / 100 500)")
    parser.add_argument("--calib-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.65],
                        help="accelerate latency targets, as ratios to the original")
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "int8"], default=["fp32"],
                        help="accelerate rows for each output precision; int8 rows come with the user's alternative, "
                             "onnxruntime quantize_static on the same calibration folder")
    parser.add_argument("--int8-targets", type=float, nargs="+", default=None,
                        help="targets for the int8 rows (default: --targets), ratios to the FP32 original")
    parser.add_argument("--accelerate-set", action="append", default=[], metavar="KEY=VALUE",
                        help="accelerate setting, e.g. recover_iterations=100 (repeatable)")
    parser.add_argument("--no-random-recovered", dest="random_recovered", action="store_false",
                        help="skip the random-blocks-with-the-same-recovery twin of each accelerate row")
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--render", action="store_true",
                        help="run no benchmark: write results.md and results.png again from results.json and the "
                             "methods studies in studies/ beside it")
    args = parser.parse_args(argv)
    if not args.out_dir.is_dir():
        raise GraphoptError(f"output folder {args.out_dir} does not exist")
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    env = machine(args.threads)
    # benches not asked for keep their previous section, so one slow bench need not be rerun with a fast one
    previous = args.out_dir / "results.json"
    if args.render:
        results = json.loads(previous.read_text())
        write_markdown(results, args.out_dir / "results.md")
        write_plot(results, args.out_dir / "results.png")
        return 0
    benches = json.loads(previous.read_text())["benches"] if previous.is_file() else {}
    for name in args.bench:
        benches[name] = {**run_bench(get_bench(name), args), "command": command,
                         "generated": f"{env['generated']}, commit {env['commit'] or 'unknown'}"}
    results = {"command": COMMAND, "machine": env, "benches": benches}
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, args.out_dir / "results.md")
    write_plot(results, args.out_dir / "results.png")
    print(f"wrote {args.out_dir / 'results.md'}, results.png, results.json")
    return 0


if __name__ == "__main__":
    run_cli(main)
