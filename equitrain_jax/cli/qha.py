"""``equitrain-jax qha``: quasi-harmonic thermal expansion from phonons at many volumes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equitrain_jax.cli import checks


def add_parser(sub) -> None:
    from equitrain_jax.phonons.qha_config import (
        EOS,
        EOS_CHOICES,
        MESH,
        N_VOLUMES,
        VOLUME_STRAIN_RANGE,
    )

    p = sub.add_parser(
        "qha", help="quasi-harmonic approximation: thermal expansion, V(T), B(T), C_P(T), Grüneisen parameters",
        description="Relax the structure with the model (symmetry kept), scale its cell to a grid of volumes, "
                    "relax the internal coordinates at each, get all volumes' force constants in one compiled "
                    "batch of Hessian-vector products, and run phonopy's QHA (phonopy.run_qha).  Volumes and "
                    "energies are per primitive cell.",
    )
    p.add_argument("structure", help="crystal structure (any ASE-readable file), periodic in 3 directions")
    p.add_argument("--model", required=True, help="converted model directory")
    p.add_argument("--head", default=None)
    p.add_argument("--volumes", type=int, default=N_VOLUMES, help=f"number of volumes, ≥ 5 (default {N_VOLUMES})")
    p.add_argument("--strain-range", type=float, default=VOLUME_STRAIN_RANGE,
                   help="VOLUME strain s of the grid: volumes evenly spaced from V0·(1−s) to V0·(1+s), the cell "
                        "scaled isotropically (ASE's calculate_eos convention; 0.05 is ±1.6%% in lattice "
                        f"parameter); V0 is the relaxed input's volume (default {VOLUME_STRAIN_RANGE})")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--supercell", type=int, nargs=3, metavar=("NA", "NB", "NC"),
                       help="supercell of the input cell for the force constants")
    group.add_argument("--min-length", type=float, default=12.0, help="smallest supercell width in Å (default 12)")
    p.add_argument("--keep-cell", action="store_true",
                   help="centre the grid on the input cell as given (default: relax cell and positions first, "
                        "symmetry kept, so the grid centres on the model's own equilibrium)")
    p.add_argument("--fmax", type=float, default=1e-4, help="force threshold of the relaxations, eV/Å (default 1e-4)")
    p.add_argument("--relax-steps", type=int, default=500, help="most optimiser steps of each relaxation")
    p.add_argument("--tmax", type=float, default=1000.0, help="highest temperature, K (default 1000)")
    p.add_argument("--tstep", type=float, default=10.0, help="temperature step, K (default 10)")
    p.add_argument("--mesh", type=float, nargs="+", default=[MESH],
                   help=f"phonopy's q-point sampling: a length in Å or three numbers (default {MESH:g})")
    p.add_argument("--eos", choices=EOS_CHOICES, default=EOS,
                   help=f"equation of state fitted to F(V) at each temperature (default {EOS})")
    p.add_argument("--reference", default=None, metavar="DIR",
                   help="reference QHA directory with volumes.json (e.g. DFT phonons per volume, or another run's "
                        "output): overlays in the plots, comparison.md and comparison.csv")
    p.add_argument("--born", default=None, metavar="BORN",
                   help="Born effective charges Z* and dielectric tensor ε∞ in phonopy's BORN format, for the "
                        "non-analytic correction (NAC, LO–TO splitting) of a polar crystal: the same Z* and ε∞ at "
                        "every volume (default: no NAC)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=run, check=check, interrupted=checks.incomplete)


def _mesh(values: list[float]):
    if len(values) == 1 and values[0] > 0:
        return values[0]
    if len(values) == 3 and all(v >= 1 and float(v).is_integer() for v in values):
        return [int(v) for v in values]
    raise ValueError(f"--mesh is one positive length (Å) or three positive integers, got {values}")


def check(args: argparse.Namespace) -> None:
    """Every option, the model directory, the output directory, the crystal and the --born file for
    it, before any work and without JAX (the reference, a phonopy data set, is read at the start of
    `run`)."""
    from equitrain_jax.phonons.qha_config import temperature_grid, volume_factors

    volume_factors(args.volumes, args.strain_range)
    temperature_grid(args.tmax, args.tstep)
    args.mesh_value = _mesh(args.mesh)
    checks.positive(args.fmax, "--fmax (eV/Å)")
    checks.at_least(args.relax_steps, 1, "--relax-steps")
    if args.supercell is not None and min(args.supercell) < 1:
        raise ValueError(f"--supercell takes three repetitions >= 1, got {' '.join(map(str, args.supercell))}")
    if args.supercell is None:
        checks.positive(args.min_length, "--min-length (Å)")
    if args.reference is not None and not (Path(args.reference) / "volumes.json").is_file():
        raise FileNotFoundError(f"--reference {args.reference}: no volumes.json in it (a QHA directory: DFT phonons per "
                                "volume, or another run's output)")
    checks.model_directory(args.model)
    checks.check_output_directory(args.output, "pass --overwrite to write into it", args.overwrite)
    args.atoms = checks.crystal(args.structure)
    args.born_charges = checks.born_charges(args.born, args.atoms)


def reference_volumes(args: argparse.Namespace, atoms):
    """The --reference QHA data (or None), refused if it is another crystal or if only it has NAC
    parameters; without any, it gets --born's as the model does (printed)."""
    if args.reference is None:
        return None
    from ase.formula import Formula

    from equitrain_jax.phonons.volumes import load_reference_volumes

    reference = load_reference_volumes(args.reference)
    theirs = reference[0][0].primitive
    if Formula.from_list(theirs.symbols).reduce()[0] != atoms.symbols.formula.reduce()[0]:
        raise ValueError(f"--reference {args.reference} is another crystal: "
                         f"{Formula.from_list(theirs.symbols).format('hill')} per primitive cell, the structure "
                         f"is {atoms.get_chemical_formula()}")
    with_nac = [phonon.nac_params is not None for phonon in reference[0]]
    if any(with_nac) and not all(with_nac):
        raise ValueError(f"--reference {args.reference}: only {sum(with_nac)} of its {len(with_nac)} volumes have NAC "
                         "parameters (Born charges); give all of them the same, or none")
    if args.born_charges.params is None and any(with_nac):
        raise ValueError(f"--reference {args.reference}: its phonons have NAC parameters (Born charges) and the "
                         "model's would have none; pass --born with the Z* and ε∞ for the model (the reference's "
                         "BORN, say), so that both sides have LO–TO splitting")
    if args.born_charges.params is not None and not any(with_nac):
        for phonon in reference[0]:
            args.born_charges.apply(phonon)
        print(f"the reference has no NAC parameters; --born {args.born} is applied to its volumes as well")
    return reference


def volume_nac_record(qha, source=None) -> dict:
    """Whether NAC was applied to a QHA's phonons and from where: `equitrain_jax.phonons.nac.nac_record`
    at its Grüneisen volume (the one nearest the static V0), and whether every volume has the
    same Z* and ε∞."""
    from equitrain_jax.phonons.nac import nac_record, same_nac_params

    centre = qha.phonons[qha.centre]
    record = nac_record(centre, source)
    if record["applied"] or any(phonon.nac_params is not None for phonon in qha.phonons):
        record["volume_angstrom3"] = float(centre.primitive.volume)
        record["same_at_every_volume"] = all(same_nac_params(phonon.nac_params, centre.nac_params)
                                             for phonon in qha.phonons)
    return record


def run(args: argparse.Namespace) -> None:
    import ase.io
    import numpy as np

    from equitrain_jax.phonons.bridge import supercell_for_min_length
    from equitrain_jax.phonons.gruneisen import (
        gruneisen_band_structure,
        gruneisen_error,
        gruneisen_on_path,
    )
    from equitrain_jax.phonons.nac import describe_nac
    from equitrain_jax.phonons.qha import (
        analyse,
        comparison_rows,
        write_comparison,
        write_qha,
    )
    from equitrain_jax.phonons.qha_plots import plot_mode_gruneisen, plot_qha
    from equitrain_jax.phonons.volumes import (
        relax_positions,
        volume_series,
        write_volume_series,
    )
    from equitrain_jax.potential import Potential

    atoms, mesh = args.atoms, args.mesh_value
    reference = reference_volumes(args, atoms)
    potential = Potential(args.model, dtype="float64", head=args.head)
    potential.graph(atoms)  # elements the model does not know fail here, before any work
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    formula = atoms.get_chemical_formula()
    if not args.keep_cell:
        volume_before = atoms.get_volume()
        atoms, converged = relax_positions(atoms, potential, fmax=args.fmax, steps=args.relax_steps, cell=True)
        ase.io.write(out / "relaxed.extxyz", atoms)
        if not converged:
            raise ValueError(f"the relaxation of {args.structure} did not reach fmax={args.fmax} eV/Å in "
                             f"{args.relax_steps} steps; its last structure is in {out / 'relaxed.extxyz'} "
                             "(raise --relax-steps or --fmax, or pass --keep-cell)")
        print(f"relaxed {formula} (symmetry kept): volume {volume_before:.4f} → {atoms.get_volume():.4f} Å³; "
              f"structure in {out / 'relaxed.extxyz'}")
    supercell = args.supercell or supercell_for_min_length(atoms.cell.array, args.min_length)
    print(f"{args.volumes} volumes, V/V0 = {1 - args.strain_range:.3f} … {1 + args.strain_range:.3f}; supercell "
          f"{supercell} ({len(atoms) * int(np.prod(supercell))} atoms each)")
    series = volume_series(potential, atoms, np.diag(supercell), n_volumes=args.volumes,
                           strain_range=args.strain_range, fmax=args.fmax, relax_steps=args.relax_steps, progress=True)
    if not all(series.converged):
        bad = [f"{f:.3f}" for f, ok in zip(series.volume_factors, series.converged) if not ok]
        raise ValueError(f"the internal relaxation did not reach fmax={args.fmax} eV/Å at V/V0 = {', '.join(bad)} "
                         f"in {args.relax_steps} steps (raise --relax-steps or --fmax)")
    print(f"force constants of all {args.volumes} volumes in one batch of Hessian-vector products: "
          f"{series.timings['force_constants']:.1f} s (internal relaxations {series.timings['relax']:.1f} s)")
    for phonon in series.phonons:  # the same Z* and ε∞ at every volume (none: no NAC)
        args.born_charges.apply(phonon)
    print(describe_nac(series.phonons[len(series.phonons) // 2], args.born_charges.source)
          + (", at every volume" if args.born_charges.params is not None else ""))
    model = analyse(series.phonons, series.energies, t_max=args.tmax, t_step=args.tstep, mesh=mesh, eos=args.eos)
    paths = write_qha(model.result, out, model.volumes, model.energies, model.phonons)
    write_volume_series(series.phonons, series.energies, series.volume_factors, out)
    others = {}
    if reference is not None:
        reference_qha = analyse(*reference[:2], t_max=args.tmax, t_step=args.tstep, mesh=mesh, eos=args.eos)
        others["reference"] = reference_qha
    bands, curves = gruneisen_on_path(model, others)
    gruneisen_band_structure(model.phonons, model.centre).write_yaml(filename=out / "gruneisen.yaml")
    summary = {"structure": str(args.structure), "supercell": list(supercell), "volume_factors":
               series.volume_factors.tolist(), "timings_s": series.timings, **model.summary,
               "nac": volume_nac_record(model, args.born_charges.source)}
    title = f"{formula}: QHA"
    if args.born_charges.params is not None:
        title += f" (NAC: Z*, ε∞ from {args.born_charges.source})"
    results, static = {"model": model.result}, {"model": model.summary["static"]["V0_angstrom3"]}
    if others:
        reference_qha = others["reference"]
        gruneisen = gruneisen_error(curves["model"], curves["reference"])
        summary["reference"] = {"directory": str(args.reference), **reference_qha.summary,
                                "nac": volume_nac_record(reference_qha, args.born or "the reference's phonopy files")}
        summary["gruneisen_vs_reference"] = gruneisen
        rows = comparison_rows(model.summary, reference_qha.summary, gruneisen)
        table, _ = write_comparison(rows, out)
        results["reference"] = reference_qha.result
        static["reference"] = reference_qha.summary["static"]["V0_angstrom3"]
        print(table.read_text(), end="")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    qha_plot = plot_qha(results, static, out / "qha.png", title=title, n_atoms_primitive=len(model.phonons[0].primitive))
    gruneisen_plot = plot_mode_gruneisen(curves, bands["distances"], bands["labels"], bands["path_connections"],
                                         out / "gruneisen.png", title=f"{formula}: mode Grüneisen parameters")
    at = model.summary["at_300K"]
    print(f"static V0 {model.summary['static']['V0_angstrom3']:.4f} Å³, B0 {model.summary['static']['B0_GPa']:.1f} GPa "
          f"(per primitive cell); 300 K: α {1e6 * at['linear_thermal_expansion_per_K']:.2f}e-6/K, "
          f"B {at['B_GPa']:.1f} GPa, V/V0 − 1 {100 * at['V_over_V0_minus_1']:.3f} %")
    nte = model.summary["nte_minimum"]
    print("negative thermal expansion: " + (f"minimum α {1e6 * nte['linear_per_K']:.3f}e-6/K at {nte['temperature_K']:.0f} K"
                                            if nte else "none"))
    smoothness = model.summary["phonon_free_energy_smoothness"]
    if not smoothness["smooth"]:
        print(f"warning: the phonon free energy at {smoothness['temperature_K']:.0f} K is not smooth in V (cubic-fit "
              f"residual {smoothness['cubic_fit_max_residual_meV_per_atom']:.3f} meV/atom > "
              f"{smoothness['tolerance_meV_per_atom']} meV/atom): the model's force constants jump between volumes "
              "(e.g. neighbours crossing a radius where its energy is not twice differentiable, such as SevenNet's "
              "XPLOR switching radii); the thermal expansion from this grid is unreliable")
    if model.summary["extrapolated_from_K"] is not None:
        print(f"warning: above {model.summary['extrapolated_from_K']:.0f} K V(T) leaves the sampled volumes "
              "(extrapolated; widen --strain-range)")
    print(f"wrote {', '.join(str(p) for p in paths.values())}, {out / 'gruneisen.yaml'}, {out / 'summary.json'}, "
          f"{qha_plot}, {gruneisen_plot}" + (f", {out / 'comparison.md'}, {out / 'comparison.csv'}" if others else ""))
