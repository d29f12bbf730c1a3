"""Time and peak memory to the lattice thermal conductivity κ: exact fc3 against phono3py's finite displacements.

For Si and MgO (2×2×2 supercells of the primitive cells by default, 16 atoms) and one model, phono3py's
own displaced-pair data set (its symmetry reduction, distance 0.03 Å) is given forces by

  exact        ours: the model's exact forces to second order, one nested jvp per supercell
               (equitrain_jax.phonons.conductivity.phono3py_from_potential; fc2 from the Hessian)
  fd-jax       phono3py finite displacements, forces from equitrain_jax.Calculator (same model)
  fd-sevenn    phono3py finite displacements, forces from sevenn's SevenNetCalculator on SevenNet-0
               (float32, as sevenn runs; torch side in the separate environment of --sevenn-python)

then phono3py fits fc2 and fc3 (the finite-difference routes: both from the same data set), symmetrises
both (phono3py's --sym-fc, for every route: without it the float32 forces of sevenn leave the acoustic
modes at Γ at 8e-4 THz, above phono3py's 1e-4 THz cut-off, and κ of Si comes out at 3.6–6 instead of
96 W/(m·K)) and solves the Boltzmann transport equation (RTA, --mesh, 300 K).  Each (material, route) runs in its own process:
wall time of the force-constant stage (model loading excluded, compilation included), of the κ stage, and
peak memory (ru_maxrss of that process; for fd-sevenn also of the torch process).  One run each.  κ and
fc3 of the finite-difference routes are compared with the exact ones.

    python benchmarks/conductivity.py --model SEVENNET0_DIR --sevenn-python PYTHON
    python benchmarks/conductivity.py --model SEVENNET0_DIR --routes exact fd-jax --materials Si

SEVENNET0_DIR comes from ``equitrain-jax convert --pretrained sevennet-0 -o DIR``.  The same file, run by
the sevenn environment's python with --torch-forces, is the torch side (it imports only ase, numpy, torch
and sevenn then).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROUTES = ("exact", "fd-jax", "fd-sevenn")
MATERIALS = {"Si": ("Si", "diamond", 5.431), "MgO": ("MgO", "rocksalt", 4.212)}
"""name → (formula, ASE crystal structure, experimental lattice constant in Å)."""
RESULTS = Path(__file__).parent / "results"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0**2  # Linux: kB


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def unitcell(name: str):
    from ase.build import bulk

    formula, structure, a = MATERIALS[name]
    return bulk(formula, structure, a=a)


# ---------------------------------------------------------------------------- torch side (sevenn environment)


def torch_forces(structures: str, output: str) -> None:
    """Forces of every structure of an extxyz file by SevenNetCalculator("7net-0"), saved as .npy; prints
    JSON with the wall time of the loop and the peak memory of this process."""
    import warnings

    import ase.io

    warnings.filterwarnings("ignore")
    from sevenn.calculator import SevenNetCalculator

    cells = ase.io.read(structures, index=":")
    calculator = SevenNetCalculator("7net-0", device="cpu")
    start = time.perf_counter()
    forces = []
    for atoms in cells:
        atoms.calc = calculator
        forces.append(atoms.get_forces())
    seconds = time.perf_counter() - start
    np.save(output, np.array(forces))
    print(json.dumps(dict(forces_seconds=seconds, peak_rss_GB=peak_rss_gb())))


# ---------------------------------------------------------------------------- one route (a fresh process)


def worker(args: argparse.Namespace) -> dict:
    import warnings

    warnings.simplefilter("ignore")  # small supercells are narrower than 2·r_max: the same for every route
    from equitrain_jax import Calculator, Potential
    from equitrain_jax.phonons.conductivity import (
        fc3_work,
        kappa_summary,
        phono3py_from_calculator,
        phono3py_from_potential,
        phono3py_with_displacements,
        run_thermal_conductivity,
    )
    from equitrain_jax.phonons.bridge import phonopy_to_ase

    atoms = unitcell(args.material)
    supercell = args.supercell
    record = dict(material=args.material, route=args.worker, supercell=supercell)
    if args.worker == "exact":
        potential = Potential(args.model)
        start = time.perf_counter()
        ph3 = phono3py_from_potential(potential, atoms, supercell, chunk_size=args.chunk_size, symmetrize_fc=True)
    elif args.worker == "fd-jax":
        calculator = Calculator(args.model)
        start = time.perf_counter()
        ph3 = phono3py_from_calculator(calculator, atoms, supercell, symmetrize_fc=True)
    else:
        import ase.io

        start = time.perf_counter()
        ph3 = phono3py_with_displacements(atoms, supercell)
        cells = [(k, phonopy_to_ase(cell)) for k, cell in enumerate(ph3.supercells_with_displacements) if cell is not None]
        with tempfile.TemporaryDirectory() as tmp:
            ase.io.write(f"{tmp}/cells.extxyz", [cell for _, cell in cells])
            torch = subprocess.run([args.sevenn_python, __file__, "--torch-forces", f"{tmp}/cells.extxyz",
                                    f"{tmp}/forces.npy"], capture_output=True, text=True, check=True)
            computed = np.load(f"{tmp}/forces.npy")
        record["torch"] = json.loads(torch.stdout.strip().splitlines()[-1])
        forces = np.zeros((len(ph3.supercells_with_displacements), len(ph3.supercell), 3))
        forces[[k for k, _ in cells]] = computed
        ph3.forces = forces
        ph3.produce_fc3(is_compact_fc=True)
        ph3.symmetrize_fc3()
        ph3.symmetrize_fc2()
    record["force_constants_seconds"] = time.perf_counter() - start
    record["n_displaced_supercells"] = int(sum(cell is not None for cell in ph3.supercells_with_displacements))
    record["n_atoms_supercell"] = len(ph3.supercell)
    record["exact_fc3_nested_jvps"] = fc3_work(ph3)
    start = time.perf_counter()
    run_thermal_conductivity(ph3, args.mesh, temperatures=[300.0])
    record["kappa_seconds"] = time.perf_counter() - start
    record["kappa_300K_W_per_mK"] = kappa_summary(ph3)["kappa_W_per_mK"][0]
    record["peak_rss_GB"] = peak_rss_gb()
    np.save(args.fc3_file, ph3.fc3)
    return record


# ---------------------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SevenNet-0 converted by equitrain-jax (a model directory)")
    parser.add_argument("--sevenn-python", help="python of an environment with sevenn (for fd-sevenn)")
    parser.add_argument("--materials", nargs="+", default=list(MATERIALS), choices=list(MATERIALS))
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    parser.add_argument("--supercell", type=int, nargs=3, default=[2, 2, 2],
                        help="supercell of the primitive cell (default 2 2 2: 16 atoms)")
    parser.add_argument("--mesh", type=int, nargs=3, default=[11, 11, 11])
    parser.add_argument("--chunk-size", type=int, default=None, help="nested jvps per compiled call (exact)")
    parser.add_argument("--output", default=str(RESULTS / "conductivity.json"))
    parser.add_argument("--worker", choices=ROUTES, help=argparse.SUPPRESS)
    parser.add_argument("--material", help=argparse.SUPPRESS)
    parser.add_argument("--fc3-file", help=argparse.SUPPRESS)
    parser.add_argument("--torch-forces", nargs=2, metavar=("CELLS", "FORCES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_forces:
        torch_forces(*args.torch_forces)
        return
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if not args.model:
        parser.error("--model is required")
    if "fd-sevenn" in args.routes and not args.sevenn_python:
        parser.error("the fd-sevenn route needs --sevenn-python (or leave it out with --routes)")

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent.parent),
                                                        os.environ.get("PYTHONPATH", "")]))
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for material in args.materials:
            fc3 = {}
            for route in args.routes:
                command = [sys.executable, __file__, "--worker", route, "--material", material, "--model", args.model,
                           "--supercell", *map(str, args.supercell), "--mesh", *map(str, args.mesh),
                           "--fc3-file", f"{tmp}/{material}-{route}.npy"]
                if args.sevenn_python:
                    command += ["--sevenn-python", args.sevenn_python]
                if args.chunk_size:
                    command += ["--chunk-size", str(args.chunk_size)]
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
                if done.returncode:
                    raise SystemExit(f"{material} {route} failed:\n{done.stderr[-3000:]}")
                record = json.loads(done.stdout.strip().splitlines()[-1])
                record["process_seconds"] = time.perf_counter() - start
                fc3[route] = np.load(f"{tmp}/{material}-{route}.npy")
                records.append(record)
                print(f"{material:4s} {route:10s} {record['n_displaced_supercells']:4d} supercells  force constants "
                      f"{record['force_constants_seconds']:7.1f} s  κ {record['kappa_seconds']:6.1f} s  peak "
                      f"{record['peak_rss_GB']:.2f} GB  κ(300 K) {record['kappa_300K_W_per_mK'][0]:.2f} W/(m·K)",
                      flush=True)
            if "exact" in fc3:
                exact = next(r for r in records if r["material"] == material and r["route"] == "exact")
                for record in records:
                    if record["material"] == material and record["route"] != "exact":
                        record["fc3_max_abs_difference_from_exact_eV_per_A3"] = float(
                            np.abs(fc3[record["route"]] - fc3["exact"]).max())
                        record["fc3_max_abs_exact_eV_per_A3"] = float(np.abs(fc3["exact"]).max())
                        record["kappa_relative_difference_from_exact"] = (
                            record["kappa_300K_W_per_mK"][0] / exact["kappa_300K_W_per_mK"][0] - 1)
                        record["time_ratio_to_exact"] = (
                            (record["force_constants_seconds"] + record["kappa_seconds"])
                            / (exact["force_constants_seconds"] + exact["kappa_seconds"]))
    machine = (f"{os.cpu_count()} CPU cores ({cpu_model()}), shared; "
               f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    result = dict(machine=machine, mesh=args.mesh, supercell=args.supercell, routes=args.routes, records=records)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1))
    print(f"\n{machine}")
    print(f"{'material':8s} {'route':10s} {'to κ (s)':>9s} {'×exact':>7s} {'peak GB':>8s} {'κ300 (W/mK)':>11s} "
          f"{'Δκ/κ':>7s} {'max|Δfc3| (eV/Å³)':>18s}")
    for r in records:
        total = r["force_constants_seconds"] + r["kappa_seconds"]
        peak = r["peak_rss_GB"] + r.get("torch", {}).get("peak_rss_GB", 0.0)
        print(f"{r['material']:8s} {r['route']:10s} {total:9.1f} {r.get('time_ratio_to_exact', 1.0):7.2f} "
              f"{peak:8.2f} {r['kappa_300K_W_per_mK'][0]:11.2f} {r.get('kappa_relative_difference_from_exact', 0):+7.3f} "
              f"{r.get('fc3_max_abs_difference_from_exact_eV_per_A3', 0.0):18.3g}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
