"""Graph-surgery passes: each takes a graph and returns it with a flag saying whether it changed."""
