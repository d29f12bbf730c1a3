"""``equitrain-jax export``: a (fine-tuned) model directory back into its mace-torch ``.model`` file."""

from __future__ import annotations

import argparse

from equitrain_jax.cli import checks


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a model directory's weights into the mace-torch .model file it was converted from",
    )
    p.add_argument("model", help="equitrain-jax model directory (e.g. fine-tuned; adapters merged)")
    p.add_argument("--template", required=True, help="the mace-torch .model file the model was converted from")
    p.add_argument("-o", "--output", required=True, help="mace-torch .model file to write (new, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=run, check=check, interrupted=checks.incomplete)


def check(args: argparse.Namespace) -> None:
    from pathlib import Path

    family = checks.model_family(checks.model_directory(args.model, "model directory"))
    if family is not None and family != checks.MACE_FORMAT:
        raise ValueError(f"model directory {args.model} holds a {family} model; only MACE models export to a "
                         "mace-torch .model file")
    template = checks.input_file(args.template, "--template")
    if Path(args.output).resolve() == template.resolve():
        raise ValueError(f"-o {args.output} is the --template file; write the exported model to a new file")
    checks.check_output_file(args.output, "pass --overwrite to replace it", args.overwrite)


def run(args: argparse.Namespace) -> None:
    from equitrain_jax.convert.to_mace_torch import export_to_mace_torch

    path = export_to_mace_torch(args.model, args.template, args.output)
    print(
        f"wrote {path}: {args.template} with the weights, E0s and scale/shift of {args.model} "
        "(for LAMMPS: python -m mace.cli.create_lammps_model on this file)"
    )
