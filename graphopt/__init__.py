"""graphopt: make a trained network faster with a tiny calibration set, measured on the runtime that serves it."""
__version__ = "0.1.0"

from graphopt.blocks import Block, find_blocks  # noqa: E402
from graphopt.errors import GraphoptError, TargetUnreachable  # noqa: E402
from graphopt.pipeline import AccelerateResult, accelerate  # noqa: E402
from graphopt.settings import AccelerateSettings  # noqa: E402

__all__ = ["AccelerateResult", "AccelerateSettings", "Block", "GraphoptError", "TargetUnreachable", "accelerate",
           "find_blocks"]
