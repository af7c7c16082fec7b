"""What `graphopt accelerate` prints when it is done: every measured attempt, the original beside the result, the
figures, the budget and the frontier of models measured."""
from __future__ import annotations

from pathlib import Path

from graphopt.output import table


def print_summary(report: dict, output: Path) -> None:
    """Every measured attempt (predicted beside measured), the original beside the result, and the figures."""
    attempts = [[", ".join(a["actions"]) or "(none)", a["stage"], a["predicted_ratio"], a["measured_ratio"],
                 a["noise"], "noisy" if a["noisy"] else ""] for a in report["selection"]["attempts"]]
    print(table(["cuts", "stage", "predicted ratio", "measured ratio", "noise ±", ""], attempts))
    if report["selection"].get("landing"):
        print(f"below the target: {report['selection']['landing']}")
    print(table(["model", "latency ratio", "top-1 agreement"],
                [[row["model"], f"{row['ratio']:.3f}", percent(row["agreement_top1"])] for row in report["rows"]]))
    latency, recovery, int8 = report["latency"], report["feature_error"], report["int8_recovery"]
    held = report["calibration"]
    rows = [["blocks dropped", ", ".join(report["dropped"]) or "none"],
            ["channels kept (group: channels)", ", ".join(f"{g}: {k}" for g, k in report["pruned"].items()) or
             "all"],
            ["bases kept (node: bases)", ", ".join(f"{n}: {k}" for n, k in report["split"].items()) or "all"],
            ["latency before (ms)", f"{latency['base']['median_ms']:.3f}"],
            ["latency after (ms)", f"{latency['other']['median_ms']:.3f}"],
            ["latency ratio (measured side by side)",
             f"{latency['ratio']:.3f} ± {latency['noise']:.3f}" + (" (noisy)" if latency["noisy"] else "")],
            *([["feature error before recovery", f"{recovery['before_recovery']:.4f}"],
               ["feature error after recovery", f"{recovery['after_recovery']:.4f}"]] if recovery else []),
            *([["INT8 error, rounded to nearest", f"{int8['error_before']:.4f}"],
               ["INT8 error after INT8 recovery", f"{int8['error_after']:.4f}"]] if int8 else []),
            [f"top-1 agreement, {held['held_out_files']} held-out files", percent(report["agreement_top1"])
             + ("" if held["agreement_reliable"] else " (unreliable: fewer than 8 held-out files)")],
            *quality_rows(report["quality"]),
            *budget_rows(report["budget"]),
            *[[f"time: {stage} (s)", f"{seconds:.1f}"] for stage, seconds in report["seconds"].items()],
            ["output", str(output)]]
    print(table(["", ""], rows))
    print_frontier(report["frontier"], report["quality"]["floor_points"] if report["quality"] else None)


def print_frontier(frontier: list[dict], floor: float | None) -> None:
    """Each model measured, its latency ratio and estimated top-1 loss, whether it is inside the floor, and which
    one was handed back."""

    def loss(row: dict) -> str:
        estimate = row["estimate"]
        return "not recovered" if estimate is None else f"{estimate['points']:.2f} ({estimate['upper']:.2f})"

    def inside(row: dict) -> str:
        if floor is None or row["estimate"] is None:
            return ""
        return "yes" if row["estimate"]["upper"] <= floor else "no"

    rows = [[row["model"], len(row["cuts"]), "—" if row["ratio"] is None else f"{row['ratio']:.3f}", loss(row),
             inside(row), "handed back" if row["chosen"] else ""] for row in frontier]
    print(table(["model", "cuts", "latency ratio", "est. top-1 loss, points (95% upper)",
                 "inside floor" if floor is None else f"inside floor {floor:g}", ""], rows))


def budget_rows(budget: dict) -> list[list[str]]:
    """How the run shared its time budget, and a note when recovery got too few steps."""
    if not budget:
        return []
    spent = budget["spent_s"]
    steps = "" if budget["recovery_steps"] is None else f" ({budget['recovery_steps']} steps)"
    rows = [["time budget (s)", f"{budget['budget_s']:.0f}, {budget['recovery_kept_s']:.0f} of it kept for recovery"],
            ["time spent (s)", f"{budget['total_s']:.0f}: prepare {spent['prepare']:.0f}, search {spent['search']:.0f}, "
                               f"recovery {spent['recovery']:.0f}{steps}, checks {spent['checks']:.0f}"]]
    return rows + ([["note", budget["note"]]] if budget.get("note") else [])


def quality_rows(quality: dict | None) -> list[list[str]]:
    """The estimated top-1 loss beside the floor it was judged against."""
    if not quality or quality["estimate"] is None:
        return [["estimated top-1 loss", quality["note"] if quality else "n/a"]]
    estimate = quality["estimate"]
    floor = "no floor" if quality["floor_points"] is None else f"floor {quality['floor_points']:g}"
    what = "measured" if estimate.get("labelled") else "estimated"
    return [[f"{what} top-1 loss, points (95% upper bound)",
             f"{estimate['points']:.2f} ({estimate['upper']:.2f}; {floor})"],
            ["judged on", f"{estimate['images']} {quality['judged_on']}"]]


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
