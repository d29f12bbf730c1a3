"""κ(300 K) of silicon for SevenNet-0: phono3py's own Si-PBE example (VASP PBE forces) against SevenNet-0's
exact third derivatives and SevenNet-0's finite differences on the same displaced supercells, and κ
against the size of the fc3 supercell.

Part 1 (``--part example``), on ``benchmarks/data/Si-PBE-phono3py`` (phono3py's example: a = 5.46626 Å,
2×2×2 conventional supercell of 64 atoms, 111 displaced supercells at 0.03 Å):

  dft          phono3py's fc2 and fc3 from the example's VASP forces (FORCES_FC3)
  sevennet-fd  the same 111 supercells, forces from SevenNet-0 (equitrain_jax.Calculator): the finite-
               difference route of issue 20 (74.8 W/(m·K) there)
  sevennet     SevenNet-0's exact fc3 and fc2 (equitrain_jax.phonons.conductivity, default method)

Part 2 (``--part supercell``): SevenNet-0's exact κ of the same Si (a = 5.46626 Å) with fc3 and fc2 in the
2×2×2 primitive supercell (16 atoms), the 2×2×2 conventional one (64) and the 3×3×3 primitive one (54).

RTA, 11×11×11 mesh (as phono3py's example), 300 K; κ_xx in W/(m·K).  Results go to
benchmarks/results/kappa_experiment.json (each part merged into what is there).

    python benchmarks/kappa_experiment.py --model SEVENNET0_DIR --part example
    python benchmarks/kappa_experiment.py --model SEVENNET0_DIR --part supercell
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
EXAMPLE = HERE / "data" / "Si-PBE-phono3py"
RESULTS = HERE / "results" / "kappa_experiment.json"
MESH = (11, 11, 11)
SUPERCELLS = {"2x2x2 primitive (16 atoms)": ("primitive", 2), "2x2x2 conventional (64 atoms)": ("conventional", 2),
              "3x3x3 primitive (54 atoms)": ("primitive", 3)}


def kappa_xx(ph3) -> float:
    from equitrain_jax.phonons.conductivity import kappa_summary, run_thermal_conductivity

    run_thermal_conductivity(ph3, MESH, temperatures=[300.0])
    return float(kappa_summary(ph3)["kappa_W_per_mK"][0][0])


def example(model: str) -> dict:
    import phono3py

    from equitrain_jax import Calculator, Potential
    from equitrain_jax.phonons.conductivity import produce_exact_fc
    from equitrain_jax.phonons.phonopy_interface import phonopy_to_ase

    results = {}
    start = time.perf_counter()
    dft = phono3py.load(EXAMPLE / "phono3py_disp.yaml", forces_fc3_filename=EXAMPLE / "FORCES_FC3", log_level=0)
    results["dft"] = dict(kappa_xx_W_per_mK=kappa_xx(dft), seconds=time.perf_counter() - start)
    print("dft", results["dft"], flush=True)

    calculator = Calculator(model)
    start = time.perf_counter()
    fd = phono3py.load(EXAMPLE / "phono3py_disp.yaml", produce_fc=False, log_level=0)
    forces = np.zeros((len(fd.supercells_with_displacements), len(fd.supercell), 3))
    for k, cell in enumerate(fd.supercells_with_displacements):
        atoms = phonopy_to_ase(cell)
        atoms.calc = calculator
        forces[k] = atoms.get_forces()
    fd.forces = forces
    fd.produce_fc3(is_compact_fc=True)
    results["sevennet-fd"] = dict(kappa_xx_W_per_mK=kappa_xx(fd), seconds=time.perf_counter() - start)
    print("sevennet-fd", results["sevennet-fd"], flush=True)

    start = time.perf_counter()
    exact = phono3py.load(EXAMPLE / "phono3py_disp.yaml", produce_fc=False, log_level=0)
    produce_exact_fc(exact, Potential(model))
    results["sevennet"] = dict(kappa_xx_W_per_mK=kappa_xx(exact), seconds=time.perf_counter() - start,
                               fc3_max_abs_difference_from_fd_eV_per_A3=float(np.abs(exact.fc3 - fd.fc3).max()),
                               fc3_max_abs_eV_per_A3=float(np.abs(exact.fc3).max()))
    print("sevennet", results["sevennet"], flush=True)
    return results


def supercell(model: str) -> dict:
    from ase.build import bulk

    from equitrain_jax import Potential
    from equitrain_jax.phonons.conductivity import phono3py_from_potential

    a = float(np.loadtxt(EXAMPLE / "POSCAR-unitcell", skiprows=2, max_rows=1)[0])
    potential = Potential(model)
    results = {}
    for name, (cell, repeat) in SUPERCELLS.items():
        start = time.perf_counter()
        unitcell = bulk("Si", "diamond", a=a, cubic=cell == "conventional")
        ph3 = phono3py_from_potential(potential, unitcell, repeat, check_size=False)
        results[name] = dict(kappa_xx_W_per_mK=kappa_xx(ph3), seconds=time.perf_counter() - start,
                             n_atoms=len(ph3.supercell))
        print(name, results[name], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SevenNet-0 converted by equitrain-jax (a model directory)")
    parser.add_argument("--part", choices=("example", "supercell"), required=True)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.part] = (example if args.part == "example" else supercell)(args.model)
    results[args.part]["date"] = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
