"""EfficientNet-Lite0/1/2 on the labelled ImageNet yardstick: graphopt FP32 and INT8 beside onnxruntime INT8.

Each model's original, onnxruntime INT8 alone and graphopt FP32 and INT8 at several latency targets, scored by
labelled top-1/top-5 on held-apart photos.

Why: agreement on a few unlabelled photos cannot say whether a faster ImageNet model is good enough; labelled
top-1 on ILSVRC2012 validation photos calibration never saw, with a 95% interval, can (shared/benchmarks.md,
sections 0 and 4). Every row is what a user would get: graphopt rows come from the real CLI (`graphopt accelerate`
as a subprocess, its wall time, exit status and --report), the INT8 row from onnxruntime's own quantize_static
(tools/bench/ort_int8.py), and every latency is a ratio to the original timed side by side in one interleaved run.

    python -m tools.bench.imagenet                         # all three models: hours (7 accelerate runs each)
    python -m tools.bench.imagenet --models lite0 --skip-accelerate --eval-limit 100 --out /tmp/smoke.md

Data: `python -m tools.imagenet_data` (see `IMAGENET_DATA=DIR bash tools/install_bench_data.sh`) writes --data.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from graphopt.errors import GraphoptError
from graphopt.model_io import load_model
from graphopt.runtime import TimingSettings, get_backend
from tools.bench.baselines import Bench, measure_rows, paired_timing
from tools.bench.common import BenchDataMissing, cache_dir, run_cli, write_study
from tools.effnet_lite import SIZES, input_spec, model_path
from tools.imagenet_data import ACUITY_SIZES, INSTALL_HINT
from tools.make_results import _ort_int8_variant, machine

COMMAND = "python -m tools.bench.imagenet"
REPO = Path(__file__).resolve().parents[2]
DATA = Path("/work/data/imagenet")
TIMING = TimingSettings(batch=1, warmup=10, repeats=100)
CHECK_IMAGES = 16  # evaluation photos the ONNX export is checked on against PyTorch
TITLES = {"lite0": "EfficientNet-Lite0", "lite1": "EfficientNet-Lite1", "lite2": "EfficientNet-Lite2"}
METHOD_ORDER = ("original", "ort quantize_static", "graphopt default", "graphopt fp32", "graphopt int8",
                "original-repeat")
MARKERS = {"original": "*", "ort quantize_static": "P", "graphopt default": "s", "graphopt fp32": "D", "graphopt int8": "X",
           "original-repeat": "x"}


# --------------------------------------------------------------------------- data and models

@dataclass(frozen=True)
class EvalSet:
    """The labelled images every row is scored on: a folder and its `NAME LABEL` file."""

    images: Path
    labels: Path
    count: int


def eval_set(data: Path, limit: int | None, work: Path) -> EvalSet:
    """The prepared evaluation set, or its first `limit` images (labels-file order) linked into `work` for a smoke
    run: evaluate() scores whole folders, so a subset must be a folder of its own."""
    images, labels = data / "eval" / "images", data / "eval" / "labels.txt"
    if not labels.is_file():
        raise BenchDataMissing(f"{labels} not found: prepare the ImageNet sets ({INSTALL_HINT}) or give --data")
    lines = [line for line in labels.read_text().splitlines() if line.strip()]
    if limit is None or limit >= len(lines):
        return EvalSet(images, labels, len(lines))
    subset = work / f"eval-first-{limit}"
    (subset / "images").mkdir(parents=True, exist_ok=True)
    for old in (subset / "images").iterdir():
        old.unlink()
    for line in lines[:limit]:
        name = line.split()[0]
        (subset / "images" / name).symlink_to((images / name).resolve())
    (subset / "labels.txt").write_text("\n".join(lines[:limit]) + "\n")
    return EvalSet(subset / "images", subset / "labels.txt", limit)


def check_views(evaluation: EvalSet, size: int, count: int = CHECK_IMAGES) -> np.ndarray:
    """The first evaluation photos as model inputs at `size`, made by graphopt's own preprocessing (tf norm, crop),
    so the export is checked on exactly what the table scores."""
    import torch

    from graphopt.calibration.data.images import decode_rgb, read_limited
    from graphopt.calibration.data.preprocess import NORM_PRESETS, Preprocess

    mean, std = NORM_PRESETS[input_spec(size)["preset"]]
    prep = Preprocess(size=(size, size), mean=mean, std=std)
    names = [line.split()[0] for line in evaluation.labels.read_text().splitlines()[:count] if line.strip()]
    stored = torch.stack([prep.fit(decode_rgb(read_limited(evaluation.images / name))) for name in names])
    return prep.evaluate(stored).numpy()


def export(name: str, evaluation: EvalSet) -> Path:
    """The model's ONNX export, cached by tools/effnet_lite.py and checked against PyTorch on ImageNet photos."""
    return model_path(name, check_views(evaluation, SIZES[name]))


def calib_folder(data: Path, size: int) -> Path:
    folder = data / f"calib-{size}"
    if not folder.is_dir():
        raise BenchDataMissing(f"{folder} not found: prepare the ImageNet sets ({INSTALL_HINT}) or give --data")
    return folder


def calibration_label(size: int) -> str:
    """Where a calibration set's photos come from (tools/imagenet_data.py): ILSVRC2012 validation photos for the
    acuity sizes, imagenette train photos (10 classes) otherwise; the table must say which."""
    source = "ILSVRC2012 val" if size in ACUITY_SIZES else "imagenette train, 10 classes"
    return f"{size} images ({source})"


def labelled_quality(original: onnx.ModelProto, evaluation: EvalSet, preprocess: dict):
    """quality(model) for measure_rows: labelled top-1/top-5 and agreement with the original, each with its Wilson
    95% interval, on the evaluation set (graphopt.evaluate, the same code as `graphopt eval`)."""
    from graphopt.evaluate import evaluate

    def quality(model: onnx.ModelProto) -> dict:
        scored = evaluate([original, model], evaluation.images, labels=evaluation.labels, preprocess=preprocess,
                          progress=False)
        return {key: value for key, value in scored.models[1].to_dict().items()
                if key not in ("name", "path", "preprocess")}

    return quality


def imagenet_bench(name: str, path: Path, original: onnx.ModelProto, evaluation: EvalSet, data: Path) -> Bench:
    """The model as a tools.bench.baselines Bench, so rows are timed and scored by the shared `measure_rows`."""
    spec = input_spec(SIZES[name])
    preprocess = {"norm": spec["preset"], "resize": spec["resize"]}
    return Bench(name, f"{TITLES[name]} ({SIZES[name]} px)", model_path=lambda: path,
                 model_record=lambda: json.loads(path.with_suffix(".json").read_text()),
                 quality=labelled_quality(original, evaluation, preprocess), metric="labelled top-1", timing=TIMING,
                 calib_folder=lambda size, seed: calib_folder(data, size), calib_sizes=(100, 500),
                 preprocessing=spec)


# --------------------------------------------------------------------------- targets and accelerate runs

def int8_targets(int8_ratio: float, factors: list[float]) -> list[float]:
    """INT8 targets as multiples of INT8 alone's measured ratio: 1.0x asks for no more than INT8 gives, lower
    factors for what only INT8 plus cuts can reach. Rounded to 3 places (what the command line shows)."""
    targets = [round(int8_ratio * f, 3) for f in factors]
    bad = [t for t in targets if not 0 < t < 1]
    if bad:
        raise GraphoptError(f"INT8 targets {bad} (factors {factors} of INT8 alone's ratio {int8_ratio:.3f}) are not "
                            "in (0, 1)")
    return targets


@dataclass(frozen=True)
class Job:
    """One `graphopt accelerate` run: output precision, target ratio, calibration set size; `factor` is the
    multiple of INT8 alone's ratio an INT8 target was made from. Precision "default" with no target is the
    command as a user first types it (no goal, no precision: accelerate picks both)."""

    precision: str
    target: float | None
    calib: int
    factor: float | None = None

    @property
    def tag(self) -> str:
        target = "" if self.target is None else f"-t{self.target:.3f}"
        return f"{self.precision}{target}-c{self.calib}"


def plan_jobs(fp32: list[float], int8: list[float], factors: list[float], calib: int, extra_calib: int | None
              ) -> list[Job]:
    """Every accelerate run of one model: the default command (no goal), FP32 and INT8 at each target on the main
    calibration set, and FP32 at the middle target on `extra_calib` images (the 500-image row)."""
    jobs = [Job("default", None, calib)] + [Job("fp32", t, calib) for t in fp32] + [Job("int8", t, calib, f) for t, f in zip(int8, factors)]
    if extra_calib and fp32:
        jobs.append(Job("fp32", sorted(fp32)[len(fp32) // 2], extra_calib))
    return jobs


def accelerate_command(model: Path, calib: Path, output: Path, report: Path, job: Job, threads: int,
                       time_budget: float | None) -> list[str]:
    """The command a user types (run through this interpreter, so the venv's graphopt is the one timed)."""
    command = [sys.executable, "-m", "graphopt", "accelerate", str(model), "--calib", str(calib), "-o", str(output),
               "--norm", "tf", "--resize", "crop", "--threads", str(threads), "--report", str(report), "--quiet"]
    command += [] if job.target is None else ["--target-latency", str(job.target)]
    command += ["--precision", "int8"] if job.precision == "int8" else []
    return command + (["--time-budget", str(time_budget)] if time_budget is not None else [])


def run_accelerate(command: list[str], output: Path, report: Path, reuse: bool) -> dict:
    """Run one accelerate command; {exit_code, wall_s, report (dict or None), log tail}. Its output goes to a log
    beside the report. With `reuse`, a finished run of the same command in the work folder is taken as it is."""
    record, log = report.with_suffix(".run.json"), report.with_suffix(".log")
    if reuse and record.is_file() and report.is_file():
        previous = json.loads(record.read_text())
        if previous["command"] == command[1:] and (previous["exit_code"] != 0 or output.is_file()):
            return {**previous, "report": json.loads(report.read_text()), "reused": True}
    for stale in (output, report):
        stale.unlink(missing_ok=True)
    start = time.perf_counter()
    with log.open("w") as stream:
        code = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, cwd=REPO).returncode
    wall = round(time.perf_counter() - start, 1)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    record.write_text(json.dumps({"command": command[1:], "exit_code": code, "wall_s": wall, "log_tail": tail}))
    return {"command": command[1:], "exit_code": code, "wall_s": wall, "log_tail": tail,
            "report": json.loads(report.read_text()) if report.is_file() else None}


def status_of(run: dict) -> str:
    """'ok', 'target not met' (exit 3, graphopt's own verdict) or 'error (exit N)'."""
    report = run.get("report") or {}
    if run["exit_code"] == 0 and report.get("status", "ok") == "ok":
        return "ok"
    return "target not met" if run["exit_code"] == 3 else f"error (exit {run['exit_code']})"


def accelerate_fields(job: Job, run: dict) -> dict:
    """The Row fields of one accelerate run, from its exit status and report alone (no model needed): what was cut,
    graphopt's own latency ratio and held-out agreement, per-stage seconds, or the error of a run that failed."""
    report = run.get("report") or {}
    dropped = list(report.get("dropped") or [])
    status = status_of(run)
    extra = {"target_latency": job.target, "int8_factor": job.factor, "status": status,
             "exit_code": run["exit_code"], "command": "graphopt " + shlex.join(run["command"][2:]),
             "pruned": report.get("pruned") or {}, "split": report.get("split") or {},
             "own_latency_ratio": (report.get("latency") or {}).get("ratio"),
             "held_out_agreement": report.get("agreement_top1"), "report_rows": report.get("rows"),
             "seconds": report.get("seconds") or {}, "reused": bool(run.get("reused"))}
    if status != "ok":
        extra["error"] = report.get("error") or " / ".join(run.get("log_tail") or []) or "no report written"
    recovery = {"fp32": "feature mimicking", "int8": "feature mimicking + INT8 recovery"}.get(
        job.precision, "as accelerate chooses")
    return {"method": f"graphopt {job.precision}", "dropped": dropped, "k": len(dropped), "seed": None,
            "recovery": recovery, "calibration": calibration_label(job.calib), "wall_s": run["wall_s"],
            "extra": extra}


def unmeasured_row(bench: str, fields: dict) -> dict:
    """A row for a run that wrote no model (target not met, error): no quality, no latency, the reason kept."""
    return {"bench": bench, "quality": None, "latency": None, "latency_ratio": None, "ratio_p10": None,
            "ratio_p90": None, **fields}


# --------------------------------------------------------------------------- one model

def int8_alone_ratio(backend, original: onnx.ModelProto, int8: onnx.ModelProto, record: Path, reuse: bool
                     ) -> float:
    """INT8 alone's latency ratio, which the INT8 targets are made from. Kept in the work folder, so that with
    --reuse a rerun asks for the same targets and finds the accelerate runs it already made."""
    if reuse and record.is_file():
        return json.loads(record.read_text())["ratio"]
    ratio = paired_timing(backend, original, int8)["latency_ratio"]
    record.write_text(json.dumps({"ratio": ratio}))
    return ratio


def accelerate_rows(name: str, path: Path, jobs: list[Job], args: argparse.Namespace, folder: Path
                    ) -> tuple[list[tuple[dict, onnx.ModelProto]], list[dict]]:
    """Run every job through the CLI: (Row fields, model) of the runs that wrote a model, to be timed and scored,
    and finished rows for those that did not."""
    variants, unmeasured = [], []
    for job in jobs:
        output, report = folder / f"{job.tag}.onnx", folder / f"{job.tag}.report.json"
        command = accelerate_command(path, calib_folder(args.data, job.calib), output, report, job, args.threads,
                                     args.time_budget)
        fields = accelerate_fields(job, run_accelerate(command, output, report, args.reuse))
        print(f"[{name}] {fields['method']} @ {job.target} ({job.calib} images): {fields['extra']['status']}, "
              f"{fields['wall_s']:.0f} s, cut {fields['k']} block(s), {len(fields['extra']['pruned'])} group(s)",
              flush=True)
        if fields["extra"]["status"] == "ok":
            variants.append((fields, load_model(output)))
        else:
            unmeasured.append(unmeasured_row(name, fields))
    return variants, unmeasured


def run_model(name: str, args: argparse.Namespace, evaluation: EvalSet, work: Path) -> dict:
    """Every row of one model: INT8 alone first (its measured ratio sets the INT8 targets), then each accelerate
    run, then all models timed against the original and scored on the labelled images."""
    path = export(name, evaluation)
    original = load_model(path)
    bench = imagenet_bench(name, path, original, evaluation, args.data)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    int8_fields, int8_model = _ort_int8_variant(bench, original, calib_folder(args.data, args.calib), args.calib,
                                                None)
    int8_fields["calibration"] = calibration_label(args.calib)
    backend = get_backend("onnxruntime", TIMING, threads=args.threads)
    int8_ratio = int8_alone_ratio(backend, original, int8_model, folder / f"int8-alone-c{args.calib}.json",
                                  args.reuse)
    print(f"[{name}] onnxruntime quantize_static: {int8_fields['wall_s']} s, latency x{int8_ratio:.3f} "
          "(sets the INT8 targets)", flush=True)
    jobs = [] if args.skip_accelerate else plan_jobs(
        args.fp32_targets, int8_targets(int8_ratio, args.int8_factors), args.int8_factors, args.calib,
        500 if name in args.calib_500_models else None)
    variants, unmeasured = accelerate_rows(name, path, jobs, args, folder)
    rows = [row.to_dict() for row in measure_rows(bench, original, [(int8_fields, int8_model), *variants],
                                                  args.threads)]
    return {"title": bench.title, "model": bench.model_record(), "preprocessing": bench.preprocessing,
            "timing": {k: v for k, v in vars(TIMING).items() if k != "input_shapes"},
            "runtime": backend.describe(), "int8_alone_ratio_for_targets": int8_ratio,
            "load_average": {"before": load_before, "after": os.getloadavg()},
            "rows": rows[:-1] + unmeasured + rows[-1:]}


# --------------------------------------------------------------------------- rendering

def _pct(value: float | None, interval: list[float] | None = None) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.1f}" + (f" ({100 * interval[0]:.1f}–{100 * interval[1]:.1f})" if interval else "")


def _target(row: dict) -> str:
    extra = row.get("extra") or {}
    target = extra.get("target_latency")
    if target is None:
        return "none (no goal)" if row["method"] == "graphopt default" else "—"
    factor = extra.get("int8_factor")
    return f"{target:.3f}" + (f" ({factor:g} × INT8 alone)" if factor is not None else "")


def _cuts(row: dict) -> str:
    """What a row removed, in words: blocks dropped, channel groups pruned, convolutions split, INT8."""
    extra = row.get("extra") or {}
    parts = [f"{len(row['dropped'])} block(s)"] if row["dropped"] else []
    parts += [f"{len(extra['pruned'])} group(s) pruned"] if extra.get("pruned") else []
    parts += [f"{len(extra['split'])} conv(s) split"] if extra.get("split") else []
    served = [r.get("precision") for r in extra.get("report_rows") or [] if r.get("model") == "graphopt"]
    parts += ["INT8"] if "int8" in row["method"] or "quantize" in row["method"] or served == ["int8"] else []
    return " + ".join(parts) or "—"


def row_cells(row: dict) -> list[str]:
    """One table line: method, target, calibration, status, top-1/top-5/agreement with intervals, latency ratio
    with its p10-p90, cuts, wall time."""
    quality = row.get("quality") or {}
    status = (row.get("extra") or {}).get("status", "ok")
    latency = "—" if row["latency_ratio"] is None else \
        f"{row['latency_ratio']:.3f} ({row['ratio_p10']:.3f}–{row['ratio_p90']:.3f})"
    return [row["method"], _target(row), row.get("calibration") or "—", status,
            _pct(quality.get("top1"), quality.get("top1_interval")),
            _pct(quality.get("top5"), quality.get("top5_interval")),
            _pct(quality.get("agreement_top1"), quality.get("agreement_top1_interval")), latency, _cuts(row),
            "—" if row.get("wall_s") is None else f"{row['wall_s']:.0f}"]


def main_calibration(row: dict, calib: int) -> bool:
    """Whether a row used the main calibration set (rows with no calibration, like the original, count as main)."""
    return row.get("calibration") is None or row["calibration"].startswith(f"{calib} ")


def display_order(rows: list[dict], calib: int) -> list[dict]:
    """Original, INT8 alone, graphopt FP32 then INT8 (the main calibration set first, loosest target first), noise
    floor last."""
    def key(row: dict):
        target = (row.get("extra") or {}).get("target_latency")
        return (METHOD_ORDER.index(row["method"]) if row["method"] in METHOD_ORDER else len(METHOD_ORDER),
                not main_calibration(row, calib), -(target or 0))
    return sorted(rows, key=key)


def model_section(result: dict, calib: int) -> list[str]:
    """One model's section: the model and its export check, the original's latency, the table, failed runs."""
    record, rows = result["model"], result["rows"]
    check, base = record["check"], rows[0]["latency"]
    scored = rows[0]["quality"]["images"]
    header = ["method", "target", "calibration", "status", "top-1 % (95%)", "top-5 % (95%)",
              "agreement % (95%)", "latency ratio (p10–p90)", "cuts", "wall s"]
    lines = [f"## {result['title']}", "",
             f"{record['params']:,} parameters; ONNX export (TorchScript, opset 17) checked on {check['images']} "
             f"evaluation photos: max |PyTorch − onnxruntime| {check['max_abs_diff']:.1e}, same top-1 on "
             f"{check['top1_same']:.0%}. Input {record['input']['crop']} px, short side resized to "
             f"{record['input']['resize_short_side']}, centre crop, (x − 127) / 128.", "",
             f"Original: median {base['median_ms']:.2f} ms (p10 {base['p10_ms']:.2f}, p90 {base['p90_ms']:.2f}) "
             f"at batch 1. INT8 targets are multiples of INT8 alone's ratio, measured before the accelerate runs "
             f"({result['int8_alone_ratio_for_targets']:.3f}). {scored} labelled images scored. Load average "
             f"(1 min) {result['load_average']['before'][0]:.2f} before this model, "
             f"{result['load_average']['after'][0]:.2f} after.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ordered = display_order(rows, calib)
    lines += ["| " + " | ".join(row_cells(row)) + " |" for row in ordered]
    failed = [row for row in ordered if (row.get("extra") or {}).get("status", "ok") != "ok"]
    if failed:
        lines += ["", "Runs that wrote no model (graphopt's own figures):"]
        lines += [f"- {row['method']} @ {_target(row)}, {row['calibration']}: {row['extra']['error']}"
                  for row in failed]
    return lines + [""]


def markdown(results: dict, plot_name: str) -> str:
    """The whole section: the command that regenerates it first, then where and how it was measured, then one
    table per model."""
    env, settings = results["machine"], results["settings"]
    runtime = next(iter(results["models"].values()))["runtime"] if results["models"] else {}
    limit = settings["eval_limit"]
    lines = ["# Labelled ImageNet results: EfficientNet-Lite with graphopt and onnxruntime INT8", "",
             f"Regenerate with `{results['command']}`", "",
             f"Generated {env['generated']} at commit {env['commit'] or 'unknown'}.", "",
             f"Machine: {env['cpu']}, {env['logical_cpus']} logical CPUs; {env['runtime']}, "
             f"{settings['threads']} intra-op thread(s), no spinning (allow_spinning=0), batch 1, "
             f"{runtime.get('repeats', TIMING.repeats)}+ timed rounds after {runtime.get('warmup', TIMING.warmup)} "
             f"warm-up, rounds added while the ratio's noise exceeds {TIMING.noise_threshold} (up to "
             f"{TIMING.max_seconds:g} s); accelerate run with `--threads {settings['threads']}`"
             + (f", `--time-budget {settings['time_budget']}`" if settings["time_budget"] is not None else
                " and its default time budget") + f". Python {env['python']}, onnx {env['onnx']}, torch "
             f"{env['torch']}; {env['os']}.", "",
             "**Timed with nothing else running on the machine.** (The operator who runs the command makes this "
             "true; the load average beside each model is the check.)", "",
             f"Data: `{settings['data']}` (tools/imagenet_data.py, manifest seed {results['data']['seed']}): "
             f"calibration sets of ILSVRC2012 validation photos (50/100) and imagenette train photos (500, 10 "
             f"classes); scored on {'the first ' + str(limit) + ' of ' if limit else ''}the "
             f"{results['data']['eval_images']} labelled ILSVRC2012 validation photos no calibration set used"
             + (" (**a smoke run, not the full set**)" if limit else "") + ". Preprocessing as the authors define "
             "it, with graphopt's `--norm tf --resize crop` everywhere (graphopt's resize is bilinear with "
             "antialiasing, not bicubic).", "",
             "Quality: labelled top-1 and top-5, and top-1 agreement with the original, each with its Wilson 95% "
             "interval (graphopt.evaluate). Latency ratio: the row's median over the original's, the two timed in "
             "one interleaved run (order alternating each round); p10–p90 are the row's percentiles over the "
             "original's median; `original-repeat` times the original against itself (the noise floor). "
             "`ort quantize_static`: onnxruntime's own static INT8 (QDQ, per-channel weights, uint8 activations) "
             "on the same calibration images, as a user would run it (tools/bench/ort_int8.py); its wall time includes "
             "decoding the images. `graphopt` rows: `graphopt accelerate MODEL --calib DIR -o OUT --norm tf "
             "--resize crop [--target-latency T] [--precision int8] --threads 1 --report R.json`; `graphopt "
             "default` is the command with no goal and no precision (the fastest model inside the default 1-point "
             "accuracy floor); wall time of the whole command; exit status 3 (target or accuracy floor not met) is "
             "a row of its own.", "",
             f"Plot: ![latency vs top-1]({plot_name}); raw rows and reports: the JSON beside this file.", ""]
    for result in results["models"].values():
        lines += model_section(result, settings["calib"])
    return "\n".join(lines)


def plot_label(row: dict, calib: int) -> str:
    """The legend entry of a row: its method, with the calibration set where it is not the main one."""
    return row["method"] if main_calibration(row, calib) else f"{row['method']}, {row['calibration'].split(' (')[0]}"


def write_plot(results: dict, path: Path) -> None:
    """Latency ratio (x) against labelled top-1 (y, with its 95% interval), one panel per model, one marker per
    method, every measured row; graphopt rows are labelled with their target."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"].values())
    fig, axes = plt.subplots(1, max(len(models), 1), figsize=(6 * max(len(models), 1), 4.8), squeeze=False)
    fallback = iter("osv^<>ph")
    markers: dict[str, str] = {}
    colours: dict[str, str] = {}  # one colour per method in every panel
    for ax, result in zip(axes[0], models):
        measured = [r for r in result["rows"] if r["latency_ratio"] is not None]
        for label in dict.fromkeys(plot_label(r, results["settings"]["calib"]) for r in measured):
            rows = [r for r in measured if plot_label(r, results["settings"]["calib"]) == label]
            marker = markers.setdefault(label, MARKERS.get(label) or next(fallback, "o"))
            top1 = np.array([r["quality"]["top1"] for r in rows])
            spans = np.array([r["quality"]["top1_interval"] for r in rows]).T
            colour = colours.setdefault(label, f"C{len(colours) % 10}")
            ax.errorbar([r["latency_ratio"] for r in rows], 100 * top1, yerr=100 * np.abs(spans - top1),
                        fmt=marker, color=colour, capsize=3, alpha=0.8, label=label,
                        markersize=9 if label == "original" else 6)
            for row in rows:
                if row["method"].startswith("graphopt"):
                    target = row["extra"]["target_latency"]
                    ax.annotate("no goal" if target is None else f"{target:g}", (row["latency_ratio"],
                                100 * row["quality"]["top1"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("latency ratio to the original (1 thread, measured side by side)")
        ax.set_ylabel("labelled top-1 % (95% interval)")
        ax.set_title(result["title"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{results['machine']['cpu']}, {results['machine']['runtime']}, "
                 f"{results['settings']['threads']} thread(s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command line

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=sorted(SIZES), default=sorted(SIZES))
    p.add_argument("--calib", type=int, default=100, help="calibration set of the main rows (calib-N under --data)")
    p.add_argument("--calib-500-models", nargs="*", choices=sorted(SIZES), default=["lite2"], metavar="MODEL",
                   help="models that get one more graphopt fp32 row, at the middle target, calibrated on calib-500 "
                        "(default lite2: one such row answers whether more images help; none: no such row)")
    p.add_argument("--fp32-targets", type=float, nargs="*", default=[0.9, 0.8, 0.7],
                   help="graphopt fp32 latency targets (ratios to the original)")
    p.add_argument("--int8-factors", type=float, nargs="*", default=[1.0, 0.85, 0.7],
                   help="graphopt int8 targets as multiples of INT8 alone's measured ratio (none: no int8 rows)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="passed to accelerate (default: accelerate's own)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads for timing and for accelerate")
    p.add_argument("--eval-limit", type=int, default=None, metavar="N",
                   help="score only the first N evaluation images (smoke runs)")
    p.add_argument("--skip-accelerate", action="store_true", help="only the original and INT8 alone")
    p.add_argument("--reuse", action="store_true",
                   help="take accelerate runs already in --work with the same command as they are")
    p.add_argument("--data", type=Path, default=DATA, help="prepared ImageNet sets (tools/imagenet_data.py)")
    p.add_argument("--work", type=Path, default=None,
                   help="accelerate outputs, reports and logs (default ~/.cache/graphopt-bench/imagenet)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results_imagenet.md",
                   help="Markdown to write; the JSON and PNG go beside it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.eval_limit is not None and args.eval_limit < 1:
        raise GraphoptError(f"--eval-limit must be at least 1 (got {args.eval_limit})")
    if not args.out.parent.is_dir():
        raise GraphoptError(f"output folder {args.out.parent} does not exist")
    work = args.work or cache_dir("imagenet")
    work.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((args.data / "manifest.json").read_text()) if (args.data / "manifest.json").is_file() \
        else {}
    evaluation = eval_set(args.data, args.eval_limit, work)
    results = {"command": shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)]),
               "machine": machine(args.threads),
               "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "data": {"seed": manifest.get("seed"), "sources": manifest.get("sources"),
                        "eval_images": (manifest.get("sets", {}).get("eval") or {}).get("count", evaluation.count),
                        "scored": evaluation.count},
               "models": {}}
    plot = args.out.with_suffix(".png")
    for name in args.models:
        results["models"][name] = run_model(name, args, evaluation, work)
        write_plot(results, plot)  # written after every model: a run of hours keeps what it has measured
        write_study(args.out, markdown(results, plot.name), results)
    return 0


if __name__ == "__main__":
    run_cli(main)
