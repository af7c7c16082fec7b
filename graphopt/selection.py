"""Choosing cuts under a latency target, on measured latency, whatever method made them (graphopt/methods).

Savings of single actions come from the latency table (each cut model timed against the original, interleaved,
with the run's own noise estimate); a saving that is negative beyond the noise or larger than plausible for the
action's share of multiply-adds is re-measured before it is used. A plan is chosen in score order on predicted
savings, then timed for real, and actions are added until the measured ratio meets the target. Whether the target
is reachable at all is checked first, by timing the model with every action at once (each channel group at its
narrowest, each split node at its lowest rank). The final model is checked again by `confirm_target` (see
graphopt/target.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from graphopt.errors import GraphoptError, TargetUnreachable
from graphopt.methods import Action, Planner, method
from graphopt.methods.basis import NAME as BASIS
from graphopt.methods.blocks import NAME as BLOCKS
from graphopt.methods.filters import NAME as FILTERS
from graphopt.methods.registry import counts
from graphopt.runtime import Comparison, LatencyBackend, LatencyStats
from graphopt.runtime.base import TimingRun

# An action's measured saving above this multiple of its share of multiply-adds (plus the run's noise) is suspect;
# measured across torchvision CNNs, block savings stay within about 1.5x of the MAC share
# (docs/studies/blocks_latency.md).
PLAUSIBLE_MACS_MULTIPLE = 2.0
REMEASURE_TRIES = 2
# Predictions add up several single-block savings, so the table is timed to this share of the noise threshold.
TABLE_NOISE_SHARE = 0.5
# Actions per interleaved run of the table: fewer models per run keep each one's sessions warm and its noise low.
TABLE_CHUNK = 12
# Plans measured while giving back cuts a plan that met the target with room to spare does not need: each costs
# one interleaved timing of the plan (seconds on EfficientNet-Lite), against minutes of recovery for every cut kept.
GIVE_BACK_TRIES = 4


@dataclass
class LatencyTable:
    """Measured savings of single actions, as fractions of the original's latency: a fraction comes from the ratio of
    one interleaved run, so it stays right when a re-measurement runs at another machine load than the table."""

    base: LatencyStats
    savings: dict[str, float]  # action id -> fraction of the original's latency saved by that action alone
    noise: float  # relative noise of the table's ratios
    noisy: bool
    start: float = 1.0  # ratio before any cut: below 1 when every variant is timed in INT8
    remeasured: dict[str, list[float]] = field(default_factory=dict)  # action id -> implausible savings replaced
    implausible: list[str] = field(default_factory=list)  # still implausible after re-measuring
    untimed: list[str] = field(default_factory=list)  # cuts not timed: the timed ones already save enough

    @property
    def savings_ms(self) -> dict[str, float]:
        return {action: share * self.base.median_ms for action, share in self.savings.items()}

    def to_dict(self) -> dict:
        return {"base": self.base.to_dict(), "start_ratio": self.start, "savings": self.savings,
                "savings_ms": self.savings_ms, "noise": self.noise, "noisy": self.noisy, "remeasured": self.remeasured,
                "implausible": self.implausible, "untimed": self.untimed}

    def timed(self, actions: list[Action]) -> list[Action]:
        """The actions this table has a saving for, in their order."""
        return [a for a in actions if a.id in self.savings]


@dataclass
class Attempt:
    """One measured plan: its action ids, the ratio the table predicted and the ratio measured."""

    actions: list[str]
    predicted_ratio: float
    measured_ratio: float
    noise: float
    noisy: bool
    stage: str = "selection"  # "selection" (the cut alone) or "final" (the recovered model)


@dataclass
class Selection:
    actions: list[Action]  # the plan: blocks in graph order, then channel groups
    ratio: float  # measured latency ratio of the plan to the original
    attempts: list[Attempt] = field(default_factory=list)
    size: int = 0  # how many of the ranked actions the plan was made from
    ranked: list[Action] = field(default_factory=list)  # the order the plan was taken from
    landing: str | None = None  # why the plan measured below its target by more than the noise, when it did

    @property
    def dropped(self) -> list[str]:
        return [a.target for a in self.actions if a.method == BLOCKS]

    @property
    def pruned(self) -> dict[str, int]:
        """Channel group -> channels kept."""
        return {a.target: a.keep for a in self.actions if a.method == FILTERS}

    @property
    def split(self) -> dict[str, int]:
        """Node output -> bases kept."""
        return {a.target: a.keep for a in self.actions if a.method == BASIS}

    def to_dict(self) -> dict:
        return {"actions": [a.id for a in self.actions], "dropped": self.dropped, "pruned": self.pruned,
                "split": self.split, "ratio": self.ratio, "landing": self.landing,
                "attempts": [asdict(a) for a in self.attempts]}


def latency_table(backend: LatencyBackend, planner: Planner, actions: list[Action], quiet: bool = False,
                  start: onnx.ModelProto | None = None,
                  enough: Callable[[LatencyTable], bool] | None = None) -> LatencyTable:
    """Time the original and each single action, TABLE_CHUNK actions per interleaved run, in the order given;
    re-time implausible savings.

    `start` is the model the cuts are made from when that is not the original itself (its INT8 form): it is timed
    in the same runs, and each saving is the fall in ratio from it. `enough(table so far)`, asked after each run,
    ends the timing early: the rest are listed as `untimed` (the cuts a target could not need).
    """
    firsts = [planner.model] if start is None else [planner.model, start]
    threshold = TABLE_NOISE_SHARE * backend.settings.noise_threshold
    chunks = [actions[i:i + TABLE_CHUNK] for i in range(0, len(actions), TABLE_CHUNK)]
    runs, origins, savings = [], [], {}
    for first in range(0, len(chunks), backend.parallel_runs):  # as many runs at once as the backend has machines
        wave = chunks[first:first + backend.parallel_runs]
        progress = None if quiet else f"latency table {first + len(wave)}/{len(chunks)}"
        timed = _timed_savings(backend, firsts, [[planner.apply([a]) for a in chunk] for chunk in wave], threshold,
                               progress)
        for chunk, (run, origin, found) in zip(wave, timed):
            runs.append(run)
            origins.append(origin)
            savings.update(zip((a.id for a in chunk), found))
        table = LatencyTable(runs[0].stats[0], dict(savings), max(r.noise for r in runs),
                             any(r.noisy for r in runs), float(np.mean(origins)))
        if enough is not None and len(savings) < len(actions) and enough(table):
            table.untimed = [a.id for a in actions[len(savings):]]
            break
    actions = table.timed(actions)
    for _ in range(REMEASURE_TRIES):
        suspects = [a for a in actions if not _plausible(table, a)]
        if not suspects:
            return table
        [(_, _, found)] = _timed_savings(backend, firsts, [[planner.apply([a]) for a in suspects]], threshold, None)
        for action, saving in zip(suspects, found):
            table.remeasured.setdefault(action.id, []).append(table.savings[action.id])
            table.savings[action.id] = saving
    table.implausible = [a.id for a in actions if not _plausible(table, a)]
    return table


def _timed_savings(backend: LatencyBackend, firsts: list[onnx.ModelProto], groups: list[list[onnx.ModelProto]],
                   threshold: float, progress: str | None) -> list[tuple[TimingRun, float, list[float]]]:
    """For each group of models, (the run, the ratio cuts start from, each model's saving) from one interleaved
    run of `firsts` + the group; several runs at once where the backend can.

    Ratios are taken to the mean of the original and its control copy, which ran in the same rounds: with many
    models in a run, one copy of the original was measured reading a few percent slow, which made every small
    cut look that much larger."""
    jobs = [[*firsts, *models] for models in groups]
    runs = [backend.time_run(jobs[0], progress, threshold)] if len(jobs) == 1 else backend.time_runs(jobs, threshold)
    timed = []
    for run, models in zip(runs, groups):
        scale = 2 / (1 + run.control_ratio)
        origin = 1.0 if len(firsts) == 1 else run.ratio(1) * scale
        timed.append((run, origin, [origin - run.ratio(i) * scale
                                    for i in range(len(firsts), len(firsts) + len(models))]))
    return timed


def _plausible(table: LatencyTable, action: Action) -> bool:
    """A saving within the noise of zero or more, and (where the action's MAC share is known) within the noise of
    PLAUSIBLE_MACS_MULTIPLE times that share."""
    share = table.savings[action.id]
    upper = PLAUSIBLE_MACS_MULTIPLE * action.macs_share + table.noise if action.macs_share > 0 else 1.0
    return -table.noise <= share <= upper


def check_reachable(backend: LatencyBackend, planner: Planner, actions: list[Action], target: float) -> float:
    """Measured ratio with every action at once; raises TargetUnreachable if even that misses `target`."""
    comparison = backend.compare(planner.model, planner.apply(actions))
    if comparison.ratio > target + comparison.noise:
        raise TargetUnreachable(f"latency target {target:.3f} of the original cannot be met: every cut at once "
                                f"({_describe(planner.normalise(actions))}) measures {_figure(comparison)}")
    return comparison.ratio


def select(backend: LatencyBackend, planner: Planner, ranked: list[Action], table: LatencyTable,
           target: float | None = None, count: int | None = None, start: int = 1,
           attempts: list[Attempt] | None = None, errors: dict[str, float] | None = None) -> Selection:
    """The plan of the first actions in `ranked` order (best to lose first) whose measured ratio meets `target`, or
    of the first `count`. `start` is the fewest actions to try (after a final model missed the target, one more
    than it had); `attempts` are earlier attempts to keep.

    With `errors` (what the network loses with each action alone), the action that brings a plan under the target
    is the one that loses least among those predicted to get it there: ranked by loss per millisecond, the next
    one is often a large cut that overshoots the target when a small one would do. A first plan that measures
    below the target by more than a cut saves gives that cut back (`_give_back`). The order used is the
    selection's `ranked` (one more cut after a miss is the next in it).
    """
    attempts, ranked = list(attempts or []), list(ranked)
    if count is not None:
        if not 1 <= count <= len(ranked):
            raise GraphoptError(f"--drop {count}: the model has {len(ranked)} droppable blocks")
        comparison = _attempt(backend, planner, ranked[:count], table, attempts)
        return Selection(planner.normalise(ranked[:count]), comparison.ratio, attempts, count, ranked)
    assert target is not None
    size = start
    while size <= len(ranked):
        # smallest prefix predicted to reach the target
        while size < len(ranked) and predicted_ratio(planner.normalise(ranked[:size]), table, attempts) > target:
            size += 1
        if errors:
            _finish_lightly(planner, ranked, size, table, attempts, target, errors)
        comparison = _attempt(backend, planner, ranked[:size], table, attempts)
        if comparison.ratio <= target:
            plan, landing = planner.normalise(ranked[:size]), None
            if errors and start == 1:  # not after a final model missed: it has just been found to need more
                plan, comparison, landing = _give_back(backend, planner, plan, table, attempts, target, errors,
                                                       comparison)
            return Selection(plan, comparison.ratio, attempts, size, ranked, landing)
        size += 1
    measured = [a for a in attempts if a.stage == "selection"] or attempts
    raise TargetUnreachable(f"latency target {target:.3f} was not met: the best measured ratio was "
                            f"{min(a.measured_ratio for a in measured):.3f} with up to {len(ranked)} cuts")


def _finish_lightly(planner: Planner, ranked: list[Action], size: int, table: LatencyTable,
                    attempts: list[Attempt], target: float, errors: dict[str, float]) -> None:
    """Move into place `size` - 1 of `ranked` the action of least error that, after the ones before it, is
    predicted to reach the target (the one there already, when none loses less)."""
    head = ranked[:size - 1]
    reaching = [i for i in range(size - 1, len(ranked))
                if predicted_ratio(planner.normalise([*head, ranked[i]]), table, attempts) <= target]
    if reaching:
        best = min(reaching, key=lambda i: (errors.get(ranked[i].id, float("inf")), i))
        ranked.insert(size - 1, ranked.pop(best))


def _give_back(backend: LatencyBackend, planner: Planner, plan: list[Action], table: LatencyTable,
               attempts: list[Attempt], target: float, errors: dict[str, float], comparison: Comparison
               ) -> tuple[list[Action], Comparison, str | None]:
    """The plan without the cuts it does not need, its measurement (`comparison`, the last of `attempts`) and, when
    it still sits below the target by more than the noise, why (None when it landed):
    every cut kept costs quality, so a plan lands on the target, not past it. While the measured ratio is below the
    target by more than its noise, a cut is put back and the plan re-measured; the plan without it stands if it
    still meets the target by its noise, and otherwise the next cut is tried. Measurement decides, because summed
    single-cut savings mispredict plans (on Lite0 many channel cuts measured 4-5% below a 0.8 target; at INT8 the
    quantized graph fuses differently once neighbours are gone: plans predicted at 0.437 and 0.439 measured 0.521
    and 0.346). A cut is tried when its predicted saving fits in the room, or would fit if the prediction were off
    by as much as the plan's own was. GIVE_BACK_TRIES measurements at most."""
    tried: set[str] = set()
    miss = abs(attempts[-1].measured_ratio - attempts[-1].predicted_ratio)
    for _ in range(GIVE_BACK_TRIES):
        room = target - comparison.ratio - comparison.noise
        scale = additivity(table, attempts)
        back = _next_to_give_back([a for a in plan if a.id not in tried], room / scale, (room + miss) / scale,
                                  table, errors)
        if len(plan) < 2 or room <= 0 or back is None:
            break
        tried.add(back.id)
        trial = [a for a in plan if a is not back]
        measured = _attempt(backend, planner, trial, table, attempts)
        if measured.ratio + measured.noise <= target:
            plan, comparison = trial, measured
            miss = abs(measured.ratio - attempts[-1].predicted_ratio)
    return plan, comparison, _landing(plan, comparison, target, sum(a.id in tried for a in plan))


def _landing(plan: list[Action], comparison: Comparison, target: float, missed: int) -> str | None:
    """Why a plan measured below its target by more than the noise stands as it is (None when it does not);
    `missed`: how many of its cuts were tried and could not be given back."""
    room = target - comparison.ratio - comparison.noise
    if room <= 0:
        return None
    where = f"measured {comparison.ratio:.3f} (noise ±{comparison.noise:.3f}) against a target of {target:.3f}"
    if len(plan) < 2:
        return f"{where}: the plan is one cut, the least-losing one that reaches the target"
    if missed == len(plan):
        return f"{where}: giving back any one of its {missed} cuts misses the target"
    if not missed:
        return f"{where}: every cut in the plan is predicted to save more than the {room:.3f} of room"
    return (f"{where}: giving back {missed} of its {len(plan)} cuts, one at a time, missed the target, and no "
            f"other was tried (at most {GIVE_BACK_TRIES} trials, or the others are predicted too large)")


def _next_to_give_back(plan: list[Action], room: float, reach: float, table: LatencyTable,
                       errors: dict[str, float]) -> Action | None:
    """Of the cuts predicted to save less than `room` (in the table's own scale), the one that loses most; when
    none is, of those that save less than `reach`, the one predicted to save least; None when no cut is left."""
    fits = [a for a in plan if table.savings[a.id] < room]
    if fits:
        return max(fits, key=lambda a: errors.get(a.id, 0.0))
    return min((a for a in plan if table.savings[a.id] < reach), key=lambda a: table.savings[a.id], default=None)


def predicted_ratio(plan: list[Action], table: LatencyTable, attempts: list[Attempt] = ()) -> float:
    """The ratio predicted for the plan: its single-action savings added up, scaled by how the plans already
    measured in this run compared with their own sums (savings do not add exactly: on EfficientNet-Lite0 two
    blocks measured 87% of their summed saving)."""
    return table.start - _summed([a.id for a in plan], table) * additivity(table, attempts)


def additivity(table: LatencyTable, attempts: list[Attempt]) -> float:
    """Measured saving over summed single-action saving, across the selection attempts so far (1 before any),
    kept within [0.5, 1.5] so one odd measurement cannot swing later predictions far."""
    measured = [a for a in attempts if a.stage == "selection"]
    summed = sum(_summed(a.actions, table) for a in measured)
    if not measured or summed <= 0:
        return 1.0
    return min(1.5, max(0.5, sum(table.start - a.measured_ratio for a in measured) / summed))


def _summed(ids: list[str], table: LatencyTable) -> float:
    return sum(max(0.0, table.savings[i]) for i in ids)


def _attempt(backend: LatencyBackend, planner: Planner, chosen: list[Action], table: LatencyTable,
             attempts: list[Attempt]) -> Comparison:
    plan = planner.normalise(chosen)
    comparison = backend.compare(planner.model, planner.apply(plan))
    predicted = predicted_ratio(plan, table, attempts)
    attempts.append(Attempt([a.id for a in plan], predicted, comparison.ratio, comparison.noise, comparison.noisy))
    return comparison


def _describe(plan: list[Action]) -> str:
    return ", ".join(f"{count} {method(m).at_limit}" for m, count in counts(plan).items() if count)


def _figure(comparison: Comparison) -> str:
    return f"{comparison.ratio:.3f} (noise ±{comparison.noise:.3f})"
