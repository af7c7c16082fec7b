"""Graph-surgery passes: each takes a graph and returns it with a flag saying whether it changed."""

from graphopt.passes.base import GraphPass, PassResult, apply_passes
from graphopt.passes.decompose_conv import FULL_RANK, Basis, DecomposeConv, decompose_conv
from graphopt.passes.drop_blocks import DropBlocks, drop_blocks, select_blocks
from graphopt.passes.prune_channels import PruneChannels, prune_channels

__all__ = ["GraphPass", "PassResult", "apply_passes", "FULL_RANK", "Basis", "DecomposeConv", "decompose_conv",
           "DropBlocks", "drop_blocks", "select_blocks", "PruneChannels", "prune_channels"]
