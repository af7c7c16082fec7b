"""The report of an accelerate run, typed: what was found, measured, chosen and handed back. Its JSON form
(`to_dict`) is what `--report` writes and what pipelines read."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from graphopt.version import __version__
from graphopt.machine import machine, versions
from graphopt.methods import Action
from graphopt.runtime import Comparison
from graphopt.settings import RECOVERY_SHARE, USEFUL_RECOVERY_STEPS
from graphopt.stages.rank import Ranking
from graphopt.stages.state import RELIABLE_HELD_OUT_FILES, Outcome, Run
from graphopt.target import TargetCheck
from graphopt.verify import agreement


@dataclass
class Report:
    """One accelerate run. Ratios are to the original model as given; agreement is top-1 on held-out files."""

    graphopt: str
    versions: dict
    machine: dict
    settings: dict
    runtime: dict
    calibration: dict  # folder, images, train / held-out counts and files, whether agreement is reliable
    features: list[str]  # the tensors recovery matches
    methods: list[str]
    blocks: dict  # found, droppable
    channel_groups: list[dict] | None
    candidates: list[dict]  # every cut on offer: id, method, share of multiply-adds removed
    latency_table: dict | None  # None when INT8 alone met the target before any cut was timed
    scoring: str  # what ranked the cuts: "kl", "recoverability", "given" (--blocks), "none" (INT8 alone met it)
    cut_scores: dict  # method -> cut id -> what the network loses with the cut alone (KL, held-out error)
    recoverability: dict  # block id -> held-out error after adaptor training (recoverability scoring)
    recoverability_cached: bool
    ranking: list[str]  # best to lose first
    single_cut_ranking: list[str] | None  # the ranking before cuts were re-ranked by what they cost together
    unscored: list[str]  # cuts not scored (and so not searched): scoring's share of the time budget ran out
    selection: dict
    dropped: list[str]
    pruned: dict[str, int]  # channel group -> channels kept
    split: dict[str, int]  # node output -> bases kept
    target: dict | None  # the final check against the target
    latency: dict  # the result against the original, measured side by side
    feature_error: dict | None  # before and after recovery
    int8_recovery: dict | None
    agreement_top1: float | None
    rows: list[dict]  # original, INT8 alone (when INT8), graphopt
    quality: dict | None = None  # the accuracy floor and the result's estimated top-1 loss (stages/floor.py)
    frontier: list[dict] = field(default_factory=list)  # each model measured: ratio, estimated loss (frontier.py)
    budget: dict = field(default_factory=dict)  # the time budget and how the stages shared it (`budget_split`)
    status: str = "ok"
    output: str | None = None
    engine: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage

    def to_dict(self) -> dict:
        return asdict(self)


def build_report(run: Run, calib, table, ranking: Ranking | None, outcome: Outcome) -> Report:
    """The report; `table` and `ranking` are None when INT8 alone met the target and no cut was timed or ranked."""
    ranking = ranking or Ranking([], "none")
    check = outcome.final if isinstance(outcome.final, TargetCheck) else None
    latency = outcome.latency
    calibration, train, held, recovered = run.calibration, run.train, run.held, outcome.recovered
    return Report(
        graphopt=__version__, versions=versions(), machine=machine(), settings=asdict(run.settings),
        runtime=run.backend.describe(),
        calibration={"folder": str(calib), "images": len(calibration), "train": len(train), "held_out": len(held),
                     "train_files": train.sources(), "held_out_files": held.sources(),
                     "agreement_reliable": held.sources() >= RELIABLE_HELD_OUT_FILES,
                     "fingerprint": calibration.fingerprint()},
        features=run.features, methods=list(run.methods),
        blocks={"found": len(run.blocks), "droppable": len(run.droppable)},
        channel_groups=None if run.channels is None else [g.to_dict() for g in run.channels.groups],
        candidates=[{"id": a.id, "method": a.method, "macs_share": a.macs_share} for a in run.actions],
        latency_table=None if table is None else table.to_dict(), scoring=ranking.scoring,
        cut_scores={m: _scores_of(ranking, run.actions, m) for m in run.methods},
        recoverability=ranking.block_recoverability, recoverability_cached=ranking.cached,
        ranking=[a.id for a in outcome.selection.ranked or ranking.ranked],
        single_cut_ranking=ranking.single_cut_ranking, unscored=ranking.unscored,
        selection=outcome.selection.to_dict(), dropped=outcome.selection.dropped,
        pruned=outcome.selection.pruned, split=outcome.selection.split,
        target=check.to_dict() if check else None, latency=latency.to_dict(),
        feature_error=None if recovered is None else {
            "before_recovery": recovered.result.error_before, "after_recovery": recovered.result.error_after,
            "steps": recovered.result.steps, "stopped": recovered.result.stopped, "lr": recovered.lr},
        int8_recovery=outcome.int8_recovery, agreement_top1=outcome.agreement,
        rows=_rows(run, table, outcome, latency))


# which part of the run each stage's time belongs to; any other stage is preparation
STAGE_GROUPS = {"search": ("cut scores", "recoverability", "latency table", "plan scores", "selection"),
                "recovery": ("recovery", "int8 recovery"),
                "checks": ("verify", "quantize", "final latency", "quality", "write", "engine")}


def budget_split(run: Run, outcome: Outcome, seconds: dict[str, float]) -> dict:
    """The time budget, the part kept for recovery, the seconds each part of the run took, the recovery steps
    made, and a note when recovery got fewer than USEFUL_RECOVERY_STEPS."""
    groups = {name: 0.0 for name in ("prepare", *STAGE_GROUPS)}
    for stage, spent in seconds.items():
        group = next((name for name, stages in STAGE_GROUPS.items() if stage in stages), "prepare")
        groups[group] = round(groups[group] + spent, 1)
    budget = 60 * run.settings.time_budget
    record = {"budget_s": budget, "recovery_kept_s": RECOVERY_SHARE * budget, "spent_s": groups,
              "total_s": round(sum(groups.values()), 1), "recovery_steps": recovery_steps(outcome)}
    steps = record["recovery_steps"]
    if steps is not None and steps < USEFUL_RECOVERY_STEPS:
        record["note"] = f"{under_recovered(outcome)} in {groups['recovery']:.0f} s"
    return record


def recovery_steps(outcome: Outcome) -> int | None:
    """Training steps of the recovery that ran (feature recovery), None when nothing was recovered."""
    return None if outcome.recovered is None else outcome.recovered.result.steps


def under_recovered(outcome: Outcome) -> str:
    """Why recovery made few steps, in words: the time budget, or early stopping (its held-out error had stopped
    improving, so more time would not have helped)."""
    result = outcome.recovered.result
    if result.stopped == "patience":
        return (f"recovery stopped early after {result.steps} steps: its held-out feature error had stopped "
                f"improving (from {result.error_before:.4f} to {result.error_after:.4f} at best)")
    return (f"recovery made only {result.steps} steps (fewer than {USEFUL_RECOVERY_STEPS}): a longer --time-budget, a "
            f"GPU or a milder target recovers more")


def _scores_of(ranking: Ranking, actions: list[Action], method: str) -> dict:
    ids = {a.id for a in actions if a.method == method}
    return {key: value for key, value in ranking.cut_scores.items() if key in ids}


def _rows(run: Run, table, outcome: Outcome, latency: Comparison) -> list[dict]:
    """The original, INT8 alone (the user's alternative, when the output is INT8) and graphopt's result side by
    side: latency ratio to the original and top-1 agreement with it on the held-out images."""
    rows = [{"model": "original", "ratio": 1.0, "ms": latency.base.median_ms, "agreement_top1": 1.0}]
    if run.int8 is not None and outcome.model is not run.int8:  # quantize_static's rounding alone, for comparison
        with run.stages("verify"):
            agreed = agreement(run.original, run.int8, run.held.tensors(), run.settings.work_threads)
        rows.append({"model": "int8 alone", "ratio": table.start, "agreement_top1": agreed,
                     "measured": "in the latency table run"})
    rows.append({"model": "graphopt", "ratio": latency.ratio, "ms": latency.other.median_ms,
                 "agreement_top1": outcome.agreement, "dropped": outcome.selection.dropped,
                 "pruned": outcome.selection.pruned, "split": outcome.selection.split,
                 "precision": "int8" if run.int8 is not None else "as given"})
    return rows
