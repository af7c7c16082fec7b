"""The rank stage: every cut scored by what the network loses without it (`score`, before any timing), then
ordered by that loss per millisecond it saves (`order`, once the latency table has timed it), and re-ranked by
what cuts cost together (`rerank_by_plan`).

Single-cut scores (held-out cost per millisecond saved: KL of class scores or feature error) miss how cuts
interact: two cuts that each cost little can cost much together (adjacent blocks on Lite0 compound), most of all
where one changes what the other's refit was solved for.
`rerank_by_plan` walks the single-cut ranking lazily (CELF-style greedy): a candidate's cost is re-measured as the
rise in the plan's error when it joins the cuts accepted so far; if that re-measured cost per millisecond is no
longer the best, the candidate goes back in line and the next one is looked at. Only as many cuts as the target
needs (with some slack) are re-measured; the rest follow in their single-cut order.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from graphopt.blocks import Block
from graphopt.cache import ScoreCache, cache_key, default_dir
from graphopt.errors import GraphoptError
from graphopt.features import class_scores
from graphopt.methods import Action, method
from graphopt.selection import predicted_ratio
from graphopt.settings import (ADAPTOR_LR, FINAL_RESERVE, KL_VIEWS, RERANK_SLACK, SCORING_SHARE,
                               AccelerateSettings)
from graphopt.stages.state import Run, say
from graphopt.version import __version__


@dataclass
class Ranking:
    """What the rank stage hands on: the cuts, best to lose first, and what ranked them."""

    ranked: list[Action]
    scoring: str  # "kl", "recoverability", or "given" (--blocks named the cuts: nothing scored)
    cut_scores: dict[str, dict] = field(default_factory=dict)  # cut id -> {"error"}, every cut measured untrained
    block_recoverability: dict[str, dict] = field(default_factory=dict)  # block id -> score after adaptor training
    cached: bool = False  # the block recoverability scores came from the cache
    count: int | None = None  # how many cuts to make (--drop / --blocks); None: as many as the target needs
    single_cut_ranking: list[str] | None = None  # the order before cuts were re-ranked by what they cost together
    unscored: list[str] = field(default_factory=list)  # cuts left unscored: scoring's share of the budget ran out
    plan_error: object | None = field(default=None, repr=False)  # PlanError the cuts were scored with, for re-ranking

    @property
    def errors(self) -> dict[str, float]:
        """What the network loses with each cut alone, whichever way it was scored."""
        return {key: score["error"] for scores in (self.cut_scores, self.block_recoverability)
                for key, score in scores.items()}


def score(run: Run) -> Ranking:
    """Every cut scored by what the network loses without it; not yet ordered (that needs the latency table).

    By KL (models with class scores, unless --scoring says otherwise): the class scores' KL divergence from the
    original's on held-out images, each cut applied without training (channel cuts after the refit of their
    consumers). By recoverability: held-out feature error, blocks after training adaptors (PRACTISE), channel and
    basis cuts after the refit."""
    settings = run.settings
    if run.given:
        return Ranking(run.given, "given", count=len(run.given))
    logits = _kl_scores(run)
    by_kl = logits is not None
    with_adaptors = any(method(a.method).scored_with_adaptors for a in run.actions)
    blocks = run.droppable if with_adaptors and not by_kl else []  # trained for recoverability
    cuts = [a for a in run.actions if by_kl or not method(a.method).scored_with_adaptors]
    ranking = Ranking([], "kl" if by_kl else "recoverability", count=settings.drop)
    if cuts:
        from graphopt.calibration.scoring.cut_scores import PlanError, score_cuts
        with run.stages("cut scores"):
            ranking.plan_error = PlanError(run.planner, run.consumers() if run.channels else {}, run.features,
                                           _scoring_images(run, by_kl), settings.work_threads, logits)
            # largest first: when the budget ends scoring early, the cuts left are those that save least
            cuts = sorted(cuts, key=lambda a: -a.macs_share)
            ranking.cut_scores = score_cuts(ranking.plan_error, cuts, run.quiet, stop=run.scoring_over,
                                            cluster=run.cluster)
            ranking.unscored = [a.id for a in cuts if a.id not in ranking.cut_scores]
            if ranking.unscored:
                say(run.quiet, f"{len(ranking.cut_scores)} of {len(cuts)} cuts scored: scoring's share of the time "
                               f"budget is spent")
    if blocks:
        with run.stages("recoverability"):
            seconds = SCORING_SHARE * run.seconds_left(FINAL_RESERVE) / len(blocks)
            ranking.block_recoverability, ranking.cached = _recoverability(
                run.original, blocks, run.features, run.train, run.held, settings, run.quiet, seconds)
    return ranking


def timing_order(actions: list[Action], ranking: Ranking) -> list[Action]:
    """The order to time cuts in, before any is timed: what each loses per share of multiply-adds it removes (the
    saving it is predicted to make), so a table that stops early has timed the cuts a plan would take first."""
    if ranking.scoring == "given":
        return actions
    errors = ranking.errors
    return sorted((a for a in actions if a.id in errors), key=lambda a: errors[a.id] / max(a.macs_share, 1e-3))


def order(run: Run, ranking: Ranking, table, target: float | None) -> Ranking:
    """The timed cuts best to lose first: loss divided by the milliseconds each saves. With a target, the cuts a
    plan is re-measured for are then re-ranked by what they cost together (`rerank_by_plan`): every cut by KL,
    channel and basis cuts by recoverability."""
    if ranking.scoring == "given":
        return ranking
    by_kl, plan_error = ranking.scoring == "kl", ranking.plan_error
    errors, saved_ms = ranking.errors, table.savings_ms
    ranked = sorted(table.timed(run.actions), key=lambda a: errors[a.id] / max(saved_ms[a.id], 1e-3))
    if plan_error is not None and target is not None:
        def enough(accepted: list[Action]) -> bool:  # or out of the search's time: the rest keep their order
            return predicted_ratio(run.planner.normalise(accepted), table) <= target - RERANK_SLACK or \
                run.search_over()

        with run.stages("plan scores"):
            ranking.single_cut_ranking = [a.id for a in ranked]
            ranked = rerank_by_plan(ranked, errors, saved_ms, plan_error, enough,
                                    joins=lambda action: by_kl or not method(action.method).scored_with_adaptors)
    ranking.ranked = ranked
    return ranking


def _kl_scores(run: Run) -> str | None:
    """The class-score output KL scoring compares, or None when cuts are scored by recoverability."""
    logits = class_scores(run.original, run.features)
    if run.settings.scoring == "kl" and logits is None:
        raise GraphoptError("--scoring kl needs class scores: the model's first output is not a (batch, classes) "
                            "score vector")
    return logits if run.settings.scoring in ("kl", "auto") else None


def _scoring_images(run: Run, by_kl: bool):
    """The held-out images cuts are scored on; for KL, with KL_VIEWS augmented views of each beside them, so the
    class distributions compared come from four crops of each image rather than one (cheap: no training)."""
    return run.held.with_views(KL_VIEWS if by_kl else 0, run.settings.seed)


def _recoverability(original, droppable: list[Block], features, train, held, settings: AccelerateSettings,
                    quiet: bool, seconds: float) -> tuple[dict[str, dict], bool]:
    """Scores per block, from the cache or trained for up to `seconds` each."""
    from graphopt.calibration.recovery.mimic import MimicSettings
    from graphopt.calibration.recovery.recoverability import Recoverability, score_blocks
    key = cache_key(original.SerializeToString(), train.fingerprint(), held.fingerprint(), __version__,
                    {"features": features, "iterations": settings.score_iterations, "lr": ADAPTOR_LR,
                     "batch_size": settings.batch_size, "seed": settings.seed})
    cache = ScoreCache(None if not settings.use_cache else Path(settings.cache_dir) if settings.cache_dir
                       else default_dir())
    hit = cache.get(key, Recoverability.valid_scores)
    if hit is not None and set(hit) >= {b.id for b in droppable}:
        say(quiet, "recoverability scores taken from the cache")
        return hit, True
    # adaptors start at identity and have few weights: a larger step, and a short patience since the held-out
    # error of a tiny set settles within a few dozen steps
    mimic = MimicSettings(settings.score_iterations, settings.batch_size, ADAPTOR_LR, eval_every=10, patience=2,
                          seed=settings.seed, seconds=seconds)
    scores = score_blocks(original, droppable, features, train.tensors(), held.tensors(), mimic, settings.work_threads,
                          quiet)
    result = {block: score.to_dict() for block, score in scores.items()}
    cache.put(key, result)
    return result, False


def rerank_by_plan(ranked: list[Action], cost: dict[str, float], saved_ms: dict[str, float],
                   plan_error: Callable[[list[Action]], float], enough: Callable[[list[Action]], bool],
                   joins: Callable[[Action], bool] = lambda action: True) -> list[Action]:
    """`ranked` (best to lose first by single-cut `cost` per `saved_ms`) reordered by marginal plan error.

    `plan_error(actions)` is the error of the plan the actions make; `enough(accepted)` says when the accepted
    cuts are predicted to reach the target, after which the rest keep their order; cuts for which `joins` is
    false (dropped blocks, whose scores already come from training) keep their single-cut score and are never
    re-measured."""
    queue = [(cost[a.id] / max(saved_ms[a.id], 1e-3), index, a, True) for index, a in enumerate(ranked)]
    heapq.heapify(queue)
    accepted: list[Action] = []
    base = 0.0
    while queue and not enough(accepted):
        score, index, action, fresh = heapq.heappop(queue)
        if not fresh and joins(action):
            rise = max(plan_error([*_joined(accepted, joins), action]) - base, 0.0)
            heapq.heappush(queue, (rise / max(saved_ms[action.id], 1e-3), index, action, True))
            continue
        accepted.append(action)
        if joins(action):
            base = plan_error(_joined(accepted, joins))
        queue = [(s, i, a, False) for s, i, a, _ in queue]  # every cost is relative to the plan: stale now
        heapq.heapify(queue)
    rest = sorted(queue, key=lambda item: item[1])
    return accepted + [a for _, _, a, _ in rest]


def _joined(actions: list[Action], joins: Callable[[Action], bool]) -> list[Action]:
    return [a for a in actions if joins(a)]
