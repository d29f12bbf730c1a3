"""``equitrain-jax evaluate``: energies, forces and stress of structures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from equitrain_jax.cli import checks
from equitrain_jax.train.config import BACKENDS, DTYPES


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="energies, forces and stress of structures (any ASE-readable file)")
    p.add_argument("structures", nargs="+")
    p.add_argument("--model", required=True, help="converted model directory")
    p.add_argument("--dtype", choices=DTYPES, default="float64")
    p.add_argument("--head", default=None)
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="MACE kernels: e3nn or cuequivariance (needs the cueq extra); default: the model's")
    p.add_argument("-o", "--output", help="write the structures with results (extxyz; new, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=run, check=check, interrupted=checks.incomplete)


def check(args: argparse.Namespace) -> None:
    checks.backend(args.backend, checks.model_directory(args.model))
    if args.output:
        checks.check_output_file(args.output, "pass --overwrite to replace it", args.overwrite)
        if any(Path(args.output).resolve() == Path(path).resolve() for path in args.structures):
            raise ValueError(f"-o {args.output} is one of the input files")
        from ase.io.formats import filetype, ioformats

        try:
            kind = filetype(args.output, read=False)
        except Exception:  # ASE's guess from the name
            kind = None
        if kind not in ioformats or not ioformats[kind].can_write:
            raise ValueError(f"-o {args.output}: ASE cannot write structures in a file of this name "
                             "(use e.g. .extxyz, .xyz, .traj, .cif)")
    args.structure_list = [atoms for path in args.structures for atoms in checks.structures(path, "structure file")]
    for index, atoms in enumerate(args.structure_list):  # evaluated all the same: a warning, not a refusal
        problem = checks.overlap(atoms)
        if problem:
            print(f"equitrain-jax evaluate: warning: structure {index}: {problem}; the model's numbers mean little "
                  "there", file=sys.stderr)
    if args.output and len(args.structure_list) > 1 and ioformats[kind].single:
        raise ValueError(f"-o {args.output}: a {kind} file holds one structure, and there are "
                         f"{len(args.structure_list)}; use e.g. .extxyz or .traj")


def run(args: argparse.Namespace) -> None:
    import numpy as np

    import ase.io
    from tqdm import tqdm

    from equitrain_jax.potential import Potential

    potential = Potential(args.model, dtype=args.dtype, head=args.head, backend=args.backend)
    structures = args.structure_list
    rows = []
    for atoms in tqdm(structures, desc="evaluating", unit="structure", disable=len(structures) < 5):
        (out,) = potential.evaluate_graph(potential.graph(atoms))
        rows.append(out)
        if args.output:
            from ase.calculators.singlepoint import SinglePointCalculator
            from ase.stress import full_3x3_to_voigt_6_stress

            stress = full_3x3_to_voigt_6_stress(out["stress"]) if atoms.pbc.all() else None
            atoms.calc = SinglePointCalculator(atoms, energy=out["energy"], forces=out["forces"], stress=stress)
    print(f"{'#':>4} {'formula':>12} {'E (eV)':>16} {'E/atom':>12} {'max|F| eV/Å':>12} {'P (GPa)':>10}")
    for i, (atoms, out) in enumerate(zip(structures, rows)):
        pressure = -np.trace(out["stress"]) / 3 * 160.21766208
        print(
            f"{i:4d} {atoms.get_chemical_formula():>12} {out['energy']:16.6f} "
            f"{out['energy'] / len(atoms):12.6f} {np.abs(out['forces']).max():12.6f} {pressure:10.4f}"
        )
    if args.output:
        ase.io.write(args.output, structures)
        print(f"wrote {args.output}")
