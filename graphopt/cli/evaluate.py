"""`graphopt eval`: labelled top-1/top-5 and agreement with the first model, each with its 95% interval."""
from __future__ import annotations

import argparse
from pathlib import Path

from graphopt.bounds import check_threads
from graphopt.cli.args import Expert, add_preprocessing_options, preprocess_options


def cmd_eval(args: argparse.Namespace) -> int:
    from graphopt.evaluate import evaluate, format_table
    from graphopt.output import emit_json
    check_threads(args.threads)
    result = evaluate(args.models, args.images, labels=args.labels, classes=args.classes,
                      preprocess=preprocess_options(args), batch=args.batch, threads=args.threads or None,
                      progress=not args.quiet)
    if args.json:
        emit_json(result.to_dict())
    else:
        print(format_table(result))
    return 0


def register(sub, expert: Expert) -> None:
    """The eval subcommand and its options."""
    p = sub.add_parser("eval", help="top-1 and top-5 accuracy on labelled images, and agreement with the first model, "
                                    "each with a 95%% interval: how to check what accelerate gave you")
    p.add_argument("models", type=Path, nargs="+", help="ONNX models; agreement is measured against the first")
    p.add_argument("--images", type=Path, required=True,
                   help="folder of images: class sub-folders (wnid or index names) give the labels, else --labels")
    p.add_argument("--labels", type=Path, help="file of 'NAME LABEL' lines (names relative to --images); without "
                                               "labels only agreement is reported")
    p.add_argument("--classes", type=Path, help="class names (wnids) one per line in the models' index order "
                                                "(default: sorted folder names)")
    p.add_argument("--batch", type=int, default=32, help="images per inference batch")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: the runtime's)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_preprocessing_options(p, expert)
    p.set_defaults(func=cmd_eval)
