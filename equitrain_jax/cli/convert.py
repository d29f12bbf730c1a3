"""``equitrain-jax convert``: a mace-torch or SevenNet checkpoint (or a named model) to a model directory."""

from __future__ import annotations

import argparse

from equitrain_jax.cli import checks


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert a mace-torch .model file or a SevenNet .pth checkpoint to an equitrain-jax model directory"
    )
    p.add_argument("model", nargs="?", help="mace-torch model file (.model / .pt) or SevenNet checkpoint (.pth)")
    p.add_argument("-o", "--output", required=True, help="output directory (new or empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into OUTPUT even if it holds something")
    p.add_argument(
        "--architecture",
        help="instead of a file: build a MACE foundation architecture with random weights for H, C, O and Si "
        "(mp0a-small/-medium/-large, mp0b*, mpa0-medium, omat0-small/-medium, matpes-pbe/-r2scan, mh0, mh1, "
        "off23-small/-medium/-large, off24-medium; docs/mace-families.md)",
    )
    p.add_argument(
        "--pretrained",
        help="instead of a file: a pretrained model shipped in an installed package (sevennet-0, from sevenn)",
    )
    p.add_argument(
        "--channels", type=int, default=None,
        help="with --architecture: hidden channels (default: the family's real width, e.g. 128; MH-1 512)",
    )
    p.add_argument("--seed", type=int, default=0, help="with --architecture: seed of the random weights")
    p.set_defaults(func=run, check=check, interrupted=checks.incomplete)


def check(args: argparse.Namespace) -> None:
    sources = [args.model, args.architecture, args.pretrained]
    if sum(s is not None for s in sources) != 1:
        raise ValueError("give exactly one of a MODEL file, --architecture NAME or --pretrained NAME")
    if args.model is not None:
        checks.input_file(args.model, "model file", may_be_empty=True)  # the converter names what it is not
    if args.channels is not None and args.architecture is None:
        raise ValueError("--channels only applies to --architecture")
    checks.at_least(args.channels, 1, "--channels")
    checks.at_least(args.seed, 0, "--seed")
    checks.check_output_directory(args.output, "pass --overwrite to write into it", args.overwrite)


def run(args: argparse.Namespace) -> None:
    from equitrain_jax.convert import convert_file, convert_module
    from equitrain_jax.convert import sevennet

    if args.pretrained is not None:
        config = sevennet.convert_pretrained(args.pretrained, args.output)
    elif args.model is not None and sevennet.is_sevennet_checkpoint(args.model):
        config = sevennet.convert_file(args.model, args.output)
    elif args.model is not None:
        config = convert_file(args.model, args.output)
    else:
        from equitrain_jax.convert.architectures import ARCHITECTURES, build_mace_torch

        if args.architecture not in ARCHITECTURES:
            raise ValueError(f"--architecture {args.architecture!r} is not one of {sorted(ARCHITECTURES)}")
        specs = ARCHITECTURES[args.architecture].embedding_specs
        if specs:  # refused by the converter; found here before building the model
            raise ValueError(
                f"--architecture {args.architecture}: option embedding_specs ({', '.join(specs)}) is not supported"
            )
        module = build_mace_torch(args.architecture, channels=args.channels, seed=args.seed)
        config = convert_module(module, args.output)
    print(
        f"wrote {args.output}: {config.description}, {config.num_interactions} interactions, r_max {config.r_max} Å, "
        f"elements {list(config.atomic_numbers)}, heads {list(config.heads)}"
    )
