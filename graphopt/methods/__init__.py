"""Compression methods as actions on one search: blocks (drop residual blocks), filters (prune channel groups) and
basis (split a conv through fewer bases of its output space).

Each method contributes discovery of its actions, the passes that apply them (through `Planner`), and how its
actions are scored on the calibration set (calibration/recoverability.py, calibration/cut_scores.py).
"""

from graphopt.methods.action import Action
from graphopt.methods.plan import Planner

METHODS = ("blocks", "filters", "basis")
# basis is asked for by name: on Lite0 its splits cost about 2.5x the feature error of channel cuts per multiply-add
# removed (docs/studies/basis_lite0.md), and on the Fashion-MNIST ResNet-20 every split at once saves 1-8% of the
# latency while adding them to the joint search lost a point (docs/studies/methods_fmnist_basis.md)
DEFAULT_METHODS = ("blocks", "filters")


def method_counts(actions: list[Action]) -> dict[str, int]:
    """How many of `actions` each method made, for every method (0 where none)."""
    return {m: sum(a.method == m for a in actions) for m in METHODS}

__all__ = ["Action", "Planner", "METHODS", "DEFAULT_METHODS", "method_counts"]
