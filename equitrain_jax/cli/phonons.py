"""``equitrain-jax phonons``: phonons from the analytic Hessian."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equitrain_jax.cli import checks
from equitrain_jax.phonons.many_config import BATCH_ATOMS, MESH
from equitrain_jax.train.config import BACKENDS

NAC_CHOICES = ("auto", "none")
"""--nac: NAC parameters on the model and the reference alike when there are any, or on neither."""


def add_parser(sub) -> None:
    p = sub.add_parser("phonons", help="phonons from the analytic Hessian: band structure, DOS, thermal properties")
    p.add_argument("structure", nargs="?", help="crystal structure (any ASE-readable file)")
    p.add_argument("--many", default=None, metavar="STRUCTURES",
                   help="phonons of every structure of this file (any ASE-readable multi-frame file): each relaxed "
                        "(space group kept), force constants from batched Hessian-vector products, thermal properties; "
                        "writes OUTPUT/summary.csv (one row per structure, failures with their reason) and "
                        "OUTPUT/<index>-<formula>/ (phonopy_params.yaml, thermal_properties.yaml)")
    p.add_argument("--model", required=True, help="converted model directory")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--supercell", type=int, nargs=3, metavar=("NA", "NB", "NC"))
    group.add_argument("--min-length", type=float, default=12.0, help="smallest supercell width in Å (default 12)")
    p.add_argument("--relax", action="store_true",
                   help="relax positions and cell first, keeping the symmetry (always done with --many)")
    p.add_argument("--fmax", type=float, default=1e-4,
                   help="force threshold of --relax and of following imaginary modes, eV/Å")
    p.add_argument("--relax-steps", type=int, default=500, help="most optimiser steps of each relaxation")
    p.add_argument("--head", default=None)
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="MACE kernels: e3nn or cuequivariance (needs the cueq extra); default: the model's")
    p.add_argument("--hessian", choices=("displacements", "symmetry", "full"), default="displacements",
                   help="how the force constants are computed, all exact: one Hessian-vector product per phonopy "
                        "displacement (default, the fewest), the rows of the distinct atoms, or every row")
    p.add_argument("--reference", default=None, metavar="REF.yaml",
                   help="reference phonopy YAML (with force constants, or with FORCE_CONSTANTS/FORCE_SETS beside it; "
                        "NAC parameters from its nac_params or a BORN file beside it): writes comparison.json, "
                        "comparison.png and comparison_thermal.png")
    p.add_argument("--born", default=None, metavar="BORN",
                   help="Born effective charges Z* and dielectric tensor ε∞ in phonopy's BORN format (ε∞, then Z* of "
                        "each symmetry-independent atom of the primitive cell), for the non-analytic correction (NAC, "
                        "LO–TO splitting); with --reference, applied to the reference as well")
    p.add_argument("--nac", choices=NAC_CHOICES, default="auto",
                   help="non-analytic correction: 'auto' (default) applies Z* and ε∞ from --born, else from the "
                        "reference, to the model and the reference alike; 'none' applies none, and removes the "
                        "reference's, so that both are compared without LO–TO splitting")
    p.add_argument("--imaginary-threshold", type=float, default=0.05,
                   help="frequencies below minus this (THz) count as imaginary (default 0.05)")
    p.add_argument("--scan-modes", action="store_true",
                   help="for each imaginary mode at the supercell's q-points: energy scans and a relaxation along it")
    p.add_argument("--scan-max-displacement", type=float, default=0.3,
                   help="largest atomic displacement of the mode scans, Å (default 0.3)")
    p.add_argument("--scan-max-modes", type=int, default=10,
                   help="scan and follow at most this many of the most unstable modes (default 10)")
    p.add_argument("--follow-relax-cell", action="store_true",
                   help="when following an imaginary mode, relax the supercell's cell as well as the positions")
    many = p.add_argument_group("with --many")
    many.add_argument("--mesh", type=int, nargs=3, default=list(MESH), metavar=("MA", "MB", "MC"),
                      help="Γ-centred q-point mesh of the summary's frequencies and thermal properties "
                           f"(default {' '.join(map(str, MESH))})")
    many.add_argument("--batch-atoms", type=int, default=BATCH_ATOMS,
                      help=f"most supercell atoms in one batched Hessian-vector product (default {BATCH_ATOMS})")
    many.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                      help="run as one of --num-processes processes (jax.distributed), each on its share of the list; "
                           "process 0 listens here and writes summary.csv")
    many.add_argument("--num-processes", type=int, default=None, help="processes of a --coordinator run")
    many.add_argument("--process-id", type=int, default=None, help="this process's number, 0 … N-1, of a --coordinator run")
    many.add_argument("--distributed", action="store_true",
                      help="as --coordinator, with jax.distributed's own detection of the processes (SLURM, Open MPI, …)")
    p.add_argument("-o", "--output", required=True, help="output directory (new or empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into OUTPUT even if it holds something")
    p.set_defaults(func=run, check=check, interrupted=checks.incomplete)


def check(args: argparse.Namespace) -> None:
    """Every option, the model directory, the output directory, the reference file, the crystal
    (periodic, with volume, no overlapping atoms) and the --born file for it, before any work.
    With --many, the file's structures are read and each one's problem kept for its row."""
    if (args.structure is None) == (args.many is None):
        raise ValueError("give exactly one of STRUCTURE (one crystal) and --many STRUCTURES (a list)")
    many_options = [option for option, given in (
        ("--coordinator", args.coordinator), ("--num-processes", args.num_processes is not None),
        ("--process-id", args.process_id is not None), ("--distributed", args.distributed),
        ("--mesh", args.mesh != list(MESH)), ("--batch-atoms", args.batch_atoms != BATCH_ATOMS)) if given]
    if args.many is None and many_options:
        raise ValueError(f"{', '.join(many_options)}: only with --many")
    if args.supercell is not None and min(args.supercell) < 1:
        raise ValueError(f"--supercell takes three repetitions >= 1, got {' '.join(map(str, args.supercell))}")
    checks.positive(args.min_length, "--min-length (Å)")
    checks.positive(args.fmax, "--fmax (eV/Å)")
    checks.at_least(args.relax_steps, 1, "--relax-steps")
    checks.non_negative(args.imaginary_threshold, "--imaginary-threshold (a frequency in THz, counted below minus it)")
    checks.positive(args.scan_max_displacement, "--scan-max-displacement (Å)")
    checks.at_least(args.scan_max_modes, 1, "--scan-max-modes")
    if args.many is not None:
        return check_many(args)
    if args.reference:
        checks.input_file(args.reference, "reference phonopy file")
    if args.born and args.nac == "none":
        raise ValueError(f"--born {args.born} with --nac none: nothing would use the Born charges; drop one of them")
    checks.backend(args.backend, checks.model_directory(args.model))
    checks.check_output_directory(args.output, "pass --overwrite to write into it", args.overwrite)
    args.atoms = checks.crystal(args.structure)
    args.born_charges = checks.born_charges(args.born, args.atoms)


def check_many(args: argparse.Namespace) -> None:
    """The options of a --many run and its file; ``args.structures`` (all of them) and
    ``args.problems`` (index → why that structure is no crystal for phonons)."""
    single = [option for option, given in (
        ("--reference", args.reference), ("--born", args.born), ("--scan-modes", args.scan_modes),
        ("--follow-relax-cell", args.follow_relax_cell), ("--hessian", args.hessian != "displacements"),
        ("--nac", args.nac != "auto")) if given]
    if single:
        raise ValueError(f"{', '.join(single)}: only with one STRUCTURE, not with --many")
    if min(args.mesh) < 1:
        raise ValueError(f"--mesh takes three numbers of q-points >= 1, got {' '.join(map(str, args.mesh))}")
    checks.at_least(args.batch_atoms, 1, "--batch-atoms")
    explicit = [args.coordinator is not None, args.num_processes is not None, args.process_id is not None]
    if any(explicit):
        if not all(explicit):
            raise ValueError("--coordinator, --num-processes and --process-id go together (or use --distributed)")
        if args.distributed:
            raise ValueError("--distributed detects the processes itself; drop --coordinator, --num-processes, --process-id")
        checks.at_least(args.num_processes, 1, "--num-processes")
        if not 0 <= args.process_id < args.num_processes:
            raise ValueError(f"--process-id must be 0 … {args.num_processes - 1} for --num-processes "
                             f"{args.num_processes}, got {args.process_id}")
        host, _, port = args.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--coordinator takes HOST:PORT, got {args.coordinator!r}")
    checks.backend(args.backend, checks.model_directory(args.model))
    checks.check_output_directory(args.output, "pass --overwrite to write into it", args.overwrite)
    args.structures = checks.structures(args.many, "--many")
    args.problems = {i: problem for i, atoms in enumerate(args.structures)
                     if (problem := checks.crystal_problem(atoms)) is not None}


def run(args: argparse.Namespace) -> None:
    if args.many is not None:
        return run_many(args)
    import ase.io
    import numpy as np

    from equitrain_jax.calculator import Calculator
    from equitrain_jax.phonons import load_reference, phonopy_from_potential, write_results
    from equitrain_jax.phonons.bridge import supercell_for_min_length
    from equitrain_jax.phonons.nac import describe_nac
    from equitrain_jax.phonons.plots import plot_band_structure_and_dos, plot_thermal_properties
    from equitrain_jax.potential import Potential

    atoms = args.atoms
    supercell = args.supercell or supercell_for_min_length(atoms.cell.array, args.min_length)
    reference = None
    if args.reference:  # a bad reference, or one of another crystal, is refused before any phonon is computed
        reference = load_reference(args.reference)
        same_crystal(atoms, supercell, reference, args.reference)
    nac = choose_nac(args, reference)  # so are Born charges that do not fit the reference's
    potential = Potential(args.model, dtype="float64", head=args.head, backend=args.backend)
    potential.graph(atoms)  # an element the model lacks is refused before the output directory is made
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.relax:
        from ase.spacegroup.symmetrize import check_symmetry

        from equitrain_jax.phonons.relax import relax

        before = check_symmetry(atoms, 1e-5).international
        converged, _ = relax(atoms, Calculator(potential), args.fmax, args.relax_steps, relax_cell=True,
                             keep_symmetry=True, logfile=str(out / "relax.log"))
        ase.io.write(out / "relaxed.extxyz", atoms)
        after = check_symmetry(atoms, 1e-5).international
        print(f"relaxation {'converged' if converged else 'did NOT converge'} to fmax {args.fmax} eV/Å; "
              f"space group {before} → {after}; structure in {out / 'relaxed.extxyz'}")
        if not converged:
            raise ValueError(f"relaxation did not reach fmax={args.fmax} eV/Å in {args.relax_steps} steps, so no "
                             f"phonons were computed; partial results kept: the last structure in "
                             f"{out / 'relaxed.extxyz'}, the optimiser log in {out / 'relax.log'} "
                             "(raise --relax-steps or --fmax)")
        supercell = args.supercell or supercell_for_min_length(atoms.cell.array, args.min_length)
    print(f"supercell {supercell} of {atoms.get_chemical_formula()} ({len(atoms) * int(np.prod(supercell))} atoms)")
    phonon = phonopy_from_potential(potential, atoms, supercell_matrix=supercell, method=args.hessian)
    nac.apply(phonon)
    print(describe_nac(phonon, nac.source))
    title = atoms.get_chemical_formula() + (f" (Z*, ε∞ from {nac.source})" if nac.params is not None else "")
    paths = write_results(phonon, out, imaginary_tolerance=args.imaginary_threshold, nac_source=nac.source)
    plot = plot_band_structure_and_dos(phonon, out / "band_dos.png", title=title)
    thermal_plot = plot_thermal_properties(phonon, out / "thermal.png", title=title)
    summary = json.loads(paths["summary"].read_text())
    thermal = summary["thermal"]
    print(f"max frequency {summary['max_frequency_THz']:.3f} THz, min {summary['min_frequency_THz']:.3f} THz, "
          f"imaginary modes: {'yes' if summary['has_imaginary_modes'] else 'no'}")
    print(f"300 K: F {thermal['free_energy_kJ_per_mol']:.3f} kJ/mol, S {thermal['entropy_J_per_K_mol']:.3f} J/K/mol, "
          f"Cv {thermal['heat_capacity_J_per_K_mol']:.3f} J/K/mol ({thermal['per']})")
    print(f"wrote {', '.join(str(path) for path in paths.values())}, {plot}, {thermal_plot}")
    imaginary_mode_analysis(args, phonon, potential, out)
    if reference is not None:
        compare_with_reference(phonon, reference, args.reference, out, title=title)


def choose_nac(args: argparse.Namespace, reference):
    """The NAC parameters for the model (`equitrain_jax.phonons.nac.NacParameters`), and the same
    on the reference (set or removed there), so that a comparison is like with like; each decision
    printed, every mismatch a named error.

    ``--nac auto``: from ``--born`` (read for the structure's primitive cell by `check`), else from
    the reference.  Both given and different: an error.  ``--nac none``: none, the reference's removed.
    """
    from equitrain_jax.phonons.bridge import new_phonopy
    from equitrain_jax.phonons.compare import reference_nac_source
    from equitrain_jax.phonons.nac import NacParameters, apply_nac, same_nac_params, transfer_nac_params

    own = reference_nac_source(args.reference) if reference is not None and reference.nac_params is not None else None
    if args.nac == "none":
        if own is not None:
            apply_nac(reference, None)
            print(f"--nac none: the reference's NAC parameters (from {own}) are not applied either, so model and "
                  "reference are compared without LO–TO splitting")
        return NacParameters()
    if args.born_charges.params is not None:
        born = args.born_charges
        if reference is not None:
            on_reference = transfer_nac_params(born.params, born.cell, reference)
            if own is None:
                apply_nac(reference, on_reference)
                print(f"the reference has no NAC parameters; --born {args.born} is applied to it as well")
            elif not same_nac_params(on_reference, reference.nac_params):
                raise ValueError(f"--born {args.born} holds other Born charges or ε∞ than the reference's own (from "
                                 f"{own}); pass the reference's, or none (its own are then applied to the model)")
        return born
    if own is not None:
        try:
            transfer_nac_params(reference.nac_params, reference, new_phonopy(args.atoms, 1))  # the structure's atoms
        except ValueError as error:
            raise ValueError(f"--reference {args.reference}: its NAC parameters (from {own}): {error}") from None
        print(f"the reference's NAC parameters (from {own}) are applied to the model as well (--nac none: to neither)")
        return NacParameters(reference.nac_params, reference, own)
    return NacParameters()


def same_crystal(atoms, supercell, reference, reference_path: str) -> None:
    """Refuse a reference of another crystal (other atoms in the primitive cell, or another lattice
    beyond 5 % strain), from the structures alone: the check `compare_phonons` makes at the end."""
    import numpy as np
    from phonopy import Phonopy

    from equitrain_jax.phonons.compare import primitive_transformation
    from equitrain_jax.phonons import ase_to_phonopy

    try:
        primitive_transformation(Phonopy(ase_to_phonopy(atoms), supercell_matrix=np.diag(supercell),
                                         primitive_matrix="auto"), reference)
    except ValueError as error:
        raise ValueError(f"--reference {reference_path}: {error}") from None


def imaginary_mode_analysis(args: argparse.Namespace, phonon, potential, out: Path) -> None:
    """List the imaginary modes at the supercell's q-points; with --scan-modes scan and follow each."""
    import ase.io

    from equitrain_jax.phonons import analyse_imaginary_modes, imaginary_modes
    from equitrain_jax.phonons.plots import plot_mode_scan_2d, plot_mode_scans

    if args.scan_modes:
        report, results = analyse_imaginary_modes(
            phonon, potential, threshold=args.imaginary_threshold, max_displacement=args.scan_max_displacement,
            max_modes=args.scan_max_modes, relax_cell=args.follow_relax_cell, fmax=args.fmax, steps=args.relax_steps,
        )
    else:
        modes = imaginary_modes(phonon, args.imaginary_threshold)
        report = {"threshold_THz": args.imaginary_threshold, "n_imaginary_modes": len(modes),
                  "modes": [mode.to_dict() for mode in modes]}
        results = []
    report["nac_applied"] = phonon.nac_params is not None  # Γ without NAC, the other q-points unchanged by it
    path = out / "imaginary_modes.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"{report['n_imaginary_modes']} imaginary mode(s) below -{args.imaginary_threshold} THz at Γ and the "
          f"supercell's commensurate q-points; details in {path}")
    for index, record in enumerate(report["modes"]):
        line = (f"  mode {index}: q = {record['qpoint']}, f = {record['frequency_THz']:.3f} THz, "
                f"{len(record['bands'])} band(s)")
        if "follow" in record:
            follow = record["follow"]
            line += (f"; scan minimum {1e3 * record['scan_minimum']['energy_eV']:.2f} meV/supercell at "
                     f"Q = {record['scan_minimum']['amplitude_amu05_A']:.3f} amu^1/2 Å; relaxed "
                     f"{follow['relaxed_energy_change_meV_per_atom']:.3f} meV/atom, space group "
                     f"{follow['space_group_before']} → {follow['space_group_after']}"
                     f"{'' if follow['converged'] else ' (relaxation not converged)'}")
        print(line)
    if report["n_imaginary_modes"] and not args.scan_modes:
        print("  rerun with --scan-modes to scan the energy along them and relax along each")
    elif len(results) < report["n_imaginary_modes"]:
        print(f"  the {len(results)} most unstable were scanned (--scan-max-modes)")
    if not results:
        return
    plot_mode_scans({f"mode {i}: q={r['mode'].qpoint.tolist()}, {r['mode'].frequency:.2f} THz": r["scan"]
                     for i, r in enumerate(results)}, out / "mode_scans.png", title="energy along imaginary modes")
    for index, result in enumerate(results):
        if result["scan_2d"] is not None:
            plot_mode_scan_2d(result["scan_2d"], out / f"mode_{index}_scan_2d.png", title=f"mode {index}")
        if result["relaxed"] is not None:
            ase.io.write(out / f"mode_{index}_relaxed.extxyz", result["relaxed"])
    print(f"  wrote {out / 'mode_scans.png'}, 2D scans and relaxed structures (mode_<i>_*.png/.extxyz)")


def compare_with_reference(phonon, reference, reference_path: str, out: Path, title: str) -> None:
    """Frequency and thermal errors against the reference, and an overlay plot."""
    from equitrain_jax.phonons.compare import THERMAL_KEYS, compare_phonons
    from equitrain_jax.phonons.plots import plot_band_structure_and_dos, plot_thermal_properties

    comparison = {"reference": str(reference_path), **compare_phonons(phonon, reference)}
    nac = comparison["nac"]
    print("vs reference: " + ("both with NAC, the same Z* and ε∞" if nac["model"] and nac["same_parameters"] else
                              "both with NAC, different Z* or ε∞" if nac["model"] else "both without NAC"))
    path = out / "comparison.json"
    path.write_text(json.dumps(comparison, indent=1))
    plot = plot_band_structure_and_dos({"model": phonon, "reference": reference}, out / "comparison.png", title=title)
    thermal_plot = plot_thermal_properties({"model": phonon, "reference": reference}, out / "comparison_thermal.png",
                                           title=title)
    for name in ("band_path", "mesh"):
        errors = comparison[name]
        print(f"vs reference, {name}: MAE {errors['mae_THz']:.3f} THz, RMSE {errors['rmse_THz']:.3f} THz, "
              f"max |error| {errors['max_abs_error_THz']:.3f} THz, "
              f"max-frequency error {errors['max_frequency_error_THz']:+.3f} THz")
    thermal = comparison["thermal"]
    errors = {key: thermal[key]["error"] for key in THERMAL_KEYS.values()}
    print(f"vs reference, {thermal['temperature_K']:.0f} K: ΔF {errors['free_energy_kJ_per_mol']:+.3f} kJ/mol, "
          f"ΔS {errors['entropy_J_per_K_mol']:+.3f} J/K/mol, ΔCv {errors['heat_capacity_J_per_K_mol']:+.3f} J/K/mol")
    print(f"wrote {path}, {plot}, {thermal_plot}")


def run_many(args: argparse.Namespace) -> None:
    """Phonons of every structure of ``--many``, this process's share of them when several
    processes run (`equitrain_jax.phonons.many.join_processes`); process 0 gathers the rows into
    OUTPUT/summary.csv."""
    import time

    from equitrain_jax.phonons.many import (
        ManySettings, gather_rows, join_processes, phonons_of_many, problem_row, process_share, write_summary)
    from equitrain_jax.potential import Potential

    start = time.perf_counter()
    processes = None
    if args.coordinator is not None or args.distributed:
        processes = join_processes(args.coordinator, args.num_processes, args.process_id)
    process, count = (processes.process_id, processes.num_processes) if processes else (0, 1)
    share = process_share(len(args.structures), process, count)
    rows = [problem_row(i, args.structures[i], args.problems[i]) for i in share if i in args.problems]
    good = [i for i in share if i not in args.problems]
    name = f"process {process}/{count}: " if count > 1 else ""
    print(f"{name}{len(share)} of {len(args.structures)} structures in {args.many}"
          + (f", {len(share) - len(good)} refused" if len(good) < len(share) else ""), flush=True)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    settings = ManySettings(
        supercell=tuple(args.supercell) if args.supercell else None, min_length=args.min_length, fmax=args.fmax,
        relax_steps=args.relax_steps, mesh=tuple(args.mesh), imaginary_threshold=args.imaginary_threshold,
        batch_atoms=args.batch_atoms,
    )
    if good:
        potential = Potential(args.model, dtype="float64", head=args.head, backend=args.backend)
        results = phonons_of_many(potential, [args.structures[i] for i in good], settings, indices=good, output=out,
                                  progress=True, log=lambda line: print(name + line, flush=True))
        rows += [result.row for result in results]
    if processes is not None:
        rows = gather_rows(rows, processes)
        processes.shutdown()
    if process != 0:
        return
    path = write_summary(rows, out / "summary.csv")
    failed = [row for row in rows if row["error"]]
    hours = (time.perf_counter() - start) / 3600
    print(f"{len(rows) - len(failed)} of {len(rows)} materials done, {len(failed)} failed, in {3600 * hours:.1f} s "
          f"({(len(rows) - len(failed)) / hours:.0f} materials per hour); summary in {path}")
    for row in failed:
        print(f"  {row['index']} {row['formula']}: {row['error']}")
