"""`graphopt blocks`, `graphopt channels` and `graphopt drop`: what the model offers to cut, and one cut by hand."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphopt.cli.args import Expert, add_input_shape, add_model, input_shapes


def cmd_blocks(args: argparse.Namespace) -> int:
    from graphopt.blocks import find_blocks
    from graphopt.model_io import load_model
    from graphopt.output import emit_json, table
    from graphopt.shapes import infer_shapes
    model = load_model(args.model)
    blocks = find_blocks(model, infer_shapes(model, input_shapes=input_shapes(args, [model])))
    if args.json:
        emit_json({"model": str(args.model), "blocks": [b.to_dict() for b in blocks]})
        if not blocks:
            print("no residual blocks found in this model", file=sys.stderr)
        return 0
    if not blocks:
        print("No residual blocks found in this model: there is nothing graphopt can drop.")
        return 0
    rows = [[b.id, b.droppable, b.shortcut, len(b.nodes), b.params, round(100 * b.macs_share, 2),
             "x".join(map(str, b.shape or [])) or "?"] for b in blocks]
    print(table(["block", "droppable", "shortcut", "nodes", "params", "MACs %", "shape"], rows))
    print(f"\n{len(blocks)} residual blocks, {sum(b.droppable for b in blocks)} droppable")
    return 0


def cmd_channels(args: argparse.Namespace) -> int:
    from graphopt.channels import find_channel_groups
    from graphopt.model_io import load_model
    from graphopt.output import emit_json, table
    from graphopt.shapes import infer_shapes
    model = load_model(args.model)
    groups = find_channel_groups(model, infer_shapes(model, input_shapes=input_shapes(args, [model]))).groups
    if args.json:
        emit_json({"model": str(args.model), "channel_groups": [g.to_dict() for g in groups]})
        return 0
    if not groups:
        print("No channel groups found in this model: no convolution or matrix product makes its channels.")
        return 0
    rows = [[g.id, g.size, g.prunable, len(g.producers), g.reason or ""] for g in groups]
    print(table(["group", "channels", "prunable", "producers", "why it stays whole"], rows))
    print(f"\n{len(groups)} channel groups, {sum(g.prunable for g in groups)} prunable")
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    from graphopt.blocks import find_blocks
    from graphopt.model_io import load_model, save_model
    from graphopt.passes import drop_blocks
    from graphopt.paths import check_outputs
    from graphopt.shapes import infer_shapes
    ids = [i.strip() for i in args.blocks.split(",") if i.strip()]
    check_outputs({"-o": args.output}, args.model)
    model = load_model(args.model)
    blocks = find_blocks(model, infer_shapes(model, input_shapes=input_shapes(args, [model])))
    save_model(drop_blocks(model, ids, blocks), args.output)
    print(f"dropped {len(ids)} block(s): {', '.join(ids)} -> {args.output}")
    return 0


def register(sub, expert: Expert) -> None:
    """The blocks, channels and drop subcommands."""
    p = sub.add_parser("blocks", help="list the residual blocks of a model")
    add_model(p)
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    add_input_shape(p)
    p.set_defaults(func=cmd_blocks)

    p = sub.add_parser("channels", help="list the channel groups of a model (channels pruned together)")
    add_model(p)
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    add_input_shape(p)
    p.set_defaults(func=cmd_channels)

    p = sub.add_parser("drop", help="write the model without the given blocks")
    add_model(p)
    p.add_argument("--blocks", required=True, help="comma-separated block ids (see `graphopt blocks`)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output ONNX file")
    add_input_shape(p)
    p.set_defaults(func=cmd_drop)
