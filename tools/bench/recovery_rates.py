"""Which Adam rate lowers the held-out feature error of recovery on one model: the same dropped blocks, the same
calibration photos, a few tens of steps at each rate, the held-out error checked every 20.

Why (issue 23): on Lite2 with four blocks dropped, and on Lite1 at 0.9, recovery never beat its starting held-out
error at either rate accelerate probes (5e-4, 1e-4) and stopped after 80 steps with the original weights. Whether a
lower rate trains where those do not says whether the rates probed or recovery itself is what fails there.

    python -m tools.bench.recovery_rates --model lite2 --blocks-from RUN.report.json --rates 1e-4 3e-5 1e-5
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from graphopt.calibration.recovery.mimic import MimicSettings
from tools.bench.common import cache_dir, run_cli, write_study
from tools.bench.imagenet import REPO, eval_set
from tools.bench.recovery_length import add_drop_arguments, drop_setup, recovered
from tools.make_results import machine

COMMAND = "python -m tools.bench.recovery_rates"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    add_drop_arguments(p, "lite2")
    p.add_argument("--rates", type=float, nargs="+", default=[1e-4, 3e-5, 1e-5])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "studies" / "recovery_rates.md")
    args = p.parse_args(argv)
    original, _, train, held, blocks = drop_setup(args, eval_set(args.data, None, cache_dir("imagenet")))
    base = MimicSettings(args.steps, 16, seed=args.seed, patience=10 ** 6)
    rows = []
    for rate in args.rates:
        row = recovered(original, train, held, blocks, replace(base, lr=rate), args.threads)
        row.pop("model")
        rows.append({"lr": rate, **row})
        print(f"lr {rate:g}: held-out error {row['held_error_before']:.4f} -> {row['held_error_after']:.4f} "
              f"in {row['seconds']} s", flush=True)
    results = {"command": shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)]),
               "machine": machine(args.threads), "model": args.model, "blocks": blocks, "rows": rows}
    write_study(args.out, markdown(results), results)
    return 0


def markdown(results: dict) -> str:
    env = results["machine"]
    lines = [f"# Recovery's learning rate on {results['model']}", "", f"Regenerate with `{results['command']}`", "",
             f"Generated {env['generated']} at commit {env['commit'] or 'unknown'} on {env['cpu']}; blocks dropped: "
             f"{', '.join(results['blocks'])}; batch 16, held-out error every 20 steps, the best kept.", "",
             __doc__.split("\n\n")[0].replace("\n", " "), "",
             "| Adam rate | steps | seconds | held-out feature error before | best after |", "|---|---|---|---|---|"]
    lines += [f"| {row['lr']:g} | {row['steps']} | {row['seconds']} | {row['held_error_before']:.4f} | "
              f"{row['held_error_after']:.4f} |" for row in results["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_cli(main)
