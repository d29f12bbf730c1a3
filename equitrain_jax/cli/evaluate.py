"""``equitrain-jax evaluate``: energies, forces and stress of structures."""

from __future__ import annotations

import argparse

import numpy as np


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="energies, forces and stress of structures (any ASE-readable file)")
    p.add_argument("structures", nargs="+")
    p.add_argument("--model", required=True, help="converted model directory")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--head", default=None)
    p.add_argument("-o", "--output", help="write the structures with results (extxyz)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import ase.io
    from tqdm import tqdm

    from equitrain_jax.potential import Potential

    potential = Potential(args.model, dtype=args.dtype, head=args.head)
    structures = [a for path in args.structures for a in ase.io.read(path, index=":")]
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
