"""Compression methods as actions on one search: blocks (drop residual blocks) and filters (prune channel groups).

Each method contributes discovery of its actions, the passes that apply them (through `Planner`), and how its
actions are scored on the calibration set (calibration/recoverability.py, calibration/filter_scores.py).
"""

from graphopt.methods.action import Action
from graphopt.methods.plan import Planner

METHODS = ("blocks", "filters")

__all__ = ["Action", "Planner", "METHODS"]
