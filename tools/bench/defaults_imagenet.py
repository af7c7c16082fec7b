"""The defaults tuned on wallpaper photos, re-checked on labelled ImageNet photos: one table per choice.

Why: scoring (KL vs recoverability), INT8 recovery on/off, the channel order and the give-back after recovery were
chosen on photos unlike ImageNet, where every change flipped many low-margin predictions. Each choice is re-checked
here as a user would meet it: `graphopt accelerate` on 100 ImageNet calibration photos at one latency target, once
per setting, every other option the same, and the model it writes scored by labelled top-1 on the 1,200 held-apart
ILSVRC2012 validation photos (with its Wilson 95% interval and agreement with the original).

The runs are made with `--max-accuracy-drop none` so that every setting hands back a model at the target and the
settings are compared on what they produce; the give-back table is the exception: it puts the floor's run (give-back
on, `--keep-best`) beside the same command without the floor. The latency ratio is graphopt's own final measurement
(its report), not a side-by-side timing against the other settings.

    python -m tools.bench.defaults_imagenet --models lite0                  # 8 accelerate runs, about 70 minutes
    python -m tools.bench.defaults_imagenet --models lite0 --eval-limit 50 --time-budget 2 --out /tmp/smoke.md
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from graphopt.errors import GraphoptError
from graphopt.model_io import load_model
from tools.bench.common import cache_dir, run_cli, write_study
from tools.bench.imagenet import (DATA, REPO, TITLES, Job, accelerate_command, calib_folder, eval_set, export,
                                  labelled_quality, run_accelerate, status_of)
from tools.effnet_lite import SIZES, input_spec
from tools.make_results import machine

COMMAND = "python -m tools.bench.defaults_imagenet"
NO_FLOOR = ("--max-accuracy-drop", "none")


@dataclass(frozen=True)
class Setting:
    """One row of one question's table: the setting's name and the accelerate flags that make it."""

    question: str
    name: str
    precision: str
    flags: tuple[str, ...]

    def tag(self, target: float) -> str:
        """The run's file stem: the same command (flags and target) is one run, shared between questions."""
        words = "".join(part.strip("-").replace(" ", "") for part in self.flags) or "default"
        return f"{self.precision}-t{target:.3f}-{words}"


SETTINGS = (
    Setting("scoring", "kl (default)", "fp32", NO_FLOOR),
    Setting("scoring", "recoverability (PRACTISE)", "fp32", (*NO_FLOOR, "--scoring", "recoverability")),
    Setting("channel order (filters only)", "refit (default)", "fp32", (*NO_FLOOR, "--methods", "filters")),
    Setting("channel order (filters only)", "taylor", "fp32",
            (*NO_FLOOR, "--methods", "filters", "--importance", "taylor")),
    Setting("channel order (filters only)", "dagger", "fp32",
            (*NO_FLOOR, "--methods", "filters", "--importance", "dagger")),
    Setting("INT8 recovery", "on (default)", "int8", NO_FLOOR),
    Setting("INT8 recovery", "off (--no-int8-recovery)", "int8", (*NO_FLOOR, "--no-int8-recovery")),
    Setting("give-back after recovery", "off (no floor)", "fp32", NO_FLOOR),
    Setting("give-back after recovery", "on (default floor, --keep-best)", "fp32", ("--keep-best",)),
)


def run_setting(name: str, model: Path, setting: Setting, target: float, args: argparse.Namespace, folder: Path,
                quality) -> dict:
    """One accelerate run (or the same command's earlier run, with --reuse) and the labelled quality of what it
    wrote; a run that wrote nothing keeps its exit status and error."""
    tag = setting.tag(target)
    output, report = folder / f"{tag}.onnx", folder / f"{tag}.report.json"
    command = accelerate_command(model, calib_folder(args.data, args.calib), output, report,
                                 Job(setting.precision, target, args.calib), args.threads, args.time_budget)
    run = run_accelerate(command + list(setting.flags), output, report, args.reuse)
    data = run.get("report") or {}
    chosen = next((point for point in data.get("frontier") or [] if point.get("chosen")), None)  # --keep-best's
    row = {"question": setting.question, "setting": setting.name, "target": target, "status": status_of(run),
           "exit_code": run["exit_code"], "wall_s": run["wall_s"], "command": "graphopt " + shlex.join(run["command"][2:]),
           "dropped": list(data.get("dropped") or []), "pruned": data.get("pruned") or {},
           "own_latency_ratio": (data.get("latency") or {}).get("ratio") or (chosen or {}).get("ratio"),
           "estimated_loss": (((data.get("quality") or {}).get("estimate") or (chosen or {}).get("estimate") or {})
                              .get("points")),
           "given_back": (data.get("quality") or {}).get("given_back") or [], "quality": None,
           "steps": ((data.get("budget") or {}).get("recovery_steps")),
           "error": data.get("error") or (None if run["exit_code"] == 0 else " / ".join(run.get("log_tail") or []))}
    if output.is_file():
        row["quality"] = quality(load_model(output))
    print(f"[{name}] {setting.question} / {setting.name}: {row['status']}, {row['wall_s']} s", flush=True)
    return row


def run_model(name: str, args: argparse.Namespace, work: Path) -> dict:
    """Every setting of one model at the model's two targets (FP32 and INT8), each distinct command run once."""
    evaluation = eval_set(args.data, args.eval_limit, work)
    path = export(name, evaluation)
    original = load_model(path)
    spec = input_spec(SIZES[name])
    quality = labelled_quality(original, evaluation, {"norm": spec["preset"], "resize": spec["resize"]})
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    targets = {"fp32": args.fp32_target, "int8": args.int8_target}
    done: dict[str, dict] = {}
    rows = []
    for setting in SETTINGS:
        target = targets[setting.precision]
        tag = setting.tag(target)
        if tag not in done:
            done[tag] = run_setting(name, path, setting, target, args, folder, quality)
        rows.append({**done[tag], "question": setting.question, "setting": setting.name})
    return {"title": f"{TITLES[name]} ({SIZES[name]} px)", "original": quality(original), "rows": rows,
            "evaluated": evaluation.count}


def _pct(quality: dict | None, key: str) -> str:
    if not quality or quality.get(key) is None:
        return "—"
    low, high = quality[f"{key}_interval"]
    return f"{100 * quality[key]:.1f} ({100 * low:.1f}–{100 * high:.1f})"


def _cut(row: dict) -> str:
    groups = len(row["pruned"])  # {group's producer: channels removed}
    back = f", {len(row['given_back'])} given back" if row["given_back"] else ""
    return f"{len(row['dropped'])} block(s), {groups} channel group(s){back}"


def question_table(result: dict, question: str) -> list[str]:
    lines = [f"#### {question}", "", "| setting | status | top-1 % (95%) | agreement % (95%) | graphopt's ratio | "
             "estimated loss (points) | cut | recovery steps | wall s |", "|---|---|---|---|---|---|---|---|---|"]
    for row in (r for r in result["rows"] if r["question"] == question):
        ratio = "—" if row["own_latency_ratio"] is None else f"{row['own_latency_ratio']:.3f}"
        loss = "—" if row["estimated_loss"] is None else f"{row['estimated_loss']:.2f}"
        lines.append(f"| {row['setting']} (target {row['target']:g}) | {row['status']} | {_pct(row['quality'], 'top1')} "
                     f"| {_pct(row['quality'], 'agreement_top1')} | {ratio} | {loss} | {_cut(row)} | {row['steps']} | {row['wall_s']} |")
    return lines + [""]


def markdown(results: dict) -> str:
    env = results["machine"]
    lines = ["# The wallpaper-tuned defaults on labelled ImageNet photos", "", f"Regenerate with `{results['command']}`",
             "", f"Generated {env['generated']} at commit {env['commit'] or 'unknown'} on {env['cpu']} "
             f"({env['logical_cpus']} logical CPUs), {env['runtime']}, accelerate with `--threads "
             f"{results['settings']['threads']}`. " + " ".join(__doc__.split("\n\n")[1:3]).replace("\n", " "), ""]
    if results["settings"].get("load_note"):
        lines += [f"**Load:** {results['settings']['load_note']}", ""]
    for result in results["models"].values():
        original = result["original"]
        lines += [f"### {result['title']}", "", f"Original: top-1 {_pct(original, 'top1')} on "
                  f"{result['evaluated']} labelled photos.", ""]
        for question in dict.fromkeys(s.question for s in SETTINGS):
            lines += question_table(result, question)
        lines += ["Commands:", ""] + [f"- `{c}`" for c in dict.fromkeys(r["command"] for r in result["rows"])] + [""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=sorted(SIZES), default=["lite0", "lite1"])
    p.add_argument("--calib", type=int, default=100)
    p.add_argument("--fp32-target", type=float, default=0.8)
    p.add_argument("--int8-target", type=float, default=0.408,
                   help="INT8 target ratio (default: 0.85 x Lite0's measured INT8-alone ratio, 0.481)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-limit", type=int, default=None, metavar="N")
    p.add_argument("--reuse", action="store_true", help="take runs of the same command in --work as they are")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--work", type=Path, default=None, help="default ~/.cache/graphopt-bench/defaults-imagenet")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "studies" / "defaults_imagenet.md")
    p.add_argument("--load-note", default="", help="what else ran on the machine during the runs (printed as given)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.out.parent.is_dir():
        raise GraphoptError(f"output folder {args.out.parent} does not exist")
    work = args.work or cache_dir("defaults-imagenet")
    results = {"command": shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)]),
               "machine": machine(args.threads),
               "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "models": {}}
    for name in args.models:
        results["models"][name] = run_model(name, args, work)
        write_study(args.out, markdown(results), results)
    return 0


if __name__ == "__main__":
    run_cli(main)
