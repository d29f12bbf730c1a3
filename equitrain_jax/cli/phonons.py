"""``equitrain-jax phonons``: phonons from the analytic Hessian."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def add_parser(sub) -> None:
    p = sub.add_parser("phonons", help="phonons from the analytic Hessian: band structure, DOS, thermal properties")
    p.add_argument("structure", help="crystal structure (any ASE-readable file)")
    p.add_argument("--model", required=True, help="converted model directory")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--supercell", type=int, nargs=3, metavar=("NA", "NB", "NC"))
    group.add_argument("--min-length", type=float, default=12.0, help="smallest supercell width in Å (default 12)")
    p.add_argument("--relax", action="store_true", help="relax positions and cell first, keeping the symmetry")
    p.add_argument("--fmax", type=float, default=1e-4, help="relaxation force threshold, eV/Å")
    p.add_argument("--relax-steps", type=int, default=500)
    p.add_argument("--head", default=None)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run)


def supercell_for_min_length(cell: np.ndarray, min_length: float) -> list[int]:
    """Smallest diagonal repetition whose perpendicular widths all reach ``min_length`` Å."""
    from equitrain_jax.phonons.phonopy_interface import perpendicular_widths

    widths = perpendicular_widths(np.asarray(cell))
    return [int(np.ceil(min_length / w - 1e-9)) for w in widths]


def run(args: argparse.Namespace) -> None:
    import ase.io

    from equitrain_jax.calculator import Calculator
    from equitrain_jax.phonons import phonopy_from_potential, write_results
    from equitrain_jax.phonons.plots import plot_band_structure_and_dos
    from equitrain_jax.potential import Potential

    atoms = ase.io.read(args.structure)
    if not atoms.pbc.all():
        raise ValueError(f"{args.structure}: a phonon run needs a crystal periodic in 3 directions, got pbc={atoms.pbc.tolist()}")
    potential = Potential(args.model, dtype="float64", head=args.head)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.relax:
        from ase.constraints import FixSymmetry
        from ase.filters import FrechetCellFilter
        from ase.optimize import BFGS
        from ase.spacegroup.symmetrize import check_symmetry

        before = check_symmetry(atoms, 1e-5).international
        atoms.calc = Calculator(potential)
        atoms.set_constraint(FixSymmetry(atoms))
        converged = BFGS(FrechetCellFilter(atoms), logfile=str(out / "relax.log")).run(fmax=args.fmax, steps=args.relax_steps)
        atoms.set_constraint()
        ase.io.write(out / "relaxed.extxyz", atoms)
        after = check_symmetry(atoms, 1e-5).international
        print(f"relaxation {'converged' if converged else 'did NOT converge'} to fmax {args.fmax} eV/Å; "
              f"space group {before} → {after}; structure in {out / 'relaxed.extxyz'}")
        if not converged:
            raise ValueError(f"relaxation did not reach fmax={args.fmax} eV/Å in {args.relax_steps} steps; "
                             f"the last structure is in {out / 'relaxed.extxyz'} (raise --relax-steps)")
    supercell = args.supercell or supercell_for_min_length(atoms.cell.array, args.min_length)
    print(f"supercell {supercell} of {atoms.get_chemical_formula()} ({len(atoms) * int(np.prod(supercell))} atoms)")
    phonon = phonopy_from_potential(potential, atoms, supercell_matrix=supercell)
    paths = write_results(phonon, out)
    plot = plot_band_structure_and_dos(phonon, out / "band_dos.png", title=atoms.get_chemical_formula())
    summary = json.loads(paths["summary"].read_text())
    thermal = summary["thermal"]
    print(f"max frequency {summary['max_frequency_THz']:.3f} THz, min {summary['min_frequency_THz']:.3f} THz, "
          f"imaginary modes: {'yes' if summary['has_imaginary_modes'] else 'no'}")
    print(f"300 K: F {thermal['free_energy_kJ_per_mol']:.3f} kJ/mol, S {thermal['entropy_J_per_K_mol']:.3f} J/K/mol, "
          f"Cv {thermal['heat_capacity_J_per_K_mol']:.3f} J/K/mol ({thermal['per']})")
    print(f"wrote {paths['yaml']}, {paths['summary']}, {plot}")
