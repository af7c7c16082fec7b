"""graphopt: make a trained network faster with a tiny calibration set, measured on the runtime that serves it."""
from graphopt.blocks import Block, find_blocks
from graphopt.errors import GraphoptError, TargetUnreachable
from graphopt.pipeline import AccelerateResult, accelerate
from graphopt.settings import AccelerateSettings
from graphopt.version import __version__

__all__ = ["__version__", "AccelerateResult", "AccelerateSettings", "Block", "GraphoptError", "TargetUnreachable",
           "accelerate", "find_blocks"]
