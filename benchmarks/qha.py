"""Quasi-harmonic approximation of diamond Si at 11 volumes: one compiled batch of Hessian-vector
products (ours) against the same workflow with phonopy's finite displacements through sevenn's
SevenNetCalculator (SevenNet-0) and mace-torch's MACECalculator (the MACE-MP-0 medium
architecture with random weights, converted for our side: both sides evaluate the same weights).

The workflow, timed from after the model is loaded, is the same on every side: Si's primitive
cell scaled isotropically to 11 volumes (V/V0 = 0.95 … 1.05; Si has no free internal coordinate,
so no side relaxes), the static energy and the force constants of the 2×2×2 primitive supercell
(16 atoms, the DFT reference's) at each volume, and phonopy's QHA (`phonopy.run_qha`, 0–1000 K,
mesh 100 Å, Vinet).  Force constants:

  ours-batch      all volumes' supercells in ONE graph, one Hessian-vector product per phonopy
                  displacement (1 for Si) for all volumes at once (`phonons.qha.phonons_at_volumes`)
  ours-1by1       `phonopy_from_potential` per volume (one Hessian-vector product per volume)
  sevenn-fd       phonopy displacements (0.01 Å; ± where phonopy needs them), forces from sevenn's
                  SevenNetCalculator (float32, as sevenn runs), in sevenn's own environment
                  (--sevenn-python; sevenn needs e3nn >= 0.5, which clashes with mace-torch)
  mace-fd         the same with mace-torch's MACECalculator (float64)

Ours runs in float64 (the phonon default).  For ours, "first" is a fresh `Potential` (JAX
compiles its programs) and "warm" a second run of the same workflow; the torch sides compile
nothing and run once after one warm-up force call.  The ratio is torch time / ours.  The QHA
results of each pair on the same weights (α(300 K), V(300 K), B(300 K)) are printed side by side:
they differ only by the finite-displacement error (and sevenn's float32).

    python benchmarks/qha.py --sevenn-python PATH/TO/sevenn-env/bin/python
    python benchmarks/qha.py --models mace --channels 32      # without sevenn, a narrower MACE

Writes the table and JSON to benchmarks/results/qha-si.{txt,json} (--output).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

N_VOLUMES, STRAIN_RANGE = 11, 0.05
SUPERCELL = (2, 2, 2)
T_MAX, T_STEP, MESH = 1000.0, 10.0, 100.0
DISTANCE = 0.01  # Å, phonopy's default displacement
OUTPUT = Path(__file__).parent / "results" / "qha-si"


# ---------------------------------------------------------------------------- phonopy-only parts (also run in sevenn's environment)


def run_qha(phonons, energies):
    """Phonopy's QHA with the settings of `equitrain_jax.phonons.qha.quasi_harmonic`: the mesh length
    resolved once, on the middle volume, and the last temperature spent on finite differences."""
    import phonopy
    from phonopy.phonon.grid import length2mesh

    middle = phonons[len(phonons) // 2]
    mesh = length2mesh(MESH, middle.primitive.cell, rotations=middle.primitive_symmetry.pointgroup_operations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return phonopy.run_qha(phonons, np.arange(0.0, T_MAX + 1.5 * T_STEP, T_STEP), internal_energies=energies,
                               mesh=mesh, eos="vinet", exclude_gamma_acoustic=True)


def key_numbers(result) -> dict:
    """α(300 K) (1/K, linear = β/3), V(300 K) (Å³ per primitive cell), B(300 K) (GPa)."""
    from phonopy.physical_units import get_physical_units

    t = result.temperatures
    return {"alpha_300K_per_K": float(np.interp(300.0, t, result.thermal_expansion)) / 3,
            "V_300K_angstrom3": float(np.interp(300.0, t, result.equilibrium_volumes)),
            "B_300K_GPa": float(np.interp(300.0, t, result.bulk_moduli)) * get_physical_units().EVAngstromToGPa}


def finite_displacement_workflow(calculator, cells, primitive_matrix) -> dict:
    """The workflow with phonopy's finite displacements and any ASE calculator; seconds and results."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    from ase import Atoms

    start = time.perf_counter()
    phonons, energies, force_calls = [], [], 0
    for cell in cells:
        phonon = Phonopy(PhonopyAtoms(numbers=cell.numbers, cell=cell.cell.array, masses=cell.get_masses(),
                                      scaled_positions=cell.get_scaled_positions()),
                         supercell_matrix=np.diag(SUPERCELL), primitive_matrix=primitive_matrix)
        phonon.generate_displacements(distance=DISTANCE)
        forces = []
        for displaced in phonon.supercells_with_displacements:
            atoms = Atoms(numbers=displaced.numbers, cell=displaced.cell, scaled_positions=displaced.scaled_positions,
                          pbc=True)
            atoms.calc = calculator
            forces.append(atoms.get_forces())
        force_calls += len(forces)
        phonon.forces = np.array(forces)
        phonon.produce_force_constants()
        phonon.symmetrize_force_constants(show_drift=False)
        static = cell.copy()
        static.calc = calculator
        energies.append(static.get_potential_energy() * len(phonon.primitive) / len(phonon.unitcell))
        phonons.append(phonon)
    force_constants_s = time.perf_counter() - start
    start = time.perf_counter()
    result = run_qha(phonons, np.array(energies))
    qha_s = time.perf_counter() - start
    return {"seconds": force_constants_s + qha_s, "force_constants_and_energies_s": force_constants_s,
            "qha_s": qha_s, "force_calls": force_calls, **key_numbers(result)}


def sevenn_worker(cells_file: str, primitive_matrix: list, out: str) -> None:
    """sevenn's side, run by --sevenn-python: SevenNetCalculator('7net-0') on the cells."""
    import ase.io
    import torch
    from sevenn.calculator import SevenNetCalculator

    warnings.filterwarnings("ignore")
    torch.set_num_threads(os.cpu_count() or 1)
    cells = ase.io.read(cells_file, ":")
    calculator = SevenNetCalculator("7net-0", device="cpu")
    warm = cells[0].copy()
    warm.calc = calculator
    warm.get_forces()  # one warm-up call
    result = finite_displacement_workflow(calculator, cells, np.array(primitive_matrix))
    Path(out).write_text(json.dumps({"side": "sevenn-fd", "dtype": "float32", "threads": torch.get_num_threads(),
                                     **result}))


# ---------------------------------------------------------------------------- our side and mace-torch


def our_workflow(potential, cells, batched: bool) -> tuple[dict, object]:
    """The workflow with our force constants: one batch over the volumes, or volume by volume."""
    from equitrain_jax.phonons import phonopy_from_potential
    from equitrain_jax.phonons.qha import phonons_at_volumes, primitive_energies, quasi_harmonic

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 16-atom supercells are narrower than 2·r_max
        if batched:
            phonons = phonons_at_volumes(potential, cells, np.diag(SUPERCELL))
        else:
            phonons = [phonopy_from_potential(potential, cell, np.diag(SUPERCELL), method="displacements")
                       for cell in cells]
        energies = primitive_energies(potential, phonons)
    force_constants_s = time.perf_counter() - start
    start = time.perf_counter()
    result = quasi_harmonic(phonons, energies, t_max=T_MAX, t_step=T_STEP, mesh=MESH)
    qha_s = time.perf_counter() - start
    return ({"seconds": force_constants_s + qha_s, "force_constants_and_energies_s": force_constants_s,
             "qha_s": qha_s, **key_numbers(result)}, phonons[0].primitive_matrix)


def ours(model_dir: Path, cells, label: str) -> tuple[list[dict], np.ndarray]:
    """ours-batch and ours-1by1, each first (fresh Potential: compilation included) and warm."""
    from equitrain_jax.potential import Potential

    rows = []
    for batched, side in ((True, "ours-batch"), (False, "ours-1by1")):
        potential = Potential(model_dir, dtype="float64")
        first, primitive_matrix = our_workflow(potential, cells, batched)
        warm, _ = our_workflow(potential, cells, batched)
        rows.append({"model": label, "side": side, "dtype": "float64", "first_s": first["seconds"],
                     "warm_s": warm["seconds"], **{k: v for k, v in warm.items() if k != "seconds"}})
        print(f"  {label} {side}: first {first['seconds']:.1f} s, warm {warm['seconds']:.1f} s", flush=True)
    return rows, primitive_matrix


def mace_side(module, cells, primitive_matrix) -> dict:
    import torch
    from mace.calculators import MACECalculator

    torch.set_num_threads(os.cpu_count() or 1)
    torch.set_default_dtype(torch.float64)
    calculator = MACECalculator(models=module, default_dtype="float64", device="cpu")
    warm = cells[0].copy()
    warm.calc = calculator
    warm.get_forces()  # one warm-up call
    return {"side": "mace-fd", "dtype": "float64", "threads": torch.get_num_threads(),
            **finite_displacement_workflow(calculator, cells, primitive_matrix)}


def volume_cells(unitcell) -> list:
    from equitrain_jax.phonons.qha import scale_volume, volume_factors

    return [scale_volume(unitcell, f) for f in volume_factors(N_VOLUMES, STRAIN_RANGE)]


def table(rows: list[dict]) -> str:
    lines = [f"{'model':<22}{'side':<12}{'dtype':<9}{'first s':>9}{'warm s':>9}{'ratio warm':>11}{'ratio first':>12}"
             f"{'α300 1e-6/K':>13}{'V300 Å³':>10}{'B300 GPa':>10}"]
    for model in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == model]
        batch = next(r for r in group if r["side"] == "ours-batch")
        for r in group:
            warm = r.get("warm_s", r["seconds"] if "seconds" in r else np.nan)
            first = r.get("first_s", warm)
            lines.append(f"{model:<22}{r['side']:<12}{r['dtype']:<9}{first:9.1f}{warm:9.1f}"
                         f"{warm / batch['warm_s']:11.1f}{first / batch['first_s']:12.1f}"
                         f"{1e6 * r['alpha_300K_per_K']:13.3f}{r['V_300K_angstrom3']:10.4f}{r['B_300K_GPa']:10.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=("sevennet", "mace"), default=["sevennet", "mace"])
    parser.add_argument("--sevenn-python", help="python of an environment with sevenn (needed for --models sevennet)")
    parser.add_argument("--channels", type=int, default=128, help="MACE width (128: the medium architecture)")
    parser.add_argument("-o", "--output", default=str(OUTPUT), help="writes OUTPUT.txt and OUTPUT.json")
    parser.add_argument("--worker", nargs=3, metavar=("CELLS", "PRIMITIVE_JSON", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sevenn_worker(args.worker[0], json.loads(args.worker[1]), args.worker[2])
        return
    if "sevennet" in args.models and not args.sevenn_python:
        parser.error("--models sevennet needs --sevenn-python (sevenn runs in its own environment)")
    warnings.simplefilter("ignore")
    import mace  # noqa: F401  (before e3nn)
    from ase.build import bulk

    from equitrain_jax.convert import convert_model
    from equitrain_jax.convert.architectures import build_mace_torch
    from equitrain_jax.convert.sevennet import convert_pretrained
    from equitrain_jax.models.io import save_model
    from equitrain_jax.phonons.qha import relax_positions
    from equitrain_jax.potential import Potential

    header = (f"QHA of Si, {N_VOLUMES} volumes (V/V0 {1 - STRAIN_RANGE:.2f}–{1 + STRAIN_RANGE:.2f}), "
              f"{'×'.join(map(str, SUPERCELL))} primitive supercell (16 atoms), 0–{T_MAX:.0f} K; {os.cpu_count()} CPU "
              f"cores ({platform.processor() or platform.machine()}); "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(header, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "sevennet" in args.models:
            convert_pretrained("sevennet-0", tmp / "sevennet-0")
            centre, converged = relax_positions(bulk("Si", "diamond", a=5.43), Potential(tmp / "sevennet-0"),
                                                fmax=1e-5, cell=True)
            assert converged, "SevenNet-0's Si did not relax"
            cells = volume_cells(centre)
            label = "SevenNet-0"
            ours_rows, primitive_matrix = ours(tmp / "sevennet-0", cells, label)
            rows += ours_rows
            import ase.io

            ase.io.write(tmp / "cells.extxyz", cells)
            subprocess.run([args.sevenn_python, __file__, "--worker", str(tmp / "cells.extxyz"),
                            json.dumps(np.asarray(primitive_matrix).tolist()), str(tmp / "sevenn.json")], check=True)
            rows.append({"model": label, **json.loads((tmp / "sevenn.json").read_text())})
            print(f"  {label} sevenn-fd: {rows[-1]['seconds']:.1f} s", flush=True)
        if "mace" in args.models:
            module = build_mace_torch("mp0a-medium", atomic_numbers=(14,), channels=args.channels, seed=0)
            save_model(tmp / "mace", *convert_model(module))
            cells = volume_cells(bulk("Si", "diamond", a=5.43))
            label = f"MACE-MP-0 medium ({args.channels} ch, random)"
            ours_rows, primitive_matrix = ours(tmp / "mace", cells, label)
            rows += ours_rows
            rows.append({"model": label, **mace_side(module, cells, primitive_matrix)})
            print(f"  {label} mace-fd: {rows[-1]['seconds']:.1f} s", flush=True)
    text = "\n".join([header, table(rows),
                      "first: a fresh Potential (JAX compilation included); warm: the workflow again; torch sides run "
                      "once after one warm-up force call.", "ratio: time of the row / time of ours-batch (same model)."])
    print(text)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".txt").write_text(text + "\n")
    output.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
