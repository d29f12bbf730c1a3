"""``equitrain-jax conductivity``: lattice thermal conductivity in phono3py from exact force constants."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from equitrain_jax.cli import checks

import numpy as np

RTA_TEMPERATURES = tuple(float(t) for t in range(0, 1001, 10))
"""phono3py's default temperatures of the RTA (K): 0 to 1000 in steps of 10."""
LBTE_TEMPERATURES = (300.0,)
"""phono3py's default temperature of the direct solution (K)."""
DEFAULT_MESH = (11, 11, 11)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "conductivity",
        help="lattice thermal conductivity: exact fc2 and fc3 from the model, Boltzmann transport by phono3py",
        description="Lattice thermal conductivity (W/(m·K)): phono3py gets the model's exact third derivatives "
                    "for its own displacement data set (no finite-difference error) and fc2 from the analytic "
                    "Hessian, and solves the phonon Boltzmann transport equation. Needs phono3py "
                    "(pip install 'equitrain-jax[kappa]').",
    )
    p.add_argument("structure", help="crystal unit cell (any ASE-readable file)")
    p.add_argument("--model", required=True, help="converted model directory")
    p.add_argument("--supercell", "--dim", type=int, nargs=3, metavar=("NA", "NB", "NC"),
                   help="supercell of fc3 and fc2 (phono3py's --dim); default: the smallest diagonal one whose "
                        "widths reach --min-length")
    p.add_argument("--min-length", type=float, default=10.0,
                   help="smallest supercell width in Å when --supercell is not given (default 10)")
    p.add_argument("--fc3-supercell", type=int, nargs=3, metavar=("NA", "NB", "NC"),
                   help="supercell of fc3 only (overrides --supercell)")
    p.add_argument("--fc2-supercell", "--dim-fc2", type=int, nargs=3, metavar=("NA", "NB", "NC"),
                   help="supercell of fc2 only (phono3py's --dim-fc2; overrides --supercell)")
    p.add_argument("--mesh", type=float, nargs="+", default=list(DEFAULT_MESH), metavar="M",
                   help="q-point mesh: three integers, or one length in Å as phono3py's --mesh "
                        f"(default {' '.join(map(str, DEFAULT_MESH))})")
    p.add_argument("--temperatures", "--ts", type=float, nargs="+", metavar="T",
                   help="temperatures in K (default as phono3py: 0 to 1000 K in steps of 10 for the RTA, "
                        "300 K with --lbte)")
    p.add_argument("--lbte", action="store_true",
                   help="direct solution of the linearised Boltzmann equation instead of the RTA (phono3py's --lbte)")
    p.add_argument("--cutoff-pair", type=float, default=None, metavar="D",
                   help="phono3py's pair cutoff in Å: pairs of atoms farther apart are not displaced and their "
                        "fc3 elements are zero (default: none)")
    p.add_argument("--sym-fc", action="store_true",
                   help="symmetrise fc2 and fc3 (translational invariance, index permutation), phono3py's --sym-fc")
    p.add_argument("--fc3-method", choices=("rows", "displacements"), default="rows",
                   help="how the exact fc3 is computed, both exact: the change of fc2 along each of phono3py's "
                        "first displacements, rows of the symmetrically distinct atoms (default, the fewest "
                        "derivatives), or second-order forces of every displaced-pair supercell")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="derivatives per compiled call (memory bound; default from the supercell size)")
    p.add_argument("--born", default=None, metavar="BORN",
                   help="Born effective charges Z* and dielectric tensor ε∞ in phonopy's BORN format: phono3py applies "
                        "the non-analytic correction (LO–TO splitting) to the harmonic phonons, as its --nac does "
                        "(default: none)")
    p.add_argument("--head", default=None)
    p.add_argument("-o", "--output", required=True, help="output directory (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    p.set_defaults(func=run, check=check, interrupted=checks.incomplete)


def check(args: argparse.Namespace) -> None:
    """Every option, the model directory, the output directory, the crystal and the --born file for
    it, before any work and without JAX; phono3py must be installed (the optional extra ``kappa``)."""
    args.mesh_value, args.temperature_values = _check_arguments(args)
    checks.model_directory(args.model)
    args.atoms = checks.crystal(args.structure)
    args.born_charges = checks.born_charges(args.born, args.atoms)
    try:
        import phono3py  # noqa: F401
    except ImportError:
        raise ImportError("phono3py is not installed; install the optional extra: "
                          "pip install 'equitrain-jax[kappa]'") from None


def _check_arguments(args: argparse.Namespace) -> tuple[list, float | None]:
    """Validate the options (cheap checks, before anything is loaded); returns (mesh, temperatures)."""
    for name in ("supercell", "fc3_supercell", "fc2_supercell"):
        value = getattr(args, name)
        if value is not None and min(value) < 1:
            raise ValueError(f"--{name.replace('_', '-')} needs three positive integers, got {value}")
    if args.min_length <= 0:
        raise ValueError(f"--min-length is a positive length in Å, got {args.min_length}")
    if len(args.mesh) == 3:
        if any(m < 1 or m != int(m) for m in args.mesh):
            raise ValueError(f"--mesh needs three positive integers (or one length in Å), got {args.mesh}")
        mesh = [int(m) for m in args.mesh]
    elif len(args.mesh) == 1 and args.mesh[0] > 0:
        mesh = float(args.mesh[0])
    else:
        raise ValueError(f"--mesh needs three positive integers or one positive length in Å, got {args.mesh}")
    temperatures = args.temperatures or (LBTE_TEMPERATURES if args.lbte else RTA_TEMPERATURES)
    if min(temperatures) < 0:
        raise ValueError(f"--temperatures must be ≥ 0 K, got {args.temperatures}")
    if args.cutoff_pair is not None and args.cutoff_pair <= 0:
        raise ValueError(f"--cutoff-pair is a positive distance in Å, got {args.cutoff_pair}")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be a positive integer, got {args.chunk_size}")
    checks.check_output_directory(args.output, "pass --overwrite to write into it", args.overwrite)
    return mesh, temperatures


def run(args: argparse.Namespace) -> None:
    mesh, temperatures, atoms = args.mesh_value, args.temperature_values, args.atoms

    from tqdm import tqdm

    from equitrain_jax.phonons.bridge import supercell_for_min_length
    from equitrain_jax.phonons import conductivity as kappa
    from equitrain_jax.phonons.nac import describe_nac, nac_parameters_record
    from equitrain_jax.potential import Potential

    potential = Potential(args.model, dtype="float64", head=args.head)
    potential.graph(atoms)  # the model's elements and the structure's geometry, checked before any work
    supercell = args.supercell or supercell_for_min_length(atoms.cell.array, args.min_length)
    fc3_supercell = args.fc3_supercell or supercell
    fc2_supercell = args.fc2_supercell or supercell
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    formula = atoms.get_chemical_formula()

    ph3 = kappa.phono3py_with_displacements(
        atoms, fc3_supercell, phonon_supercell_matrix=None if fc2_supercell == fc3_supercell else fc2_supercell,
        cutoff_pair_distance=args.cutoff_pair,
    )
    args.born_charges.apply(ph3)  # phono3py's own NAC of the harmonic phonons, or none
    print(describe_nac(ph3, args.born_charges.source))
    kappa.check_supercell_sizes(ph3, potential)
    work = kappa.fc3_work(ph3, args.fc3_method)
    print(f"{formula}: fc3 supercell {fc3_supercell} ({len(ph3.supercell)} atoms, {work} nested derivatives by "
          f"--fc3-method {args.fc3_method}), fc2 supercell {fc2_supercell} ({len(ph3.phonon_supercell)} atoms)")
    start = time.perf_counter()
    with tqdm(total=work, desc="exact fc3", unit="jvp") as bar:
        kappa.produce_exact_fc(ph3, potential, method=args.fc3_method, symmetrize_fc=args.sym_fc,
                               chunk_size=args.chunk_size, progress=bar)
    fc_seconds = time.perf_counter() - start
    print(f"exact fc3 and fc2 in {fc_seconds:.1f} s")
    written = _write_force_constants(ph3, out, args.fc3_method)

    start = time.perf_counter()
    print(f"Boltzmann transport ({'direct solution' if args.lbte else 'RTA'}) by phono3py on a "
          f"{mesh if isinstance(mesh, float) else 'x'.join(map(str, mesh))} mesh, {len(temperatures)} temperature(s):")
    kappa.run_thermal_conductivity(ph3, mesh, temperatures=temperatures, is_lbte=args.lbte, directory=out,
                                   log_level=1)
    summary = kappa.kappa_summary(ph3, is_lbte=args.lbte)
    summary.update(structure=str(args.structure), model=str(args.model), fc3_method=args.fc3_method,
                   symmetrized_fc=bool(args.sym_fc), nac=nac_parameters_record(ph3, args.born_charges.source),
                   force_constants_seconds=fc_seconds,
                   transport_seconds=time.perf_counter() - start)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    kappa_plot = kappa.plot_kappa({formula: summary}, out / "kappa.png", title=formula)
    lifetime_plot = kappa.plot_lifetimes(ph3, out / "lifetimes.png", title=formula)
    _print_kappa(summary)
    written += sorted(out.glob("kappa-m*.hdf5")) + [out / "summary.json", kappa_plot, lifetime_plot]
    print(f"wrote {', '.join(map(str, written))}")


def _write_force_constants(ph3, out: Path, method: str) -> list[Path]:
    """phono3py's own files: ``fc2.hdf5`` and ``fc3.hdf5`` and ``phono3py_disp.yaml`` (structure, supercells
    and displacements; ``cd DIR && phono3py-load phono3py_disp.yaml --mesh ... --br`` reruns the transport),
    and with the "displacements" method ``phono3py_params.yaml`` (with the exact second-order forces of
    every displaced supercell, from which phono3py fits the same fc3)."""
    from phono3py.file_IO import write_fc2_to_hdf5, write_fc3_to_hdf5

    paths = [out / "fc2.hdf5", out / "fc3.hdf5", out / "phono3py_disp.yaml"]
    write_fc2_to_hdf5(ph3.fc2, filename=paths[0], p2s_map=ph3.phonon_primitive.p2s_map,
                      physical_unit="eV/angstrom^2")
    write_fc3_to_hdf5(ph3.fc3, filename=paths[1], p2s_map=ph3.primitive.p2s_map)
    ph3.save(paths[2], settings={"force_sets": False})
    if method == "displacements":
        paths.append(out / "phono3py_params.yaml")
        ph3.save(paths[-1])
    return paths


def _print_kappa(summary: dict) -> None:
    """κ at the computed temperature closest to 300 K."""
    temperatures = np.asarray(summary["temperatures_K"])
    index = int(np.argmin(np.abs(temperatures - 300.0)))
    values = ", ".join(f"{name} {value:.4g}" for name, value in zip(summary["kappa_components"],
                                                                     summary["kappa_W_per_mK"][index]))
    print(f"κ at {temperatures[index]:.0f} K ({summary['method']}): {values} W/(m·K)")
