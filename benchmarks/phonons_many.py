"""Phonons of many crystals: materials per hour of our batched list, our one-by-one loop and
torch-sim's batched finite-displacement workflow, with the same random-weight MACE model.

The model: mace-torch's MACE-MP-0 small architecture (`build_mace_torch("mp0a-small")`, its real
width unless --channels says otherwise) with random weights, float64, saved for torch-sim and
converted for ours.  The crystals: ASE bulk structures (fcc, bcc, hcp, diamond, rocksalt,
zincblende, wurtzite, fluorite, perovskite), each with the smallest diagonal supercell at least
--min-length Å wide, as given (not relaxed: a random-weight model's relaxations end in different
places on two codes, or nowhere).  Every side does, for every crystal: phonopy's displacements,
forces, phonopy's force constants (symmetrised), frequencies on a Γ-centred mesh and F, S, Cv at
300 K.  The sides:

  batched    `equitrain_jax.phonons.many.phonons_of_many`: one exact Hessian-vector product per
             phonopy displacement (no ±), several materials' supercells in one padded graph,
             phonopy's post-processing in two threads overlapping the next batch
  loop       our one-by-one loop: `phonopy_from_potential` (method "displacements") per crystal,
             then the same post-processing, one after the other
  torch-sim  torch-sim's phonon workflow (its examples/scripts/6_Phonons): phonopy's displacements
             (0.01 Å, ± where phonopy wants them), the displaced supercells of ALL crystals
             through `torch_sim.models.mace.MaceModel` in batches of ≤ --batch-atoms atoms
             (`torch_sim.io.phonopy_to_state`), then the same post-processing

Each side runs in its own process (a fresh JAX compilation cache); the JAX sides run the list
twice: "cold" includes compiling, "warm" is a second pass of the same list.  Materials per hour
= crystals / wall seconds × 3600.  The free energies at 300 K of each side are compared with the
batched side's (exact force constants; finite displacements differ by their O(h²) error).

    nice -n 5 python benchmarks/phonons_many.py                       # all sides, 17 crystals
    python benchmarks/phonons_many.py --count 3 --channels 16 --out quick-check   # a quick check
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

SIDES = ("batched", "loop", "torch-sim")


def crystals() -> list:
    """17 ASE crystals: elements and binaries/ternaries of common prototypes (lattice constants in Å)."""
    from ase import Atoms
    from ase.build import bulk

    perovskite = Atoms("SrTiO3", cell=np.eye(3) * 3.905, pbc=True,
                       scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return [
        bulk("Cu", "fcc", a=3.61), bulk("Al", "fcc", a=4.05), bulk("Ni", "fcc", a=3.52),
        bulk("Na", "bcc", a=4.23), bulk("W", "bcc", a=3.16), bulk("Fe", "bcc", a=2.87),
        bulk("Mg", "hcp", a=3.21, c=5.21), bulk("Ti", "hcp", a=2.95, c=4.68),
        bulk("Si", "diamond", a=5.43), bulk("Ge", "diamond", a=5.66),
        bulk("NaCl", "rocksalt", a=5.64), bulk("MgO", "rocksalt", a=4.21),
        bulk("GaAs", "zincblende", a=5.65), bulk("ZnS", "zincblende", a=5.41),
        bulk("ZnO", "wurtzite", a=3.25, c=5.21), bulk("CaF2", "fluorite", a=5.46), perovskite,
    ]


def post_process(phonon, mesh) -> dict:
    """The same phonopy work on every side, after the forces are set: force constants
    (symmetrised), then `post_process_set`."""
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants(show_drift=False)
    return post_process_set(phonon, mesh)


def new_phonon(atoms, min_length: float):
    from equitrain_jax.phonons.bridge import new_phonopy, supercell_for_min_length

    return new_phonopy(atoms, np.diag(supercell_for_min_length(atoms.cell.array, min_length)))


def run_batched(args, structures) -> dict:
    from equitrain_jax.phonons.many import ManySettings, phonons_of_many
    from equitrain_jax.potential import Potential

    potential = Potential(str(args.out / "model"), dtype="float64")
    settings = ManySettings(relax=False, min_length=args.min_length, mesh=tuple(args.mesh), batch_atoms=args.batch_atoms)
    lines: list[str] = []
    times, cpu, stages, rows = [], [], [], None
    for _ in range(2):
        start, start_cpu = time.perf_counter(), time.process_time()
        results = phonons_of_many(potential, structures, settings, log=lines.append)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        rows = [dict(r.row) for r in results]
        stages.append({stage: sum(r.timings.get(stage, 0.0) for r in results) for stage in ("prepare", "hessian", "finish")})
    return dict(cold_s=times[0], warm_s=times[1], cold_cpu_s=cpu[0], warm_cpu_s=cpu[1], plan=lines[0],
                stage_wall_s=dict(cold=stages[0], warm=stages[1]), rows=[
        dict(formula=r["formula"], natoms_supercell=r["natoms_supercell"], min_frequency_THz=r["min_frequency_THz"],
             max_frequency_THz=r["max_frequency_THz"], free_energy_kJ_per_mol=r["free_energy_kJ_per_mol"],
             error=r["error"]) for r in rows])


def run_loop(args, structures) -> dict:
    from equitrain_jax.phonons import phonopy_from_potential
    from equitrain_jax.phonons.bridge import supercell_for_min_length
    from equitrain_jax.potential import Potential

    potential = Potential(str(args.out / "model"), dtype="float64")
    times, cpu, rows = [], [], []
    for _ in range(2):
        start, start_cpu = time.perf_counter(), time.process_time()
        rows = []
        for atoms in structures:
            matrix = np.diag(supercell_for_min_length(atoms.cell.array, args.min_length))
            phonon = phonopy_from_potential(potential, atoms, matrix, check_size=False)
            rows.append(dict(formula=atoms.get_chemical_formula(), **post_process_set(phonon, args.mesh)))
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return dict(cold_s=times[0], warm_s=times[1], cold_cpu_s=cpu[0], warm_cpu_s=cpu[1], rows=rows)


def post_process_set(phonon, mesh) -> dict:
    """Mesh frequencies and F at 300 K (kJ/mol) of a `Phonopy` with force constants."""
    from equitrain_jax.phonons.results import CUTOFF_FREQUENCY_THZ

    phonon.run_mesh(list(mesh), is_gamma_center=True)
    frequencies = np.asarray(phonon.get_mesh_dict()["frequencies"])
    phonon.run_thermal_properties(temperatures=[300.0], cutoff_frequency=CUTOFF_FREQUENCY_THZ)
    thermal = phonon.get_thermal_properties_dict()
    return dict(min_frequency_THz=float(frequencies.min()), max_frequency_THz=float(frequencies.max()),
                free_energy_kJ_per_mol=float(thermal["free_energy"][0]), natoms_supercell=len(phonon.supercell))


def run_torch_sim(args, structures) -> dict:
    import mace  # noqa: F401  (before e3nn)
    import torch
    import torch_sim as ts
    from torch_sim.models.mace import MaceModel

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    module = torch.load(args.out / "model.pt", weights_only=False)
    start, start_cpu = time.perf_counter(), time.process_time()
    model = MaceModel(model=module, device=torch.device("cpu"), dtype=torch.float64, compute_forces=True,
                      compute_stress=False)
    phonons = []
    for atoms in structures:
        phonon = new_phonon(atoms, args.min_length)
        phonon.generate_displacements(distance=0.01)  # phonopy's default: ± where the site symmetry needs it
        phonons.append(phonon)
    cells = [(p, k, cell) for p, phonon in enumerate(phonons) for k, cell in enumerate(phonon.supercells_with_displacements)]
    forces = [[None] * len(phonon.supercells_with_displacements) for phonon in phonons]
    batch, atoms_in_batch = [], 0
    for item in cells + [None]:
        if item is None or (batch and atoms_in_batch + len(item[2]) > args.batch_atoms):
            state = ts.io.phonopy_to_state([cell for _, _, cell in batch], torch.device("cpu"), torch.float64)
            out = model(state)["forces"].detach().numpy()
            offset = 0
            for p, k, cell in batch:
                forces[p][k] = out[offset : offset + len(cell)]
                offset += len(cell)
            batch, atoms_in_batch = [], 0
        if item is not None:
            batch.append(item)
            atoms_in_batch += len(item[2])
    rows = []
    for atoms, phonon, f in zip(structures, phonons, forces):
        phonon.forces = np.array(f)
        rows.append(dict(formula=atoms.get_chemical_formula(), **post_process(phonon, args.mesh)))
    return dict(cold_s=time.perf_counter() - start, cold_cpu_s=time.process_time() - start_cpu, warm_s=None,
                warm_cpu_s=None, force_calls=len(cells), rows=rows)


def side_main(args) -> None:
    import ase.io

    warnings.simplefilter("ignore")
    structures = ase.io.read(args.out / "crystals.extxyz", index=":")
    result = {"batched": run_batched, "loop": run_loop, "torch-sim": run_torch_sim}[args.side](args, structures)
    (args.out / f"{args.side}.json").write_text(json.dumps(result, indent=1))


def prepare(args) -> list:
    """The crystals file, the torch model and its conversion (kept: a rerun resumes)."""
    import ase.io

    structures = crystals()[: args.count]
    args.out.mkdir(parents=True, exist_ok=True)
    ase.io.write(args.out / "crystals.extxyz", structures)
    if not (args.out / "model" / "config.json").exists():
        import mace  # noqa: F401
        import torch

        from equitrain_jax.convert import convert_model
        from equitrain_jax.convert.architectures import build_mace_torch
        from equitrain_jax.models.io import save_model

        elements = sorted({int(z) for atoms in structures for z in atoms.numbers})
        module = build_mace_torch("mp0a-small", atomic_numbers=elements, channels=args.channels, seed=0)
        torch.save(module, args.out / "model.pt")
        config, variables = convert_model(module)
        save_model(args.out / "model", config, variables)
    return structures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=17, help="first COUNT crystals of the list (default all 17)")
    parser.add_argument("--channels", type=int, default=None, help="model width (default: mp0a-small's own, 128)")
    parser.add_argument("--min-length", type=float, default=8.0, help="smallest supercell width, Å (default 8)")
    parser.add_argument("--mesh", type=int, nargs=3, default=[20, 20, 20])
    parser.add_argument("--batch-atoms", type=int, default=256, help="atoms per batched call, both codes (default 256)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "phonons_many")
    parser.add_argument("--rerun", action="store_true", help="run sides that have results already")
    args = parser.parse_args()
    if args.side:
        return side_main(args)
    structures = prepare(args)
    for side in args.sides.split(","):
        if (args.out / f"{side}.json").exists() and not args.rerun:
            print(f"{side}: kept from an earlier run ({args.out / f'{side}.json'})")
            continue
        command = [sys.executable, __file__, "--side", side, "--out", str(args.out), "--min-length",
                   str(args.min_length), "--mesh", *map(str, args.mesh), "--batch-atoms", str(args.batch_atoms)]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        print(f"{side}: {time.perf_counter() - start:.1f} s (process)", flush=True)
    report(args, structures)


def report(args, structures) -> None:
    """Materials per hour of each side, by wall time and by the process's CPU time (less sensitive
    to a shared machine's load), cold and warm, and the ratios to the batched side."""
    results = {side: json.loads((args.out / f"{side}.json").read_text())
               for side in SIDES if (args.out / f"{side}.json").exists()}
    n = len(structures)
    lines = [f"# phonons of {n} crystals, {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores (shared), "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, XLA_FLAGS={os.environ.get('XLA_FLAGS')}",
             f"# model: MACE-MP-0 small architecture, random weights, channels {args.channels or 'default'}, float64; "
             f"supercells >= {args.min_length} A, mesh {args.mesh}, batches <= {args.batch_atoms} atoms"]
    if "batched" in results:
        lines.append(f"# batched plan: {results['batched']['plan']}")
    if "torch-sim" in results:
        lines.append(f"# torch-sim: {results['torch-sim']['force_calls']} displaced supercells")
    lines.append(f"{'side':<10} {'pass':<5} {'wall s':>8} {'CPU s':>8} {'mat/h wall':>11} {'mat/h CPU':>10} "
                 f"{'max |dF| kJ/mol':>16}")
    reference = {r["formula"]: r for r in results.get("batched", {}).get("rows", [])}
    record = {"date": str(datetime.date.today()), "crystals": n, "channels": args.channels, "min_length": args.min_length,
              "mesh": args.mesh, "batch_atoms": args.batch_atoms, "sides": results, "ratios": {}}
    for side, result in results.items():
        errors = [abs(r["free_energy_kJ_per_mol"] - reference[r["formula"]]["free_energy_kJ_per_mol"])
                  for r in result["rows"] if r["formula"] in reference and not r.get("error")
                  and reference[r["formula"]]["free_energy_kJ_per_mol"] != ""]
        for run in ("cold", "warm"):
            if result.get(f"{run}_s") is None:
                continue
            wall, cpu = result[f"{run}_s"], result[f"{run}_cpu_s"]
            lines.append(f"{side:<10} {run:<5} {wall:8.1f} {cpu:8.1f} {n / wall * 3600:11.0f} {n / cpu * 3600:10.0f} "
                         f"{max(errors, default=0.0):16.2e}")
    if "batched" in results:
        for side in ("loop", "torch-sim"):
            if side not in results:
                continue
            other = results[side]
            ratios = {}
            for run in ("cold", "warm"):
                theirs = run if other.get(f"{run}_s") is not None else "cold"  # torch-sim compiles nothing: one pass
                for clock, key in (("wall", "_s"), ("CPU", "_cpu_s")):
                    ratios[f"{run}_{clock}"] = other[theirs + key] / results["batched"][run + key]
            record["ratios"][side] = ratios
            lines.append(f"batched vs {side}: cold {ratios['cold_wall']:.2f}x wall, {ratios['cold_CPU']:.2f}x CPU "
                         f"(compilation included); warm {ratios['warm_wall']:.2f}x wall, {ratios['warm_CPU']:.2f}x CPU")
    text = "\n".join(lines)
    print(text)
    (args.out / "table.txt").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
