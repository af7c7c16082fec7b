"""Where basis pruning pays: every node the basis method offers, at each rank, with the share of multiply-adds the
split removes, the share of latency it saves (measured on onnxruntime, each split model interleaved with the
original as accelerate's latency table does), and the held-out feature error the split leaves with the weight's
SVD basis and with the output basis fitted on the calibration images.

    python -m tools.bench.basis --bench lite0 --out docs/studies/basis_lite0.md
    python -m tools.bench.basis --bench fmnist --out docs/studies/basis_fmnist.md
    python -m tools.bench.basis --torchvision resnet18 --out docs/studies/basis_resnet18.md   (untrained: latency only)

Writes --out (markdown) and its .json twin.
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import onnx
import torch

from graphopt.calibration.scoring.fitted_bases import fitted_bases
from graphopt.calibration.scoring.cut_scores import PlanError, score_cuts
from graphopt.calibration.data.dataset import load_calibration
from graphopt.features import feature_tensors
from graphopt.machine import machine
from graphopt.methods import Planner
from graphopt.methods.basis import basis_actions, decomposable_nodes
from graphopt.model_io import load_model
from graphopt.runtime import TimingSettings, get_backend
from graphopt.selection import latency_table
from graphopt.shapes import infer_shapes
from graphopt.errors import GraphoptError
from tools.bench.baselines import study_inputs
from tools.bench.common import bench_parser, cache_dir, export_torchscript, run_cli, write_study

COMMAND = "python -m tools.bench.basis"


def measure(model_path: Path, calib: Path | None, preprocess: dict, threads: int) -> dict:
    """Latency saved by every basis cut; with calibration images, the feature error each leaves too."""
    torch.set_num_threads(threads)
    model = load_model(model_path)
    shapes = infer_shapes(model)
    actions = basis_actions(model, shapes)
    result = {"model": str(model_path)}
    errors = {}
    if calib is not None:
        errors, result["train_images"], result["held_out_images"], result["held_out_files"] = _errors(
            model, shapes, actions, calib, preprocess, threads)
    table = latency_table(get_backend("onnxruntime", TimingSettings(), threads=threads), Planner(model, []),
                          actions, quiet=True)
    nodes = {n.output: n for n in decomposable_nodes(model, shapes)}
    rows = [{"id": a.id, "node": a.target, "rank": a.keep, "full_rank": nodes[a.target].full_rank,
             "outputs": nodes[a.target].outputs, "entries": nodes[a.target].entries, "macs_share": a.macs_share,
             "latency_saved": table.savings[a.id],
             "errors": {name: errors[name][a.id] for name in errors}} for a in actions]
    return {**result, "rows": rows, "decomposable": len(nodes), "offered_nodes": len({a.target for a in actions}),
            "table_noise": table.noise, "base_ms": table.base.median_ms}


def _errors(model, shapes, actions, calib: Path, preprocess: dict, threads: int) -> tuple[dict, int, int, int]:
    """Held-out feature error per cut with the SVD basis, the fitted basis, and the fitted basis in Taylor order."""
    features = feature_tensors(model, None, shapes)
    train, held = load_calibration(calib, model, **preprocess).split(0.2, 0)
    names = sorted({a.target for a in actions})
    fitted = fitted_bases(model, names, train.tensors(), threads=threads)
    ordered = fitted_bases(model, names, train.tensors(), model.graph.output[0].name, threads)
    errors = {}
    for name, planner in (("svd", Planner(model, [])), ("data", Planner(model, [], bases=fitted)),
                          ("data+taylor", Planner(model, [], bases=ordered))):
        scores = score_cuts(PlanError(planner, {}, features, held.tensors(), threads), actions, quiet=True)
        errors[name] = {key: score["error"] for key, score in scores.items()}
    return errors, len(train), len(held), held.sources()


def markdown(result: dict, args: argparse.Namespace) -> str:
    rows = result["rows"]
    saved, macs = sum(r["latency_saved"] for r in rows), sum(r["macs_share"] for r in rows)
    positive = sum(r["latency_saved"] > 0 for r in rows)
    names = list(rows[0]["errors"]) if rows else []
    source = (f"`{COMMAND} --torchvision {args.torchvision} --threads {args.threads}` (untrained weights: latency "
              f"only)" if args.torchvision else f"`{COMMAND} --bench {args.bench} --threads {args.threads}`")
    lowest = {n: sum(min(r["errors"], key=r["errors"].get) == n for r in rows) for n in names}
    means = {n: sum(r["errors"][n] for r in rows) / max(len(rows), 1) for n in names}
    title = args.torchvision or args.bench
    lines = [f"# Where basis pruning pays: {title}", "",
             f"Made by {source}, "
             f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()['cpu']}; "
             f"onnxruntime CPU, {args.threads} thread(s), batch 1; original {result['base_ms']:.3f} ms, "
             f"latency table noise ±{result['table_noise']:.3f}.", "",
             f"{result['decomposable']} Conv/Gemm/MatMul nodes with constant weights; {result['offered_nodes']} "
             f"are offered (a rank below break-even that removes ≥0.5% of the multiply-adds), {len(rows)} cuts. "
             f"{positive} of them measured a saving; summed over all cuts they save {saved:.3f} of the latency for "
             f"{macs:.3f} of the multiply-adds.", ""]
    if names:
        lines += [f"Feature error: relative error of the features recovery matches, on "
                  f"{result['held_out_images']} held-out images ({result['held_out_files']} files), with the "
                  f"weight's SVD basis (svd), the output basis fitted on {result['train_images']} calibration "
                  f"images kept by output energy (data), and the same basis kept in first-order Taylor order of "
                  f"per-basis scaling factors (data+taylor).", "",
                  "| bases | mean feature error | lowest on |", "|---|---|---|",
                  *[f"| {n} | {means[n]:.4f} | {lowest[n]} of {len(rows)} |" for n in names], ""]
    header = ["cut", "outputs × entries", "rank / full", "MACs removed", "latency saved",
              *(f"error ({n})" for n in names)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["id"], f"{r['outputs']} × {r['entries']}", f"{r['rank']} / {r['full_rank']}",
                 f"{r['macs_share']:.3f}", f"{r['latency_saved']:+.3f}", *(f"{r['errors'][n]:.4f}" for n in names)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _torchvision(name: str) -> Path:
    import torchvision
    path = cache_dir("torchvision") / f"{name}-untrained.onnx"
    if not path.exists():
        builder = getattr(torchvision.models, name, None)
        if builder is None:
            raise GraphoptError(f"torchvision has no model '{name}'")
        torch.manual_seed(0)
        onnx.save(export_torchscript(builder(), (torch.randn(1, 3, 224, 224),), path.with_suffix(".tmp")), path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--torchvision", help="time the basis cuts of this untrained torchvision classifier at "
                                                "224x224 instead (latency only: its weights are random)")
    args = parser.parse_args(argv)
    if args.torchvision:
        result = measure(_torchvision(args.torchvision), None, {}, args.threads)
    else:
        result = measure(*study_inputs(args.bench), args.threads)
    write_study(args.out, markdown(result, args), result)
    return 0


if __name__ == "__main__":
    run_cli(main)
