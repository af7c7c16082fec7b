"""accelerate(): find what can be cut (residual blocks, channel groups, conv bases), time each cut, score how well
the network does without it, select under the target, cut, recover, verify, and check the result against the
target by measurement."""
from __future__ import annotations

import io
import os
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import onnx

from graphopt import __version__
from graphopt.blocks import Block, find_blocks
from graphopt.channels import ChannelAnalysis, find_channel_groups
from graphopt.channels.importance import l1_order
from graphopt.cache import ScoreCache, cache_key, default_dir
from graphopt.errors import GraphoptError, TargetUnreachable, first_line
from graphopt.features import feature_tensors
from graphopt.machine import machine, versions
from graphopt.model_io import load_model, save_model
from graphopt.methods import METHODS, Action, Planner
from graphopt.methods.basis import basis_actions
from graphopt.methods.blocks import block_actions
from graphopt.methods.filters import filter_actions
from graphopt.passes import DropBlocks, select_blocks
from graphopt.precision import Int8Timing, quantizes_graph
from graphopt.runtime import Comparison, LatencyBackend, TimingSettings, get_backend
from graphopt.runtime.inputs import checked_input_shapes, runtime_inputs
from graphopt.ranking import rerank_by_plan
from graphopt.selection import Attempt, Selection, check_reachable, latency_table, predicted_ratio, select
from graphopt.settings import (ADAPTOR_LR, DAGGER_SHARE, FINAL_RESERVE, INT8_RECOVERY_SHARE, LR_CANDIDATES,
                               RERANK_SLACK, SCORING_SHARE, AccelerateSettings)
from graphopt.shapes import infer_shapes
from graphopt.target import TargetCheck, confirm_target
from graphopt.verify import agreement, check_recovered, check_valid


# Agreement on fewer held-out files than this moves in steps of more than 12 points: reported, flagged unreliable.
RELIABLE_HELD_OUT_FILES = 8


@dataclass
class AccelerateResult:
    model: onnx.ModelProto
    report: dict

    def save(self, path: str | os.PathLike) -> Path:
        return save_model(self.model, path)


class _Stages:
    """Wall time per stage, for the report (a stage run again after a missed target adds to its time)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


@dataclass
class _Run:
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
    stages: _Stages
    quiet: bool
    deadline: float  # time.monotonic() at which the time budget runs out
    consumer_stats: dict | None = None  # what the least-squares refit of pruned channels' consumers needs

    def consumers(self) -> dict:
        """Input statistics of every consumer of a prunable channel group (gathered once, on the training images)."""
        if self.consumer_stats is None:
            from graphopt.calibration.refit import consumer_statistics
            self.consumer_stats = consumer_statistics(self.original, self.channels, self.train.tensors(),
                                                      self.settings.threads, self.settings.seed)
        return self.consumer_stats

    def seconds_left(self, reserve: float = 0.0) -> float:
        """Seconds of the budget left after keeping `reserve` (a share of the whole budget) back; at least 1."""
        return max(1.0, self.deadline - time.monotonic() - reserve * 60 * self.settings.time_budget)

    def deliverable(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict | None]:
        """`model` in the precision it is handed back in: as it is, or INT8 quantized from the training images
        after few-shot INT8 recovery (unless switched off); with what INT8 recovery measured."""
        if self.int8 is None:
            return model, None
        from graphopt.calibration.quantize import quantize_int8
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
        from graphopt.calibration.int8_recovery import recover_int8
        from graphopt.calibration.mimic import MimicSettings
        settings = self.settings
        seconds = self.seconds_left(FINAL_RESERVE) / 1.2  # two learning-rate probes take a tenth each
        _say(self.quiet, f"INT8 recovery for up to {seconds:.0f} s")
        mimic = MimicSettings(settings.recover_iterations, settings.batch_size, seed=settings.seed, seconds=seconds)
        return recover_int8(self.original, model, self.features, _class_scores(self.original, self.features),
                            self.train, self.held.tensors(), mimic, settings.threads, self.quiet)


@dataclass
class _Outcome:
    """What the run hands back: the model, how it was chosen, and what was measured on it."""

    model: onnx.ModelProto
    selection: Selection
    recovered: object | None  # Recovered (calibration.recovery), None when nothing was cut
    agreement: float | None
    final: Comparison | TargetCheck
    int8_recovery: dict | None = None  # what few-shot INT8 recovery measured, when it ran


def accelerate(model, calib: str | os.PathLike, output: str | os.PathLike | None = None, *,
               example_input=None, settings: AccelerateSettings | None = None, quiet: bool = False,
               engine: str | os.PathLike | None = None, backend: LatencyBackend | None = None,
               **overrides) -> AccelerateResult:
    """Make `model` faster with the calibration images in `calib`.

    `model` is an ONNX path, an `onnx.ModelProto` or a `torch.nn.Module` (exported first with `example_input`).
    Settings come from `settings` and/or keyword overrides (e.g. `target_latency=0.8`). The result holds the
    accelerated model and the report; with `output` the model is also written (atomically) after verification.
    `backend` replaces the latency backend the settings name (a custom runtime, or a simulated one in tests).
    Raises TargetUnreachable (exit status 3) rather than return a model its own final measurement puts above the
    target.
    """
    settings = settings or AccelerateSettings()
    unknown = [key for key in overrides if not hasattr(settings, key)]
    if unknown:
        raise GraphoptError(f"unknown setting(s): {', '.join(unknown)}")
    settings = replace(settings, **overrides)  # the caller's settings object stays as it was
    _check_settings(settings)
    if engine is not None and settings.runtime != "tensorrt":
        raise GraphoptError("--engine writes a TensorRT engine: it needs --runtime tensorrt")
    if settings.threads:
        import torch
        torch.set_num_threads(settings.threads)
    run = _prepare(model, example_input, calib, settings, backend, quiet, time.monotonic() + 60 * settings.time_budget)
    with run.stages("latency table"):
        _say(quiet, f"timing {_count(run.actions)} on {run.backend.name} at batch {settings.batch}")
        table = latency_table(run.backend, run.planner, run.actions, quiet, start=run.int8)
        target = settings.target_latency if settings.target_ms is None else settings.target_ms / table.base.median_ms
    outcome, ranking = _int8_alone(run, table, target), ([], {}, False)
    if outcome is None:
        ranking, outcome = _cut_and_recover(run, table, target)
    if output is not None:
        with run.stages("write"):
            save_model(outcome.model, output)
    if engine is not None:
        with run.stages("engine"):
            _build_engine(run.backend, outcome.model, engine)
    report = _report(run, calib, table, ranking, outcome, target)
    report.update({"status": "ok", "output": str(output) if output is not None else None,
                   "engine": str(engine) if engine is not None else None, "seconds": run.stages.seconds})
    return AccelerateResult(outcome.model, report)


def _int8_alone(run: _Run, table, target: float | None) -> _Outcome | None:
    """The original in INT8 with no block dropped, when the table says that alone may meet the target and the final
    measurement confirms it (or when nothing can be dropped: then it is the only candidate, met or not)."""
    if run.int8 is None or target is None or (table.start > target + table.noise and run.actions):
        return None  # (within the table's noise of the target, INT8 alone gets a measurement of its own)
    with run.stages("final latency"):
        check = confirm_target(run.backend, run.original, run.int8, target)
    if not check.met:
        if run.actions:
            return None
        raise TargetUnreachable(f"latency target {target:.3f} was not met: the model has nothing to cut and "
                                f"INT8 alone measured {check.describe()}")
    model, int8_recovery = run.deliverable(run.original)
    if model is not run.int8:  # INT8 recovery changed the weights, not the graph: confirm the model handed back
        with run.stages("final latency"):
            check = confirm_target(run.backend, run.original, model, target)
        if not check.met:
            return None
    _say(run.quiet, f"INT8 alone meets the target: measured ratio {check.final.ratio:.3f}, no block dropped")
    attempts = [Attempt([], table.start, m.ratio, m.noise, m.noisy, stage="final") for m in check.measurements]
    with run.stages("verify"):
        check_valid(model)
        agreed = agreement(run.original, model, run.held.tensors(), run.settings.threads)
    return _Outcome(model, Selection([], check.final.ratio, attempts), None, agreed, check, int8_recovery)


def _cut_and_recover(run: _Run, table, target: float | None) -> tuple[tuple, _Outcome]:
    """Rank the cuts, select on measured latency, recover, and check the result against the target."""
    if target is not None:
        check_reachable(run.backend, run.planner, run.actions, target)
    ranked, scores, cached, count = _rank(run, table, target)
    with run.stages("selection"):
        selection = select(run.backend, run.planner, ranked, table, target=target, count=count)
        _say(run.quiet, f"cutting {', '.join(a.id for a in selection.actions)}: measured ratio {selection.ratio:.3f}")
    return (ranked, scores, cached), _recover_until_met(run, ranked, table, selection, target)


def _prepare(model, example_input, calib, settings: AccelerateSettings, backend: LatencyBackend | None,
             quiet: bool, deadline: float) -> _Run:
    """Load the model and the calibration images, find the blocks and the feature tensor, build the backend (and,
    for INT8 output, the original's INT8 form)."""
    stages = _Stages()
    quantize = quantizes_graph(settings.runtime, settings.precision)
    with stages("load"):
        original = _as_onnx(model, example_input)
        input_shapes = checked_input_shapes(original, settings.input_shapes)
        from graphopt.calibration.dataset import load_calibration
        calibration = load_calibration(calib, original, **_preprocess(settings, original, input_shapes))
        train, held = calibration.split(settings.holdout, settings.seed)
        if held.sources() < RELIABLE_HELD_OUT_FILES and not quiet:
            print(f"graphopt: warning: only {held.sources()} held-out calibration files: top-1 agreement on them is "
                  f"unreliable (give more images or a larger --holdout)", file=sys.stderr)
        input_shapes = input_shapes or _shapes_from_calibration(original, calibration, settings.batch)
    methods = _methods(settings)
    with stages("blocks"):
        shapes = infer_shapes(original, input_shapes=input_shapes)
        blocks = find_blocks(original, shapes)
        droppable = [b for b in blocks if b.droppable]
        features = feature_tensors(original, settings.feature_tensor, shapes)
        given = select_blocks(blocks, settings.blocks) if settings.blocks else None
        if given:
            DropBlocks(given)  # refuses blocks that cannot be dropped
    actions = block_actions(droppable) if "blocks" in methods else []
    channels, orders = None, {}
    if "filters" in methods:
        with stages("channels"):
            channels = find_channel_groups(original, shapes, fixed=features)
            orders = _channel_orders(settings, original, shapes, channels, features, train)
            actions += filter_actions(original, shapes, channels, orders)
    bases = {}
    if "basis" in methods:
        with stages("bases"):
            found = basis_actions(original, shapes)
            if found:
                from graphopt.calibration.basis import fitted_bases
                # kept by output energy: on Lite0 that beat Taylor order (docs/basis_lite0.md)
                bases = fitted_bases(original, sorted({a.target for a in found}), train.tensors(),
                                     threads=settings.threads, seed=settings.seed)
            actions += found
    if not actions and not quantize:
        raise GraphoptError(f"nothing to accelerate: the model has no "
                            f"{' and no '.join(_NOTHING[m] for m in methods)}")
    timing = TimingSettings(settings.batch, settings.warmup, settings.repeats, settings.min_seconds,
                            input_shapes=input_shapes, noise_threshold=settings.noise_threshold,
                            max_seconds=settings.max_timing_seconds)
    backend = backend or get_backend(settings.runtime, timing, threads=settings.threads or None,
                                     precision=settings.precision, calibration=calibration)
    int8 = None
    if quantize:
        from graphopt.calibration.quantize import quantize_int8
        with stages("quantize"):
            _say(quiet, f"quantizing the original to INT8 on {len(train)} calibration images")
            int8 = quantize_int8(original, train)
        backend = Int8Timing(backend, train, original)
    planner = Planner(original, blocks, channels, orders, bases)
    given_actions = block_actions(given) if given else None
    return _Run(settings, original, calibration, train, held, blocks, droppable, channels, planner, actions,
                features, given_actions, backend, int8, stages, quiet, deadline)


IMPORTANCE = ("l1", "taylor", "dagger")


def _channel_orders(settings: AccelerateSettings, original: onnx.ModelProto, shapes, channels: ChannelAnalysis,
                    features: list[str], train) -> dict:
    """Each prunable group's channels, most important first, by the criterion the settings name."""
    scores = _class_scores(original, features)
    if settings.importance == "l1" or not channels.prunable or (settings.importance == "taylor" and not scores):
        return l1_order(original, channels)
    if settings.importance == "taylor":
        from graphopt.calibration.taylor import taylor_order
        return taylor_order(original, channels, scores, train.tensors())
    from graphopt.calibration.dagger import dagger_order
    share = min(0.95, max(0.3, settings.target_latency or 0.8))
    return dagger_order(original, shapes, channels, features, train, share, DAGGER_SHARE * 60 * settings.time_budget,
                        settings.batch_size, settings.seed, settings.threads)


_NOTHING = {"blocks": "droppable residual blocks", "filters": "prunable channel groups",
            "basis": "convolutions worth splitting"}


def _methods(settings: AccelerateSettings) -> tuple[str, ...]:
    """The methods of this run: --methods, or every method; --drop and --blocks are block requests."""
    methods = tuple(dict.fromkeys(settings.methods or METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise GraphoptError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    if settings.drop is not None or settings.blocks:
        if settings.methods and methods != ("blocks",):
            raise GraphoptError("--drop and --blocks name blocks to drop: they go with --methods blocks only")
        return ("blocks",)
    return methods


def _count(actions: list[Action]) -> str:
    counts = {m: sum(a.method == m for a in actions) for m in METHODS}
    return f"{counts['blocks']} droppable blocks, {counts['filters']} channel cuts and {counts['basis']} basis cuts"


def _rank(run: _Run, table, target: float | None) -> tuple[list[Action], dict, bool, int | None]:
    """(cuts best to lose first, their scores, whether block scores came from the cache, how many to cut).

    Every cut is scored by the held-out feature error the network keeps without it (blocks: after training
    adaptors, PRACTISE; channel and basis cuts: after the least-squares refit of their consumers), divided by the
    milliseconds it saves. With a target, channel and basis cuts are then re-ranked by what they cost together
    (graphopt/ranking.py)."""
    settings = run.settings
    if run.given:
        return run.given, {}, False, len(run.given)
    errors, scores, cached, plan_error = {}, {}, False, None
    cuts = [a for a in run.actions if a.method != "blocks"]
    if cuts:
        from graphopt.calibration.cut_scores import PlanError, score_cuts
        with run.stages("cut scores"):
            plan_error = PlanError(run.planner, run.consumers() if run.channels else {}, run.features,
                                   run.held.tensors(), settings.threads)
            scores["cuts"] = score_cuts(plan_error, cuts, run.quiet)
        errors.update((key, score["error"]) for key, score in scores["cuts"].items())
    blocks = run.droppable if any(a.method == "blocks" for a in run.actions) else []
    if blocks:
        with run.stages("recoverability"):
            seconds = SCORING_SHARE * run.seconds_left(FINAL_RESERVE) / len(blocks)
            scores["blocks"], cached = _recoverability(run.original, blocks, run.features, run.train, run.held,
                                                       settings, run.quiet, seconds)
        errors.update((key, score["error"]) for key, score in scores["blocks"].items())
    ranked = sorted(run.actions, key=lambda a: errors[a.id] / max(table.savings_ms[a.id], 1e-3))
    if plan_error is not None and target is not None:
        def enough(accepted: list[Action]) -> bool:
            return predicted_ratio(run.planner.normalise(accepted), table) <= target - RERANK_SLACK

        with run.stages("plan scores"):
            scores["single_cut_ranking"] = [a.id for a in ranked]
            ranked = rerank_by_plan(ranked, errors, table.savings_ms, plan_error, enough,
                                    joins=lambda action: action.method != "blocks")
    return ranked, scores, cached, settings.drop


def _recover_until_met(run: _Run, ranked: list[Action], table, selection: Selection,
                       target: float | None) -> _Outcome:
    """Recover the selected plan and check the result against the target; after a confirmed miss, add the next
    ranked cut and recover again (TargetUnreachable when none is left, or when the machine is too noisy to tell)."""
    while True:
        with run.stages("recovery"):
            recovered = _recover(run, selection.actions)
        with run.stages("verify"):
            check_recovered(run.original, recovered, run.held.tensors(), run.settings.threads)
        model, int8_recovery = run.deliverable(recovered.model)
        with run.stages("verify"):
            check_valid(model)
            agreed = agreement(run.original, model, run.held.tensors(), run.settings.threads)
        with run.stages("final latency"):
            if target is None:
                return _Outcome(model, selection, recovered, agreed, run.backend.compare(run.original, model),
                                int8_recovery)
            check = confirm_target(run.backend, run.original, model, target)
        ids = [a.id for a in selection.actions]
        # the recovered model has the architecture selection measured: that measurement is the best prediction
        selection.attempts.extend(Attempt(ids, selection.ratio, m.ratio, m.noise, m.noisy, stage="final")
                                  for m in check.measurements)
        if check.met:
            return _Outcome(model, selection, recovered, agreed, check, int8_recovery)
        if check.undecided:
            raise TargetUnreachable(f"latency target {target:.3f} could not be confirmed: the machine is too noisy "
                                    f"(final model with {', '.join(ids)} cut measured {check.describe()}; noise "
                                    f"threshold ±{run.settings.noise_threshold:.3f})")
        if selection.size >= len(ranked):
            raise TargetUnreachable(f"latency target {target:.3f} was not met: the final model with every cut "
                                    f"measured {check.describe()}")
        _say(run.quiet, f"the recovered model measured {check.describe()} against a target of {target:.3f}: "
                        f"adding the next cut")
        with run.stages("selection"):
            selection = select(run.backend, run.planner, ranked, table, target=target, start=selection.size + 1,
                               attempts=selection.attempts)


def _recover(run: _Run, plan: list[Action]):
    """The plan applied, consumers of pruned channels refit in closed form, then distillation recovery."""
    from graphopt.calibration.mimic import MimicSettings
    from graphopt.calibration.recovery import recover
    settings = run.settings
    refit = None
    if run.planner.keep(plan):
        from graphopt.calibration.cut_scores import refitter
        refit = refitter(run.planner, run.consumers())
    pruned = run.planner.apply(plan, refit=refit)
    probes = () if settings.lr else LR_CANDIDATES
    share = INT8_RECOVERY_SHARE if run.int8 is not None and settings.int8_recovery else 0.0
    # each learning-rate probe takes a tenth; INT8 recovery, when it follows, keeps its share of what is left
    seconds = (1 - share) * run.seconds_left(FINAL_RESERVE) / (1 + len(probes) / 10)
    _say(run.quiet, f"recovering for up to {seconds:.0f} s ({settings.recover_iterations} steps at most)")
    mimic_settings = MimicSettings(settings.recover_iterations, settings.batch_size,
                                   settings.lr or LR_CANDIDATES[0], seed=settings.seed, seconds=seconds,
                                   mixup=settings.mixup)
    return recover(run.original, pruned, run.planner.cuts(plan), run.features, run.train, run.held.tensors(),
                   mimic_settings, settings.threads, run.quiet, lr_candidates=probes,
                   logits=_class_scores(run.original, run.features) if settings.match_logits else None,
                   from_input=settings.recover_from_input)


def _class_scores(model: onnx.ModelProto, features: list[str]) -> str | None:
    """The first graph output when it is a (batch, classes) score vector other than the features themselves."""
    output = model.graph.output[0]
    dims = output.type.tensor_type.shape.dim
    if output.name in features or len(dims) != 2 or not dims[1].dim_value > 1:
        return None
    return output.name


def _report(run: _Run, calib, table, ranking: tuple, outcome: _Outcome, target: float | None) -> dict:
    ranked, scores, cached = ranking
    check = outcome.final if isinstance(outcome.final, TargetCheck) else None
    latency = check.final if check else outcome.final
    calibration, train, held = run.calibration, run.train, run.held
    recovered = outcome.recovered
    return {
        "graphopt": __version__,
        "versions": versions(),
        "machine": machine(),
        "settings": asdict(run.settings),
        "runtime": run.backend.describe(),
        "calibration": {"folder": str(calib), "images": len(calibration), "train": len(train), "held_out": len(held),
                        "train_files": train.sources(), "held_out_files": held.sources(),
                        "agreement_reliable": held.sources() >= RELIABLE_HELD_OUT_FILES,
                        "fingerprint": calibration.fingerprint()},
        "features": run.features,
        "methods": list(_methods(run.settings)),
        "blocks": {"found": len(run.blocks), "droppable": len(run.droppable)},
        "channel_groups": None if run.channels is None else [g.to_dict() for g in run.channels.groups],
        "candidates": [{"id": a.id, "method": a.method, "macs_share": a.macs_share} for a in run.actions],
        "latency_table": table.to_dict(),
        "recoverability": scores.get("blocks", {}),
        "recoverability_cached": cached,
        "channel_scores": _scores_of(scores, run.actions, "filters"),
        "basis_scores": _scores_of(scores, run.actions, "basis"),
        "ranking": [a.id for a in ranked],
        "single_cut_ranking": scores.get("single_cut_ranking"),
        "selection": outcome.selection.to_dict(),
        "dropped": outcome.selection.dropped,
        "pruned": outcome.selection.pruned,
        "split": outcome.selection.split,
        "target": check.to_dict() if check else None,
        "latency": latency.to_dict(),
        "feature_error": None if recovered is None else {
            "before_recovery": recovered.result.error_before, "after_recovery": recovered.result.error_after,
            "steps": recovered.result.steps, "lr": recovered.lr},
        "int8_recovery": outcome.int8_recovery,
        "agreement_top1": outcome.agreement,
        "rows": _rows(run, table, outcome, latency),
    }


def _scores_of(scores: dict, actions: list[Action], method: str) -> dict:
    ids = {a.id for a in actions if a.method == method}
    return {key: value for key, value in scores.get("cuts", {}).items() if key in ids}


def _rows(run: _Run, table, outcome: _Outcome, latency: Comparison) -> list[dict]:
    """The original, INT8 alone (the user's alternative, when the output is INT8) and graphopt's result side by
    side: latency ratio to the original and top-1 agreement with it on the held-out images."""
    rows = [{"model": "original", "ratio": 1.0, "ms": table.base.median_ms, "agreement_top1": 1.0}]
    if run.int8 is not None and outcome.model is not run.int8:  # quantize_static's rounding alone, for comparison
        with run.stages("verify"):
            agreed = agreement(run.original, run.int8, run.held.tensors(), run.settings.threads)
        rows.append({"model": "int8 alone", "ratio": table.start, "agreement_top1": agreed,
                     "measured": "in the latency table run"})
    rows.append({"model": "graphopt", "ratio": latency.ratio, "ms": latency.other.median_ms,
                 "agreement_top1": outcome.agreement, "dropped": outcome.selection.dropped,
                 "pruned": outcome.selection.pruned, "split": outcome.selection.split,
                 "precision": "int8" if run.int8 is not None else "as given"})
    return rows


def _check_settings(settings: AccelerateSettings) -> None:
    if settings.targets() != 1:
        raise GraphoptError("give exactly one of --target-latency, --target-ms, --drop or --blocks")
    if settings.target_latency is not None and not 0 < settings.target_latency < 1:
        raise GraphoptError(f"--target-latency is a ratio to the original's latency, between 0 and 1 "
                            f"(got {settings.target_latency})")
    if settings.target_ms is not None and settings.target_ms <= 0:
        raise GraphoptError(f"--target-ms must be positive (got {settings.target_ms})")
    if settings.drop is not None and settings.drop < 1:
        raise GraphoptError(f"--drop must be at least 1 (got {settings.drop})")
    for name in ("batch", "repeats", "score_iterations", "recover_iterations", "batch_size"):
        if getattr(settings, name) < 1:
            raise GraphoptError(f"--{name.replace('_', '-')} must be at least 1")
    if settings.threads is not None and settings.threads < 0:
        raise GraphoptError(f"--threads must be 0 (the runtime's default) or more (got {settings.threads})")
    if not 0 < settings.noise_threshold < 1:
        raise GraphoptError(f"--noise-threshold is a relative noise, between 0 and 1 (got {settings.noise_threshold})")
    if settings.importance not in IMPORTANCE:
        raise GraphoptError(f"--importance must be one of {', '.join(IMPORTANCE)} (got {settings.importance})")
    if not settings.time_budget > 0:
        raise GraphoptError(f"--time-budget is in minutes and must be positive (got {settings.time_budget})")
    if settings.max_timing_seconds < settings.min_seconds:
        raise GraphoptError("--max-timing-seconds must be at least --min-seconds")


def _preprocess(settings: AccelerateSettings, model: onnx.ModelProto, input_shapes: dict | None) -> dict:
    """Preprocessing options; an --input-shape of the image input sets the image size unless --size does."""
    options = dict(settings.preprocess)
    name = runtime_inputs(model)[0].name
    if input_shapes and name in input_shapes and "size" not in options and len(input_shapes[name]) == 4:
        options["size"] = tuple(input_shapes[name][2:])
    return options


def _shapes_from_calibration(model: onnx.ModelProto, calibration, batch: int) -> dict | None:
    """Input shapes for a model whose input has dynamic dimensions besides the batch: the calibration samples'
    size at the deployment batch (None when the model fixes them itself)."""
    value = runtime_inputs(model)[0]
    if all(d.HasField("dim_value") for d in value.type.tensor_type.shape.dim[1:]):
        return None
    return {calibration.input_name: (batch, *calibration.tensors(1).shape[1:])}


def _as_onnx(model, example_input) -> onnx.ModelProto:
    """An ONNX model from a path, a ModelProto, or a torch module (exported with a dynamic batch)."""
    if isinstance(model, (str, os.PathLike, onnx.ModelProto)):
        return load_model(model)
    import torch
    if not isinstance(model, torch.nn.Module):
        raise GraphoptError(f"cannot accelerate a {type(model).__name__}: give an ONNX path, a ModelProto or a "
                            f"torch.nn.Module")
    if example_input is None:
        raise GraphoptError("a torch module needs example_input (a tensor of the input's shape) to be exported")
    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer chatter is not for our users
            torch.onnx.export(model, (example_input,), buffer, dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    except Exception as exc:  # exporter errors are many and varied
        raise GraphoptError(f"torch.onnx.export failed: {first_line(exc)}") from None
    finally:
        model.train(was_training)
    return load_model(onnx.load_from_string(buffer.getvalue()))


def _recoverability(original, droppable: list[Block], features, train, held, settings: AccelerateSettings,
                    quiet: bool, seconds: float) -> tuple[dict[str, dict], bool]:
    """Scores per block, from the cache or trained for up to `seconds` each."""
    from graphopt.calibration.mimic import MimicSettings
    from graphopt.calibration.recoverability import score_blocks
    key = cache_key(original.SerializeToString(), train.fingerprint(), held.fingerprint(), __version__,
                    {"features": features, "iterations": settings.score_iterations, "lr": ADAPTOR_LR,
                     "batch_size": settings.batch_size, "seed": settings.seed})
    cache = ScoreCache(None if not settings.use_cache else Path(settings.cache_dir) if settings.cache_dir
                       else default_dir())
    hit = cache.get(key)
    if hit is not None and set(hit) >= {b.id for b in droppable}:
        _say(quiet, "recoverability scores taken from the cache")
        return hit, True
    # adaptors start at identity and have few weights: a larger step, and a short patience since the held-out
    # error of a tiny set settles within a few dozen steps
    mimic = MimicSettings(settings.score_iterations, settings.batch_size, ADAPTOR_LR, eval_every=10, patience=2,
                          seed=settings.seed, seconds=seconds)
    scores = score_blocks(original, droppable, features, train.tensors(), held.tensors(), mimic, settings.threads,
                          quiet)
    result = {block: score.to_dict() for block, score in scores.items()}
    cache.put(key, result)
    return result, False


def _build_engine(backend: LatencyBackend, model: onnx.ModelProto, path) -> None:
    if not hasattr(backend, "build_engine"):
        raise GraphoptError("--engine needs --runtime tensorrt")
    backend.build_engine(model, Path(path))


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, flush=True)
