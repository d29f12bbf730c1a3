"""Force constants for phonons: analytic JAX Hessians against mace-torch and finite displacements.

For diamond-Si supercells (64 and 216 atoms; 512 with --large) and one low-symmetry crystal
(a random triclinic Si4O8 cell, P1, as a 2x1x1 supercell; unit cell only with --quick), the same random-weight MACE-MP-0 medium
architecture (mace-torch, converted to JAX) gives force constants [N, N, 3, 3] in eV/Å² by

  (a) jax-full      our forward-over-reverse Hessian, every row           (phonons.force_constants, "full")
  (b) jax-sym       our Hessian rows of the symmetrically distinct atoms  (phonons.force_constants, "symmetry")
  (c) torch-hess    mace-torch's MACECalculator.get_hessian
  (d) torch-fd      phonopy finite displacements (0.01 Å, ± where phonopy needs them) with MACECalculator

Each (structure, method) runs in its own subprocess: wall time of the force-constant step
(model set-up excluded; for JAX both the first call, with compilation, and a second call) and
peak memory (resource ru_maxrss of that process, and its increase over the set-up).  Results
are checked against (a): max |ΔΦ| in eV/Å².

    python benchmarks/hessian.py            # 64, 216 atoms and the low-symmetry crystal, 128 channels
    python benchmarks/hessian.py --large    # also 512 atoms
    python benchmarks/hessian.py --quick    # < 3 min on 2 CPU cores: Si64 and the 12-atom triclinic cell, 16 channels
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

METHODS = ("jax-full", "jax-sym", "torch-hess", "torch-fd")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def unitcell_and_matrix(name: str):
    """(unit cell, supercell matrix) of a benchmark structure."""
    from ase import Atoms
    from ase.build import bulk

    if name in ("Si64", "Si216", "Si512"):
        n = int(name[2:])
        reps = {64: 2, 216: 3, 512: 4}[n]
        return bulk("Si", "diamond", a=5.43, cubic=True), reps * np.eye(3, dtype=int)
    if name.startswith("SiO-triclinic"):
        rng = np.random.default_rng(11)
        cell = np.array([[5.2, 0.0, 0.0], [1.1, 4.9, 0.0], [0.7, -0.9, 5.6]])
        positions = []
        while len(positions) < 12:
            trial = rng.uniform(size=3) @ cell
            test = Atoms("X" * (len(positions) + 1), positions=positions + [trial], cell=cell, pbc=True)
            if not positions or test.get_distances(len(positions), range(len(positions)), mic=True).min() > 1.5:
                positions.append(trial)
        numbers = [14] * 4 + [8] * 8
        matrix = np.eye(3, dtype=int) if name.endswith("-1") else np.diag([2, 1, 1])
        return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True), matrix
    raise ValueError(name)


def torch_model(channels: int):
    import mace  # noqa: F401
    from equitrain_jax.convert.architectures import build_mace_torch

    return build_mace_torch("mp0a-medium", atomic_numbers=(14, 8), channels=channels, seed=0)


def worker(method: str, structure: str, channels: int, out: str) -> None:
    """Run one method on one structure; write {seconds, ...} JSON and the force constants."""
    warnings.simplefilter("ignore")
    import torch
    from phonopy import Phonopy

    from equitrain_jax.phonons.phonopy_interface import ase_to_phonopy, phonopy_to_ase

    torch.set_num_threads(os.cpu_count() or 1)
    module = torch_model(channels)
    unitcell, matrix = unitcell_and_matrix(structure)
    phonon = Phonopy(ase_to_phonopy(unitcell), supercell_matrix=matrix, primitive_matrix=None)
    supercell = phonopy_to_ase(phonon.supercell)
    n = len(supercell)
    result: dict = dict(method=method, structure=structure, atoms=n)
    if method.startswith("jax"):
        from equitrain_jax.convert import convert_model
        from equitrain_jax.models.io import ModelBundle
        from equitrain_jax.phonons.phonopy_interface import force_constants
        from equitrain_jax.potential import Potential

        potential = Potential(ModelBundle(*convert_model(module)), dtype="float64")
        kind = "full" if method == "jax-full" else "symmetry"
        kwargs = dict(method=kind, symmetry=phonon.symmetry)
        if kind == "full":
            result["rows"] = 3 * n
        else:
            result["rows"] = 3 * len(phonon.symmetry.get_independent_atoms())
        base = peak_rss_mb()
        start = time.perf_counter()
        fc = force_constants(potential, supercell, **kwargs)
        result["seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        fc = force_constants(potential, supercell, **kwargs)
        result["seconds_warm"] = time.perf_counter() - start
    else:
        from mace.calculators import MACECalculator

        torch.set_default_dtype(torch.float64)
        calc = MACECalculator(models=module, default_dtype="float64")
        base = peak_rss_mb()
        start = time.perf_counter()
        if method == "torch-hess":
            hess = calc.get_hessian(supercell.copy())  # [3N, N, 3] = ∂²E/∂r∂r
            fc = np.transpose(np.asarray(hess).reshape(n, 3, n, 3), (0, 2, 1, 3))
            result["rows"] = 3 * n
        else:
            phonon.generate_displacements(distance=0.01)  # phonopy default, ± where needed
            forces = []
            for cell in phonon.supercells_with_displacements:
                atoms = phonopy_to_ase(cell)
                atoms.calc = calc
                forces.append(atoms.get_forces())
            phonon.forces = np.array(forces)
            phonon.produce_force_constants()
            fc = phonon.force_constants
            result["rows"] = f"{len(forces)} force calls"
        result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = peak_rss_mb()
    result["delta_rss_mb"] = peak_rss_mb() - base
    np.save(out + ".npy", np.ascontiguousarray(fc))
    with open(out + ".json", "w") as handle:
        json.dump(result, handle)


def run(method: str, structure: str, channels: int, tmp: str, timeout: float) -> dict:
    out = os.path.join(tmp, f"{structure}-{method}")
    command = [sys.executable, __file__, "--worker", method, structure, "--channels", str(channels), "--out", out]
    try:
        subprocess.run(command, check=True, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except subprocess.TimeoutExpired:
        return dict(method=method, structure=structure, error=f"timed out after {timeout:.0f} s")
    except subprocess.CalledProcessError as error:
        return dict(method=method, structure=structure, error=error.stderr.decode()[-300:])
    with open(out + ".json") as handle:
        result = json.load(handle)
    result["fc"] = np.load(out + ".npy")
    return result


def table(results: list[dict]) -> str:
    lines = [
        f"{'structure':<15}{'N':>5} {'method':<11}{'rows/calls':>16}{'time s':>10}{'warm s':>9}"
        f"{'x jax-full':>13}{'peak MB':>9}{'+MB':>8}{'max|ΔΦ| eV/Å²':>15}"
    ]
    for structure in dict.fromkeys(r["structure"] for r in results):
        group = [r for r in results if r["structure"] == structure]
        ref = next((r for r in group if r["method"] == "jax-full" and "fc" in r), None)
        full = next((r for r in group if r["method"] == "jax-full" and "seconds" in r), None)
        for r in group:
            if "error" in r:
                lines.append(f"{structure:<15}{'':>5} {r['method']:<11}  {r['error'].strip().splitlines()[-1][:90]}")
                continue
            ratio = r["seconds"] / full["seconds"] if full else float("nan")
            diff = np.abs(r["fc"] - ref["fc"]).max() if ref is not None else float("nan")
            warm = f"{r['seconds_warm']:9.2f}" if "seconds_warm" in r else f"{'':>9}"
            lines.append(
                f"{structure:<15}{r['atoms']:>5} {r['method']:<11}{str(r['rows']):>16}{r['seconds']:10.2f}{warm}"
                f"{ratio:13.1f}{r['peak_rss_mb']:9.0f}{r['delta_rss_mb']:8.0f}{diff:15.2e}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 atoms + low-symmetry crystal, 16 channels")
    parser.add_argument("--large", action="store_true", help="also the 512-atom supercell")
    parser.add_argument("--channels", type=int, default=None, help="model width (default 128; 16 with --quick)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per (structure, method)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "STRUCTURE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    channels = args.channels or (16 if args.quick else 128)
    if args.worker:
        worker(*args.worker, channels=channels, out=args.out)
        return
    if args.quick:
        structures = ["Si64", "SiO-triclinic-1"]
    else:
        structures = ["Si64", "Si216"] + (["Si512"] if args.large else []) + ["SiO-triclinic"]
    methods = args.methods.split(",")
    print(f"MACE-MP-0 medium architecture, random weights, {channels} channels, float64, "
          f"{os.cpu_count()} CPU cores; one run each", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for structure in structures:
            for method in methods:
                results.append(run(method, structure, channels, tmp, args.timeout))
                r = results[-1]
                print(f"  {structure} {method}: " + (r.get("error", "").strip()[-200:] or f"{r['seconds']:.2f} s"), flush=True)
    print(table(results))
    print("time s: first call (JAX: with compilation); warm s: second call; x jax-full: time / jax-full time (first calls);\n"
          "peak MB: ru_maxrss of the process; +MB: increase during the force-constant step;\n"
          "max|ΔΦ|: against jax-full (torch-fd carries the O(h²) error of 0.01 Å displacements)")


if __name__ == "__main__":
    main()
