"""The trade-off a run measured: each model it timed, by latency ratio and estimated top-1 loss, as the report's
`frontier` and (with --plot) a picture.

Why: a user who asks for more speed than the accuracy floor allows needs to see what each side costs (the
original, INT8 alone, each plan selection timed, the recovered result) to choose a new target or floor; a
pipeline needs the same figures as data. Plans selection timed were not recovered, so they carry a latency and no
quality: what they would lose after recovery is known only for the one that was recovered.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

from graphopt.atomic import write_atomic
from graphopt.errors import GraphoptError
from graphopt.quality import DropEstimate
from graphopt.selection import Attempt

ORIGINAL, INT8_ALONE, PLAN, RESULT = "original", "int8 alone", "plan (not recovered)", "graphopt"


@dataclass
class Point:
    """One measured model: what it is, its latency ratio to the original, its estimated top-1 loss (None when it
    was not estimated), the cuts it made and whether it is the one the run chose."""

    model: str
    ratio: float | None
    estimate: DropEstimate | None = None
    cuts: list[str] = field(default_factory=list)
    chosen: bool = False

    def inside(self, floor: float | None) -> bool | None:
        """Whether the estimate's upper bound is inside `floor` points (None: not estimated, or no floor)."""
        if floor is None or self.estimate is None:
            return None
        return self.estimate.within(floor)

    def to_dict(self) -> dict:
        return {"model": self.model, "ratio": self.ratio, "cuts": self.cuts, "chosen": self.chosen,
                "estimate": None if self.estimate is None else self.estimate.to_dict()}


def plan_points(attempts: list[Attempt]) -> list[Point]:
    """Each distinct plan selection timed (the last measurement of each), recovered or not."""
    latest = {tuple(a.actions): a for a in attempts if a.stage == "selection" and a.actions}
    return [Point(PLAN, a.measured_ratio, cuts=list(a.actions)) for a in latest.values()]


def best_inside(points: list[Point], floor: float) -> Point | None:
    """The fastest point, other than the original, whose estimate is inside the floor."""
    inside = [p for p in points if p.model != ORIGINAL and p.ratio is not None and p.inside(floor)]
    return min(inside, key=lambda p: p.ratio, default=None)


def plot(points: list[Point], path: str | os.PathLike, floor: float | None, target: float | None) -> None:
    """Latency ratio against estimated top-1 loss (its 95% upper bound as an error bar), the floor and the target
    as lines, the chosen model ringed; plans that were not recovered as ticks on the latency axis. Written
    atomically as PNG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GraphoptError("--plot needs matplotlib: pip install matplotlib") from None
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    estimated = [p for p in points if p.estimate is not None and p.ratio is not None]
    for point in estimated:
        loss, upper = point.estimate.points, point.estimate.upper
        axes.errorbar(point.ratio, loss, yerr=[[0], [max(0.0, upper - loss)]], fmt="o", capsize=3,
                      label=f"{point.model} ({point.ratio:.3f}, {loss:.2f} pt)")
        if point.chosen:
            axes.scatter([point.ratio], [loss], s=220, facecolors="none", edgecolors="black", zorder=3)
    plans = [p.ratio for p in points if p.estimate is None and p.ratio is not None]
    if plans:
        axes.scatter(plans, [0] * len(plans), marker="|", s=300, color="grey", label="plans timed, not recovered")
    if floor is not None:
        axes.axhline(floor, color="red", linestyle="--", linewidth=1, label=f"floor {floor:g} pt")
    if target is not None:
        axes.axvline(target, color="blue", linestyle=":", linewidth=1, label=f"target {target:.3f}")
    axes.set_xlabel("latency ratio to the original (measured)")
    axes.set_ylabel("estimated top-1 loss, points (bar: 95% upper bound)")
    axes.set_title("graphopt: latency against estimated accuracy loss", fontsize=10)
    axes.legend(fontsize=7, loc="best")
    axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    write_atomic(path, buffer.getvalue())
