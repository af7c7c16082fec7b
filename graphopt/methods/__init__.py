"""Compression methods as actions on one search: blocks (drop residual blocks), filters (prune channel groups) and
basis (split a conv through fewer bases of its output space), each a `Method` in its own module, found through the
registry (methods/registry.py).

Each method contributes discovery of its actions, the passes that apply them (through `Planner`), and how its
actions are scored on the calibration set (calibration/recovery/recoverability.py, calibration/scoring/cut_scores.py).
"""

from graphopt.methods.action import Action
from graphopt.methods.method import Method
from graphopt.methods.plan import Planner
from graphopt.methods.registry import default_names, method, names, register

__all__ = ["Action", "Method", "Planner", "default_names", "method", "names", "register"]
