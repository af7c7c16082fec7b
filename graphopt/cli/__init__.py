"""The `graphopt` command: subcommands share the model loader, latency options and reporting."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from graphopt.cli import accelerate, bench, cuts, evaluate
from graphopt.cli.args import expert_help
from graphopt.errors import GraphoptError
from graphopt.version import __version__

SUBCOMMANDS = (accelerate, evaluate, cuts, bench)  # each registers its subcommands and their argument groups, in --help order


def build_parser(everything: bool = False) -> argparse.ArgumentParser:
    """The command line; expert options (timing loop, training internals, scoring choices) are listed only with
    `everything` (`--help-all`), as Polygraphy keeps its everyday options in front."""
    expert = expert_help(everything)
    parser = argparse.ArgumentParser(prog="graphopt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"graphopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.register(sub, expert)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    everything = "--help-all" in argv
    args = build_parser(everything).parse_args(["--help" if a == "--help-all" else a for a in argv])
    with _terminate_as_interrupt():
        try:
            code = args.func(args)
            sys.stdout.flush()  # inside the try: a reader that went away is seen here, not at interpreter exit
            return code
        except BrokenPipeError:
            # `graphopt channels m.onnx --json | head`: the reader stopped reading; end quietly, as a tool killed by
            # SIGPIPE would, with stdout pointed at /dev/null so the final flush cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except GraphoptError as exc:
            print(f"graphopt: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except MemoryError:
            print("graphopt: error: out of memory (a smaller --batch, --batch-size or input shape needs less)",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM turned into an Interrupted
            signum = getattr(exc, "signum", signal.SIGINT)
            print("graphopt: interrupted" if signum == signal.SIGINT else
                  f"graphopt: stopped by {signal.Signals(signum).name}", file=sys.stderr)
            return 128 + signum


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread so every `finally` and temporary folder cleans up on the way
    out; the exit status is the shell's 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__()
        self.signum = signum


@contextlib.contextmanager


def _terminate_as_interrupt():
    """SIGTERM (what `kill`, timeouts and CI runners send) handled like Ctrl-C, the previous handlers restored after."""
    def raise_interrupted(signum, frame):
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():  # handlers can only be set from the main thread
        yield
        return
    previous = {signum: signal.signal(signum, raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
