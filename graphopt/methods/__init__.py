"""Compression methods as actions on one search: blocks (drop residual blocks), filters (prune channel groups) and
basis (split a conv through fewer bases of its output space).

Each method contributes discovery of its actions, the passes that apply them (through `Planner`), and how its
actions are scored on the calibration set (calibration/recoverability.py, calibration/cut_scores.py).
"""

from graphopt.methods.action import Action
from graphopt.methods.plan import Planner

METHODS = ("blocks", "filters", "basis")

__all__ = ["Action", "Planner", "METHODS"]
