"""accelerate(): one run as a sequence of named stages over one run state (graphopt/stages/):

    prepare   load the model and calibration images; discover what each method can cut; set up the backend
    score     score every cut on the calibration images by what the network loses without it
    time      the latency table: the original and the single cuts a plan would take first, timed on the serving
              runtime until they save enough for the target (stages/table.py)
    rank      order the timed cuts by loss per millisecond saved
    select    the fewest ranked cuts whose measured ratio meets the target, the last of them the one that loses
              least among those that get there
    recover   cut, refit, distil from the original, verify, and check the result against the target by measurement
    floor     the result's top-1 loss estimated on held-out images; over --max-accuracy-drop, nothing is handed back
              (or, with --keep-best, the fastest model inside it); the frontier of every model measured (--plot)
    write     the verified model, atomically (and a TensorRT engine when asked)
    report    a typed report of all of it

With INT8 output and a latency goal, INT8 alone (onnxruntime's quantize_static on the calibration images) is
measured first, before any cut is timed, and handed back as it is when it meets the goal. With no goal at all, the
goal is the fastest model inside the accuracy floor: on onnxruntime's CPU, INT8 alone (settings.with_goal).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import onnx

from graphopt.errors import AccuracyFloorMissed, GraphoptError
from graphopt.machine import usable_cores
from graphopt.model_io import save_model
from graphopt.paths import check_outputs
from graphopt.runtime import LatencyBackend
from graphopt.settings import AccelerateSettings, check_settings, with_goal
from graphopt.stages.floor import check_floor
from graphopt.stages.prepare import prepare
from graphopt.stages.rank import score
from graphopt.stages.recover import cut_and_recover, int8_alone
from graphopt.stages.table import build_table
from graphopt.stages.report import Report, budget_split, build_report


@dataclass
class AccelerateResult:
    model: onnx.ModelProto
    summary: Report

    @cached_property
    def report(self) -> dict:
        """The report's JSON form."""
        return self.summary.to_dict()

    def save(self, path: str | os.PathLike) -> Path:
        return save_model(self.model, path)


def accelerate(model, calib: str | os.PathLike, output: str | os.PathLike | None = None, *,
               example_input=None, settings: AccelerateSettings | None = None, quiet: bool = False,
               engine: str | os.PathLike | None = None, backend: LatencyBackend | None = None,
               plot: str | os.PathLike | None = None, **overrides) -> AccelerateResult:
    """Make `model` faster with the calibration images in `calib`.

    `model` is an ONNX path, an `onnx.ModelProto` or a `torch.nn.Module` (exported first with `example_input`).
    Settings come from `settings` and/or keyword overrides (e.g. `target_latency=0.8`). The result holds the
    accelerated model and the report; with `output` the model is also written (atomically) after verification.
    `backend` replaces the latency backend the settings name (a custom runtime, or a simulated one in tests).
    `plot` is a PNG to draw the frontier in (every model measured: latency ratio against estimated top-1 loss).
    Raises TargetUnreachable (exit status 3) rather than return a model its own final measurement puts above the
    target, or (AccuracyFloorMissed) one whose estimated top-1 loss may exceed `max_accuracy_drop` points.
    """
    settings = settings or AccelerateSettings()
    unknown = [key for key in overrides if not hasattr(settings, key)]
    if unknown:
        raise GraphoptError(f"unknown setting(s): {', '.join(unknown)}")
    settings = with_goal(replace(settings, **overrides))  # the caller's settings object stays as it was
    check_settings(settings)
    check_outputs({"-o": output, "--engine": engine, "--plot": plot},
                  model if isinstance(model, (str, os.PathLike)) else None, calib)
    if engine is not None and settings.runtime != "tensorrt":
        raise GraphoptError("--engine writes a TensorRT engine: it needs --runtime tensorrt")
    import torch
    torch.set_num_threads(settings.work_threads or usable_cores())  # training wants the machine; timing has its own
    run = prepare(model, example_input, calib, settings, backend, quiet, time.monotonic() + 60 * settings.time_budget)
    outcome, table, ranking, target = int8_alone(run), None, None, settings.target_latency
    if outcome is None:
        ranking = score(run)
        table, target = build_table(run, ranking)
        ranking, outcome, table = cut_and_recover(run, table, target, ranking)
    try:
        quality, frontier, outcome = check_floor(run, outcome, table.start if table is not None else None,
                                                 ranking.errors if ranking is not None else None, target)
    except AccuracyFloorMissed as missed:
        _hand_back_best(missed, output, settings.keep_best)
        _draw(plot, missed.points, settings.max_accuracy_drop, target)
        missed.seconds = dict(run.stages.seconds)  # where the run's time went, for the failure report
        missed.budget = budget_split(run, outcome, run.stages.seconds)
        raise
    _draw(plot, frontier, settings.max_accuracy_drop, target)
    if output is not None:
        with run.stages("write"):
            save_model(outcome.model, output)
    if engine is not None:
        with run.stages("engine"):
            _build_engine(run.backend, outcome.model, engine)
    report = build_report(run, calib, table, ranking, outcome)
    report.quality = quality
    report.frontier = [point.to_dict() for point in frontier]
    report.output = str(output) if output is not None else None
    report.engine = str(engine) if engine is not None else None
    report.seconds = run.stages.seconds
    report.budget = budget_split(run, outcome, run.stages.seconds)
    return AccelerateResult(outcome.model, report)


def _hand_back_best(missed: AccuracyFloorMissed, output, keep: bool) -> None:
    """With --keep-best, the fastest model inside the floor written to `output` (the run still exits 3)."""
    if not keep or output is None:
        return
    if missed.best is None:
        missed.args = (f"{missed}; --keep-best: no model faster than the original is inside the floor, nothing "
                       f"written",)
        return
    save_model(missed.best, output)
    missed.kept = str(output)
    for point in missed.points:
        point.chosen = point is missed.best_point
    missed.args = (f"{missed}; --keep-best: {missed.best_label} written to {output}",)


def _draw(plot, points, floor: float | None, target: float | None) -> None:
    if plot is not None:
        from graphopt.frontier import plot as draw
        draw(points, plot, floor, target)


def _build_engine(backend: LatencyBackend, model: onnx.ModelProto, path) -> None:
    if not hasattr(backend, "build_engine"):
        raise GraphoptError("--engine needs --runtime tensorrt")
    backend.build_engine(model, Path(path))
