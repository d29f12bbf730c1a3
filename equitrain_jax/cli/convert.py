"""``equitrain-jax convert``: a mace-torch checkpoint (or a named architecture) to a model directory."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert a mace-torch .model file to an equitrain-jax model directory")
    p.add_argument("model", nargs="?", help="mace-torch model file (.model / .pt)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--architecture", help="instead of a file: build this MACE-MP architecture with random weights")
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from equitrain_jax.convert import convert_file, convert_module
    from equitrain_jax.convert.architectures import build_mace_torch

    if (args.model is None) == (args.architecture is None):
        raise SystemExit("convert: give a MODEL file or --architecture NAME (not both)")
    if args.model is not None:
        config = convert_file(args.model, args.output)
    else:
        module = build_mace_torch(args.architecture, channels=args.channels, seed=args.seed)
        config = convert_module(module, args.output)
    print(
        f"wrote {args.output}: {config.model_class} {config.hidden_irreps}, "
        f"{config.num_interactions} interactions, r_max {config.r_max} Å, "
        f"elements {list(config.atomic_numbers)}, heads {list(config.heads)}"
    )
