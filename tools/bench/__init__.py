"""Benchmarks and studies: each measures graphopt against what a user would get without it, side by side in
one run, and writes its report (Markdown and JSON) for docs/ or docs/studies/."""
