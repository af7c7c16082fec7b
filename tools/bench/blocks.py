"""Latency of every droppable block across torchvision architectures, next to its share of multiply-adds.

Benchmark protocol section 3: random weights are enough for structure and latency. Each block's saving is
1 - (latency without it / latency of the original), the two timed side by side with interleaved runs in one
call, so machine noise hits both alike. On a shared machine the run times are multi-modal (a run either keeps
the core or loses a scheduler slice), so savings are given from the medians and from the lower deciles, which
track the uncontended latency. The summary asks whether MAC share predicts those savings, and whether
the savings of single blocks add up when several are dropped together (what block selection relies on).

    python -m tools.bench.blocks --threads 1 --out docs/studies/blocks_latency.md
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import shlex
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch
import torchvision

from graphopt.blocks import find_blocks
from graphopt.errors import GraphoptError
from graphopt.machine import machine, versions
from graphopt.model_io import load_model
from graphopt.passes import drop_blocks
from graphopt.output import emit_json, table
from graphopt.runtime import LatencyBackend, LatencyStats, TimingSettings, get_backend
from tests.zoo import export
from tools.bench.common import run_cli

ARCHITECTURES = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
                 "regnet_x_400mf", "convnext_tiny", "vit_b_16")


def export_torchvision(name: str, size: int, folder: Path) -> onnx.ModelProto:
    """torchvision's `name` with seeded random weights, exported by TorchScript at opset 17 with a dynamic batch."""
    torch.manual_seed(0)
    try:
        model = torchvision.models.get_model(name, weights=None).eval()
    except ValueError:
        raise GraphoptError(f"torchvision has no model '{name}'") from None
    path = export(model, torch.randn(1, 3, size, size), folder / f"{name}.onnx", "torchscript")
    return load_model(path)


def spread_subset(ids: list[str], limit: int | None) -> list[str]:
    """At most `limit` ids, evenly spaced from first to last, so every stage stays represented."""
    if limit is None or len(ids) <= limit:
        return ids
    picks = np.linspace(0, len(ids) - 1, limit).round().astype(int)
    return [ids[i] for i in dict.fromkeys(picks)]


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Correlation coefficient, or None when it is undefined (fewer than 3 points, or equal MAC shares)."""
    if len(xs) < 3 or np.ptp(xs) <= 1e-9 * max(xs) or np.ptp(ys) == 0:
        return None
    return float(np.corrcoef(xs, ys)[0, 1])


def saving(base: LatencyStats, other: LatencyStats, statistic: str = "median_ms") -> float:
    """1 - other/base of one statistic: the fraction of latency removed."""
    return 1 - getattr(other, statistic) / getattr(base, statistic)


def timing_backend(model: onnx.ModelProto, settings: TimingSettings, threads: int | None,
                   min_seconds: float = 0.0) -> LatencyBackend:
    """onnxruntime with repeats raised for fast models, so each timed model runs at least `min_seconds`."""
    backend = get_backend("onnxruntime", settings, threads=threads)
    if min_seconds > 0:
        probe = backend.measure(model)
        repeats = max(settings.repeats, math.ceil(1000 * min_seconds / probe.median_ms))
        backend = get_backend("onnxruntime", replace(settings, repeats=repeats), threads=threads)
    return backend


def bench_architecture(model: onnx.ModelProto, backend: LatencyBackend, max_blocks: int | None = None) -> dict:
    """Blocks of `model`, the measured saving of each droppable one, and one combined drop (every other one)."""
    blocks = find_blocks(model)
    droppable = [b for b in blocks if b.droppable]
    measured_ids = spread_subset([b.id for b in droppable], max_blocks)
    by_id = {b.id: b for b in blocks}

    def compare(ids: list[str]) -> list[LatencyStats]:
        return backend.measure_many([model, drop_blocks(model, ids, blocks)])

    rows = []
    for block_id in measured_ids:
        base, other = compare([block_id])
        block = by_id[block_id]
        rows.append({"id": block_id, "macs_share": block.macs_share, "params": block.params,
                     "saving": saving(base, other), "saving_p10": saving(base, other, "p10_ms"),
                     "base": base.to_dict(),
                     "dropped": other.to_dict()})

    result = {"blocks": len(blocks), "droppable": len(droppable), "measured": measured_ids,
              "per_block": rows, "combined": None,
              "correlation": pearson([r["macs_share"] for r in rows], [r["saving"] for r in rows]),
              "correlation_p10": pearson([r["macs_share"] for r in rows], [r["saving_p10"] for r in rows])}
    chosen = measured_ids[::2]
    if chosen:
        base, other = compare(chosen)
        savings = {r["id"]: r["saving"] for r in rows}
        result["base"] = base.to_dict()
        result["combined"] = {
            "ids": chosen,
            "macs_share": sum(by_id[i].macs_share for i in chosen),
            "predicted_ratio_macs": 1 - sum(by_id[i].macs_share for i in chosen),
            "predicted_ratio_sum_of_savings": 1 - sum(savings[i] for i in chosen),
            "measured_ratio": 1 - saving(base, other),
            "measured_ratio_p10": 1 - saving(base, other, "p10_ms"),
            "dropped": other.to_dict(),
        }
    else:
        result["base"] = backend.measure(model).to_dict()
    return result


def machine_info(threads: int | None) -> dict:
    """What a reader needs to judge the numbers: CPU, cores, threads, load, library versions, date."""
    return {**machine(), "threads": threads or "onnxruntime default", **versions(),
            "date": datetime.date.today().isoformat(), "load_average_start": round(os.getloadavg()[0], 2)}


def _pct(value: float) -> float:
    return round(100 * value, 2)


def _ms(stats: dict) -> str:
    return f"{stats['median_ms']:.2f} ({stats['p10_ms']:.2f}–{stats['p90_ms']:.2f})"


def _range(values: list[float]) -> str:
    return f"{_pct(min(values))} to {_pct(max(values))}" if values else "–"


def _num(value: float | None) -> float | str:
    return "–" if value is None else round(value, 3)


BLOCKS_HEADERS = ["model", "blocks", "droppable", "measured", "runs", "original ms median (p10–p90)",
                  "MACs % range", "saving % range", "p10 saving % range", "r(saving, MACs)", "r(p10 saving, MACs)"]
COMBINED_HEADERS = ["model", "dropped", "MACs %", "ratio by MACs", "ratio by sum of savings", "ratio measured",
                    "p10 ratio measured"]
BLOCK_HEADERS = ["block", "MACs %", "params", "saving %", "p10 saving %", "original ms (p10–p90)",
                 "without ms (p10–p90)"]


def blocks_rows(results: dict[str, dict]) -> list[list]:
    """One row per model: what was found and how single-block savings relate to MAC shares."""
    rows = []
    for name, r in results.items():
        blocks = r["per_block"]
        rows.append([name, r["blocks"], r["droppable"], len(r["measured"]), r["base"]["runs"], _ms(r["base"]),
                     _range([b["macs_share"] for b in blocks]), _range([b["saving"] for b in blocks]),
                     _range([b["saving_p10"] for b in blocks]), _num(r["correlation"]), _num(r["correlation_p10"])])
    return rows


def combined_rows(results: dict[str, dict]) -> list[list]:
    """One row per model with a combined drop: latency ratios predicted two ways against the measured one."""
    return [[name, len(c["ids"]), _pct(c["macs_share"]), _num(c["predicted_ratio_macs"]),
             _num(c["predicted_ratio_sum_of_savings"]), _num(c["measured_ratio"]), _num(c["measured_ratio_p10"])]
            for name, r in results.items() if (c := r["combined"])]


def render_markdown(results: dict[str, dict], meta: dict) -> str:
    """The results file: how to regenerate it and where it was measured, summaries, then one table per model."""
    m = meta["machine"]
    lines = [
        "# Block latency across torchvision architectures",
        "",
        f"Regenerate: `{meta['command']}`",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores; onnxruntime CPU, {m['threads']} thread(s), "
        f"batch {meta['batch']}, {meta['size']} px, {meta['warmup']} warm-up runs, then at least "
        f"{meta['repeats']} timed runs per model and at least {meta['min_seconds']} s of them (fast models get "
        f"more runs), interleaved.",
        f"- Versions: onnxruntime {m['onnxruntime']}, torch {m['torch']}, onnx {m['onnx']}. Date: {m['date']}.",
        f"- 1-minute load average at start / end: {m['load_average_start']} / {m['load_average_end']} on "
        f"{m['cores']} cores. Above the thread count, other processes competed for the CPU and spreads widen.",
        "- Models: torchvision builders with random weights (`weights=None`), TorchScript export, opset 17, "
        "dynamic batch.",
        "- Saving = 1 − median(without block) / median(original), both timed in the same call with interleaved "
        "runs; p10 saving uses the lower deciles instead, which track the uncontended latency when the machine "
        "is shared. Times are medians with p10–p90 in brackets.",
        "- Combined drop: every other measured droppable block. Ratio by MACs = 1 − Σ MAC share; by sum of "
        "savings = 1 − Σ single-block savings; measured = timed against the original side by side (the original's "
        "latency in the first summary comes from that call).",
    ]
    if meta.get("note"):
        lines.append(f"- Note: {meta['note']}")
    lines += ["", "## Summary: blocks and single-block savings", "", "```",
              table(BLOCKS_HEADERS, blocks_rows(results)), "```",
              "", "## Summary: combined drop, predicted vs measured latency ratio", "", "```",
              table(COMBINED_HEADERS, combined_rows(results)), "```"]
    for name, r in results.items():
        lines += ["", f"## {name}", ""]
        if len(r["measured"]) < r["droppable"]:
            lines += [f"Measured {len(r['measured'])} of {r['droppable']} droppable blocks (evenly spaced, "
                      f"`--max-blocks {meta['max_blocks']}`).", ""]
        if r["per_block"]:
            rows = [[b["id"], _pct(b["macs_share"]), b["params"], _pct(b["saving"]), _pct(b["saving_p10"]),
                     _ms(b["base"]), _ms(b["dropped"])] for b in r["per_block"]]
            lines += ["```", table(BLOCK_HEADERS, rows), "```"]
        else:
            lines.append("No droppable blocks.")
        if r["combined"]:
            c = r["combined"]
            lines += ["", f"Combined drop of {', '.join(c['ids'])} ({_pct(c['macs_share'])}% of MACs): "
                      f"{_ms(c['dropped'])} ms against {_ms(r['base'])} ms."]
    return "\n".join(lines) + "\n"


def command_line(args: argparse.Namespace) -> str:
    """The full command, every option spelled out, so the results file regenerates even if defaults change."""
    parts = ["python -m tools.bench.blocks", f"--models {','.join(args.models)}", f"--size {args.size}",
             f"--batch {args.batch}", f"--warmup {args.warmup}", f"--repeats {args.repeats}",
             f"--min-seconds {args.min_seconds:g}"]
    if args.threads:
        parts.append(f"--threads {args.threads}")
    if args.max_blocks:
        parts.append(f"--max-blocks {args.max_blocks}")
    if args.note:
        parts.append(f"--note {shlex.quote(args.note)}")
    parts.append(f"--out {args.out}")
    return " ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.blocks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
                        default=list(ARCHITECTURES), help="comma-separated torchvision model names")
    parser.add_argument("--size", type=int, default=224, help="input height and width in pixels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per model before timing")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per model, at least")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="raise the repeats of fast models so each timed model runs at least this long")
    parser.add_argument("--max-blocks", type=int, default=None,
                        help="measure at most this many droppable blocks per model (evenly spaced)")
    parser.add_argument("--note", default="", help="free text for the results file (e.g. what shared the machine)")
    parser.add_argument("--out", type=Path, default=Path("docs/studies/blocks_latency.md"),
                        help="markdown results; the JSON goes beside it")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.batch, args.repeats, args.size) < 1 or args.warmup < 0:
        raise GraphoptError("--batch, --repeats and --size must be at least 1, --warmup not negative")
    settings = TimingSettings(args.batch, args.warmup, args.repeats)
    meta = {"command": command_line(args), "machine": machine_info(args.threads),
            "runtime": get_backend("onnxruntime", settings, threads=args.threads).describe(), "batch": args.batch,
            "size": args.size, "warmup": args.warmup, "repeats": args.repeats, "min_seconds": args.min_seconds,
            "max_blocks": args.max_blocks, "note": args.note}
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-blocks-") as tmp:
        for name in args.models:
            print(f"{name}: exporting and measuring", flush=True)
            model = export_torchvision(name, args.size, Path(tmp))
            backend = timing_backend(model, settings, args.threads, args.min_seconds)
            results[name] = bench_architecture(model, backend, args.max_blocks)
            print(table(BLOCKS_HEADERS, blocks_rows({name: results[name]})), flush=True)
    meta["machine"]["load_average_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_markdown(results, meta))
    with open(args.out.with_suffix(".json"), "w") as stream:
        emit_json({**meta, "results": results}, stream)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    run_cli(main)
