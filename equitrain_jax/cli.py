"""Command line: ``equitrain-jax {convert, evaluate, finetune, phonons, demo}`` (thin; the work is in the package)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DEMO_DIR = Path("outputs/demo")


def convert_command(args: argparse.Namespace) -> None:
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


def evaluate_command(args: argparse.Namespace) -> None:
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


def finetune_command(args: argparse.Namespace) -> None:
    import ase.io

    from equitrain_jax.train.data import LabelKeys
    from equitrain_jax.train.finetune import finetune, split_train_valid

    train = ase.io.read(args.train, index=":")
    if args.valid:
        valid = ase.io.read(args.valid, index=":")
    else:
        train, valid = split_train_valid(train, args.valid_fraction, args.seed)
    keys = LabelKeys(args.energy_key, args.forces_key, None if args.stress_key == "none" else args.stress_key)
    result = finetune(
        args.model, train, valid, args.output, strategy=args.strategy, epochs=args.epochs,
        learning_rate=args.lr, batch_size=args.batch_size, rank=args.rank, alpha=args.alpha,
        targets=args.targets, l2sp_weight=args.l2sp_weight, keys=keys, head=args.head,
        dtype=args.dtype, seed=args.seed,
    )
    first, last = result.history[0], result.history[-1]
    print(
        f"validation force MAE {first['forces_mae_mev_per_a']:.1f} → {last['forces_mae_mev_per_a']:.1f} meV/Å, "
        f"energy MAE {first['energy_mae_mev_per_atom']:.1f} → {last['energy_mae_mev_per_atom']:.1f} meV/atom; "
        f"fine-tuned model in {Path(args.output) / 'model'}"
    )


def supercell_for_min_length(cell: np.ndarray, min_length: float) -> list[int]:
    """Smallest diagonal repetition whose perpendicular widths all reach ``min_length`` Å."""
    from equitrain_jax.phonons.phonopy_interface import perpendicular_widths

    widths = perpendicular_widths(np.asarray(cell))
    return [int(np.ceil(min_length / w - 1e-9)) for w in widths]


def phonons_command(args: argparse.Namespace) -> None:
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


def demo_command(args: argparse.Namespace) -> None:
    """Build a MACE-MP-0 medium architecture in mace-torch, convert it, and compare the numbers."""
    import torch
    from ase.build import bulk
    from mace.calculators import MACECalculator

    from equitrain_jax.calculator import Calculator
    from equitrain_jax.convert import convert_module
    from equitrain_jax.convert.architectures import build_mace_torch

    out_dir = Path(args.output)
    print(f"1. building a mace-torch {args.architecture} model (random weights, Si/C/O/H) …")
    module = build_mace_torch(args.architecture, atomic_numbers=(1, 6, 8, 14), channels=args.channels)
    print(f"2. converting it to {out_dir} …")
    convert_module(module, out_dir)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    print(f"3. evaluating {atoms.get_chemical_formula()} ({len(atoms)} atoms) with both …")
    torch.set_default_dtype(torch.float64)
    reference = MACECalculator(models=module, default_dtype="float64")
    ours = Calculator(out_dir, dtype="float64")
    timings = {}
    results = {}
    for name, calc in (("mace-torch", reference), ("equitrain-jax", ours)):
        calc.get_potential_energy(atoms)  # compile / warm up
        start = time.perf_counter()
        atoms.calc = calc
        calc.reset()
        results[name] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
        timings[name] = time.perf_counter() - start
    (e_t, f_t, s_t), (e_j, f_j, s_j) = results["mace-torch"], results["equitrain-jax"]
    summary = {
        "energy_eV": {"mace-torch": e_t, "equitrain-jax": e_j, "abs_diff": abs(e_t - e_j)},
        "forces_max_abs_diff_eV_per_A": float(np.abs(f_t - f_j).max()),
        "stress_max_abs_diff_eV_per_A3": float(np.abs(s_t - s_j).max()),
        "seconds_per_call": timings,
    }
    print(json.dumps(summary, indent=2))
    (out_dir / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"model and demo.json in {out_dir}; use it with equitrain_jax.Calculator(model='{out_dir}')")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="equitrain-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a mace-torch .model file to an equitrain-jax model directory")
    p.add_argument("model", nargs="?", help="mace-torch model file (.model / .pt)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--architecture", help="instead of a file: build this MACE-MP architecture with random weights")
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=convert_command)

    p = sub.add_parser("evaluate", help="energies, forces and stress of structures (any ASE-readable file)")
    p.add_argument("structures", nargs="+")
    p.add_argument("--model", required=True, help="converted model directory")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--head", default=None)
    p.add_argument("-o", "--output", help="write the structures with results (extxyz)")
    p.set_defaults(func=evaluate_command)

    p = sub.add_parser("finetune", help="fine-tune a converted model on labelled structures (extxyz, …)")
    p.add_argument("--model", required=True, help="converted model directory")
    p.add_argument("--train", required=True, help="training structures with energies and forces")
    p.add_argument("--valid", help="validation structures (default: split off --valid-fraction of --train)")
    p.add_argument("--valid-fraction", type=float, default=0.2)
    p.add_argument("--strategy", choices=("lora", "delta", "freeze", "full", "scratch"), default="lora")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank")
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: rank)")
    p.add_argument("--targets", nargs="+", help="parameter path patterns, e.g. 'interactions.*.linear*' 'products.*'")
    p.add_argument("--l2sp-weight", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress", help="'none' to train without stress")
    p.add_argument("--head", default=None)
    p.add_argument("--dtype", choices=("float64", "float32"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=finetune_command)

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
    p.set_defaults(func=phonons_command)

    p = sub.add_parser("demo", help="build, convert and check a MACE-MP-0 medium model against mace-torch")
    p.add_argument("--architecture", default="mp0a-medium")
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("-o", "--output", default=str(DEMO_DIR))
    p.set_defaults(func=demo_command)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"equitrain-jax {args.command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
