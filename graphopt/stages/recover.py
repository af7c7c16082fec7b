"""The cut-and-recover stages: INT8 alone when it meets the target, else selection on measured latency,
recovery, verification, and the final check against the target (adding the next cut after a confirmed miss)."""
from __future__ import annotations

import onnx

from graphopt.errors import TargetUnreachable
from graphopt.features import class_scores
from graphopt.methods import Action
from graphopt.selection import Attempt, LatencyTable, Selection, select
from graphopt.settings import FINAL_RESERVE, INT8_RECOVERY_SHARE, LR_CANDIDATES
from graphopt.stages.rank import Ranking, order
from graphopt.stages.state import Outcome, Run, say
from graphopt.stages.table import complete_table
from graphopt.target import confirm_target
from graphopt.verify import agreement, check_recovered, check_valid


def int8_alone(run: Run) -> Outcome | None:
    """The cheapest answer first: the original quantized by onnxruntime's quantize_static (the user's own
    alternative), measured against the original before any cut is timed. When it meets the latency goal (with no
    goal: when it is faster than the original) it is handed back as it is, in seconds, with no block dropped and no
    training; a miss is final when the model has nothing to cut or there is no goal to cut towards. None when a cut
    is needed (or the output is not INT8, or the goal is a number of blocks)."""
    settings = run.settings
    if run.int8 is None or settings.drop is not None or settings.blocks is not None:
        return None
    goal = settings.targets() == 1
    with run.stages("final latency"):
        target = settings.target_latency if goal else 1.0
        if target is None:  # a goal in milliseconds becomes a ratio once the original has been timed
            target = settings.target_ms / run.backend.compare(run.original, run.int8).base.median_ms
        check = confirm_target(run.backend, run.original, run.int8, target)
    if not check.met:
        if run.actions and goal:
            say(run.quiet, f"INT8 alone measured {check.describe()} against a target of {target:.3f}: cuts needed")
            return None
        if not goal:
            raise TargetUnreachable(f"INT8 alone is not faster than the original here (measured {check.describe()}), "
                                    f"and without a goal graphopt does not cut: give --target-latency to search cuts")
        raise TargetUnreachable(f"latency target {target:.3f} was not met: the model has nothing to cut and "
                                f"INT8 alone measured {check.describe()}")
    say(run.quiet, f"INT8 alone meets the target: measured ratio {check.final.ratio:.3f}, nothing cut")
    attempts = [Attempt([], check.final.ratio, m.ratio, m.noise, m.noisy, stage="final") for m in check.measurements]
    with run.stages("verify"):
        check_valid(run.int8)
        agreed = agreement(run.original, run.int8, run.held.tensors(), run.settings.work_threads)
    return Outcome(run.int8, Selection([], check.final.ratio, attempts), None, agreed, check)


def cut_and_recover(run: Run, table: LatencyTable, target: float | None,
                    ranking: Ranking) -> tuple[Ranking, Outcome, LatencyTable]:
    """Order the scored cuts by loss per millisecond, select on measured latency, recover, and check the result
    against the target. Returns the table too: it gains the cuts left untimed when no plan of the timed ones
    measured under the target (the timed cuts at once can pass the reachability check within its noise, 0.804 for
    a target of 0.8 on Lite1, and every plan still miss)."""
    ranking = order(run, ranking, table, target)
    try:
        selection = _select(run, table, target, ranking)
    except TargetUnreachable:
        if target is None or not table.untimed:
            raise
        say(run.quiet, "no plan of the cuts timed measured under the target: timing the rest")
        with run.stages("latency table"):
            table = complete_table(run, ranking)
        ranking = order(run, ranking, table, target)
        selection = _select(run, table, target, ranking)
    say(run.quiet, f"cutting {', '.join(a.id for a in selection.actions)}: measured ratio {selection.ratio:.3f}")
    return ranking, _recover_until_met(run, table, selection, target, ranking.errors), table


def _select(run: Run, table: LatencyTable, target: float | None, ranking: Ranking) -> Selection:
    with run.stages("selection"):
        return select(run.backend, run.planner, ranking.ranked, table, target=target, count=ranking.count,
                      errors=ranking.errors)


def _recover_until_met(run: Run, table, selection: Selection, target: float | None,
                       errors: dict[str, float]) -> Outcome:
    """Recover the selected plan and check the result against the target; after a confirmed miss, add the next
    ranked cut and recover again (TargetUnreachable when none is left, or when the machine is too noisy to tell)."""
    previous = None  # the last recovered model: a plan with one more cut starts from what it learned
    while True:
        with run.stages("recovery"):
            recovered = _recover(run, selection.actions, previous)
            previous = recovered.model
        with run.stages("verify"):
            check_recovered(run.original, recovered, run.held.tensors(), run.settings.work_threads)
        model, int8_recovery = run.deliverable(recovered.model)
        with run.stages("verify"):
            check_valid(model)
            agreed = agreement(run.original, model, run.held.tensors(), run.settings.work_threads)
        with run.stages("final latency"):
            if target is None:
                return Outcome(model, selection, recovered, agreed, run.backend.compare(run.original, model),
                                int8_recovery)
            check = confirm_target(run.backend, run.original, model, target)
        ids = [a.id for a in selection.actions]
        # the recovered model has the architecture selection measured: that measurement is the best prediction
        selection.attempts.extend(Attempt(ids, selection.ratio, m.ratio, m.noise, m.noisy, stage="final")
                                  for m in check.measurements)
        if check.met:
            return Outcome(model, selection, recovered, agreed, check, int8_recovery)
        if check.undecided:
            raise TargetUnreachable(f"latency target {target:.3f} could not be confirmed: the machine is too noisy "
                                    f"(final model with {', '.join(ids)} cut measured {check.describe()}; noise "
                                    f"threshold ±{run.settings.noise_threshold:.3f})")
        if selection.size >= len(selection.ranked):
            raise TargetUnreachable(f"latency target {target:.3f} was not met: the final model with every cut "
                                    f"measured {check.describe()}")
        say(run.quiet, f"the recovered model measured {check.describe()} against a target of {target:.3f}: "
                        f"adding the next cut")
        with run.stages("selection"):
            selection = select(run.backend, run.planner, selection.ranked, table, target=target,
                               start=selection.size + 1, attempts=selection.attempts, errors=errors)


def _recover(run: Run, plan: list[Action], warm: onnx.ModelProto | None = None):
    """The plan applied, consumers of pruned channels refit in closed form, then distillation recovery of
    everything after the first change; from `warm`'s trained weights where it has them (after a final check
    missed, the plan with one more cut gets what is left of the budget, often a few steps: starting again from
    the original's weights, Lite0 runs handed back models recovered for 1-2 steps, docs/studies/
    defaults_imagenet.md)."""
    from graphopt.calibration.recovery.mimic import MimicSettings
    from graphopt.calibration.recovery.recover import recover
    settings = run.settings
    pruned = run.apply(plan, weights_from=warm)
    probes = () if settings.lr else LR_CANDIDATES
    share = INT8_RECOVERY_SHARE if run.int8 is not None and settings.int8_recovery else 0.0
    # each learning-rate probe takes a tenth; INT8 recovery, when it follows, keeps its share of what is left
    seconds = (1 - share) * run.seconds_left(FINAL_RESERVE) / (1 + len(probes) / 10)
    processes = settings.recovery_processes
    say(run.quiet, f"recovering for up to {seconds:.0f} s ({settings.recover_iterations} steps at most"
                   + (f", {processes} processes)" if processes > 1 else ")"))
    mimic_settings = MimicSettings(settings.recover_iterations, settings.batch_size,
                                   settings.lr or LR_CANDIDATES[0], seed=settings.seed, seconds=seconds)
    arguments = (run.original, pruned, run.planner.cuts(plan), run.features, run.train, run.held.tensors(),
                 mimic_settings, settings.work_threads, run.quiet, probes,
                 class_scores(run.original, run.features) if settings.match_logits else None)
    if processes > 1:
        from graphopt.calibration.recovery.distributed import recover_in_processes
        return recover_in_processes(processes, *arguments)
    return recover(*arguments)
