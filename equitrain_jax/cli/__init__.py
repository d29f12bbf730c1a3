"""Command line: ``equitrain-jax {convert, export, evaluate, finetune, phonons, demo}``.

Each subcommand lives in its own module with ``add_parser(sub)`` and ``run(args)``; they stay thin,
the work is in the package.
"""

from __future__ import annotations

import argparse
import sys

from equitrain_jax.cli import convert, demo, evaluate, export, finetune, phonons

SUBCOMMANDS = (convert, export, evaluate, finetune, phonons, demo)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="equitrain-jax", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"equitrain-jax {args.command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
