"""What the stages of one accelerate run share: the run state, the stage clock, and the outcome handed back."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import onnx

from graphopt.blocks import Block
from graphopt.channels import ChannelAnalysis
from graphopt.features import class_scores
from graphopt.methods import Action, Planner
from graphopt.runtime import Comparison, LatencyBackend
from graphopt.selection import Selection
from graphopt.settings import FINAL_RESERVE, RECOVERY_SHARE, SEARCH_TIMING_SHARE, AccelerateSettings
from graphopt.target import TargetCheck, last_measurement

# Agreement on fewer held-out files than this moves in steps of more than 12 points: reported, flagged unreliable.
RELIABLE_HELD_OUT_FILES = 8


class StageClock:
    """Wall time per stage, for the report (a stage run again after a missed target adds to its time)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


@dataclass
class Run:
    """What the stages of one accelerate run share."""

    settings: AccelerateSettings
    original: onnx.ModelProto
    calibration: object  # CalibrationSet (imported lazily: it pulls in torch)
    train: object
    held: object
    blocks: list[Block]
    droppable: list[Block]
    channels: ChannelAnalysis | None  # channel groups, when the filters method is on
    planner: Planner
    actions: list[Action]  # every candidate cut of the methods chosen
    features: list[str]
    given: list[Action] | None  # the blocks named by --blocks, checked droppable before any timing
    backend: LatencyBackend  # times every variant in the precision it will be served in
    int8: onnx.ModelProto | None  # the original quantized on the calibration images, when the output is INT8
    stages: StageClock
    quiet: bool
    deadline: float  # time.monotonic() at which the time budget runs out
    methods: tuple[str, ...] = ()  # the methods searched
    consumer_stats: dict | None = None  # what the least-squares refit of pruned channels' consumers needs
    cluster: object = None  # graphopt.cluster.Cluster with --ray: cut scores (and timing, on its timing nodes) there

    def consumers(self) -> dict:
        """Input statistics of every consumer of a prunable channel group (gathered once, on the training images)."""
        if self.consumer_stats is None:
            from graphopt.calibration.scoring.refit import consumer_statistics
            self.consumer_stats = consumer_statistics(self.original, self.channels, self.train.tensors(),
                                                      self.settings.work_threads, self.settings.seed)
        return self.consumer_stats

    def apply(self, plan: list[Action], weights_from: onnx.ModelProto | None = None) -> onnx.ModelProto:
        """The plan applied as recovery trains it: consumers of pruned channels refit in closed form first. With
        `weights_from` (a recovered model), its trained tensors replace the plan's wherever they match (same name,
        shape and type): the cuts both have keep what recovery taught them."""
        refit = None
        if self.planner.keep(plan):
            from graphopt.calibration.scoring.cut_scores import refitter
            refit = refitter(self.planner, self.consumers())
        model = self.planner.apply(plan, refit=refit)
        if weights_from is not None:
            trained = {tensor.name: tensor for tensor in weights_from.graph.initializer}
            for tensor in model.graph.initializer:
                other = trained.get(tensor.name)
                if other is not None and list(other.dims) == list(tensor.dims) and other.data_type == tensor.data_type:
                    tensor.CopyFrom(other)
        return model

    def seconds_left(self, reserve: float = 0.0) -> float:
        """Seconds of the budget left after keeping `reserve` (a share of the whole budget) back; at least 1."""
        return max(1.0, self.deadline - time.monotonic() - reserve * 60 * self.settings.time_budget)

    def search_over(self) -> bool:
        """Whether the search (timing cuts, scoring plans) has used its part of the budget: what is left is kept
        for recovery (RECOVERY_SHARE) and the final checks (FINAL_RESERVE)."""
        return self.seconds_left(RECOVERY_SHARE + FINAL_RESERVE) <= 1.0

    def scoring_over(self) -> bool:
        """Whether scoring cuts has used its part of the search: SEARCH_TIMING_SHARE of it is kept for timing."""
        search = (1 - RECOVERY_SHARE - FINAL_RESERVE) * 60 * self.settings.time_budget
        return self.seconds_left(RECOVERY_SHARE + FINAL_RESERVE) <= SEARCH_TIMING_SHARE * search

    def deliverable(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict | None]:
        """`model` in the precision it is handed back in: as it is, or INT8 quantized from the training images
        after few-shot INT8 recovery (unless switched off); with what INT8 recovery measured."""
        if self.int8 is None:
            return model, None
        from graphopt.calibration.quantize.static import quantize_int8
        recovered = None
        if self.settings.int8_recovery:
            with self.stages("int8 recovery"):
                recovered = self._recover_int8(model)
                model = recovered.model
        with self.stages("quantize"):
            quantized = quantize_int8(model, self.train)
        return quantized, None if recovered is None else {
            "error_before": recovered.result.error_before, "error_after": recovered.result.error_after,
            "steps": recovered.result.steps, "lr": recovered.lr}

    def _recover_int8(self, model: onnx.ModelProto):
        from graphopt.calibration.quantize.int8_recovery import recover_int8
        from graphopt.calibration.recovery.mimic import MimicSettings
        settings = self.settings
        seconds = self.seconds_left(FINAL_RESERVE) / 1.2  # two learning-rate probes take a tenth each
        say(self.quiet, f"INT8 recovery for up to {seconds:.0f} s")
        mimic = MimicSettings(settings.recover_iterations, settings.batch_size, seed=settings.seed, seconds=seconds)
        return recover_int8(self.original, model, self.features, class_scores(self.original, self.features),
                            self.train, self.held.tensors(), mimic, settings.work_threads, self.quiet)


@dataclass
class Outcome:
    """What the run hands back: the model, how it was chosen, and what was measured on it."""

    model: onnx.ModelProto
    selection: Selection
    recovered: object | None  # Recovered (calibration.recovery), None when nothing was cut
    agreement: float | None
    final: Comparison | TargetCheck
    int8_recovery: dict | None = None  # what few-shot INT8 recovery measured, when it ran

    @property
    def latency(self) -> Comparison:
        """The model against the original as last measured (the final check's last measurement, when there was one)."""
        return last_measurement(self.final)

    @property
    def met(self) -> bool:
        """Whether the final check met the target (no check: there was no target to meet)."""
        return self.final.met if isinstance(self.final, TargetCheck) else True


def say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, flush=True)
