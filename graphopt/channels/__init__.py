"""Channel (filter) groups on ONNX graphs: discovery, and the layouts the prune pass follows."""

from graphopt.channels.analysis import ChannelAnalysis, ChannelGroup, find_channel_groups

__all__ = ["ChannelAnalysis", "ChannelGroup", "find_channel_groups"]
