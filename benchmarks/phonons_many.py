"""Phonons of many crystals: materials per hour of our batched list, our one-by-one loop and
torch-sim's batched finite-displacement workflow, with the same model weights on every side.

The models (--model):

  sevennet-0   SevenNet-0 (11 July 2024), the checkpoint shipped in the sevenn wheel: converted for
               us (`equitrain_jax.convert.sevennet.convert_pretrained`, or --model-dir), the same
               file loaded by sevenn for torch-sim's `torch_sim.models.sevennet.SevenNetModel`.
               float32 on both sides: torch-sim's SevenNetModel supports float32 only.
               sevenn needs e3nn >= 0.5, so torch-sim's side runs in another Python environment
               with sevenn and torch-sim-atomistic (--torch-python).
  mace-random  mace-torch's MACE-MP-0 small architecture (`build_mace_torch("mp0a-small")`, its
               real width unless --channels says otherwise) with random weights, float64, saved for
               torch-sim's `MaceModel` and converted for ours (the run recorded first).

The crystals (`crystals`): ASE bulk structures of nine prototypes, not relaxed (the same inputs
on every side).  First the 17 of the first recorded run, then, one prototype after the other,
the elements whose ASE reference state is fcc, bcc, hcp or diamond (ASE's lattice constants;
not the noble gases) and binary and ternary compounds in the rocksalt, zincblende, wurtzite,
fluorite (and antifluorite) and cubic perovskite structures with rounded room-temperature
experimental lattice constants (the tables below), 142 in all; --count N takes the first N.
Each gets the smallest diagonal supercell at least --min-length Å wide.  Every side does, for
every crystal: phonopy's displacements, forces, phonopy's force constants (symmetrised),
frequencies on a Γ-centred mesh and F, S, Cv at 300 K.  The sides:

  batched    `equitrain_jax.phonons.many.phonons_of_many`: one exact Hessian-vector product per
             phonopy displacement (no ±), several materials' supercells in one padded graph,
             phonopy's post-processing in two threads overlapping the next batch
  loop       our one-by-one loop: `phonopy_from_potential` (method "displacements") per crystal,
             then the same post-processing, one after the other (--loop-count: the first N only,
             since it compiles once per supercell shape)
  torch-sim  torch-sim's phonon workflow (its examples/scripts/6_Phonons): phonopy's displacements
             (0.01 Å, ± where phonopy wants them), the displaced supercells of ALL crystals
             through torch-sim's model in batches of ≤ --batch-atoms atoms
             (`torch_sim.io.phonopy_to_state`), then the same post-processing

Two-core sides, not in the default --sides (the other sides run on one thread each):

  batched-2p    the batched side as two single-threaded processes started together, each on
                every other crystal of the list (the share `equitrain-jax phonons --many` gives
                each of two processes); wall time: the slower process's, per pass
  torch-sim-2t  torch-sim's side in one process with two threads

Each side runs in its own process (the JAX sides with no compiled programs) and runs its list
twice: "cold" is the first pass (compilation included), "warm" the second.  Materials per hour
= crystals / seconds × 3600, by wall time and by the process's CPU time.  Each side's free
energies at 300 K are compared with the batched side's, or batched-2p's without it (exact force
constants; finite displacements differ by their O(h²) error and, in float32, by the forces'
rounding / h).

    nice -n 5 python benchmarks/phonons_many.py --model sevennet-0 --torch-python PY
    python benchmarks/phonons_many.py --model sevennet-0 --torch-python PY --count 4 --out quick-check
    nice -n 5 python benchmarks/phonons_many.py --model mace-random --channels 32 --count 17   # the first run
    python benchmarks/phonons_many.py --model sevennet-0 --torch-python PY --count 100 --sides batched-2p,torch-sim-2t
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
TWO_CORES = {"batched-2p": dict(side="batched", processes=2, threads=1),
             "torch-sim-2t": dict(side="torch-sim", processes=1, threads=2)}
"""The two-core sides (not in the default --sides): our batched list as two single-threaded
processes, each on every other crystal of the list (the share `equitrain-jax phonons --many` gives
each of two processes), against torch-sim's side in one process with two threads."""
CHECK = "check"
"""Not a timed side: F at 300 K of a few crystals from our model in float64, exact and by phonopy's
finite displacements (as torch-sim's side makes them), in float32 by finite displacements: how
far apart the timed sides' free energies may be (`run_check`)."""
MODELS = {
    "sevennet-0": dict(dtype="float32", min_length=10.0, out="phonons_many/sevennet0"),
    "mace-random": dict(dtype="float64", min_length=8.0, out="phonons_many"),
}
"""Per model: the dtype of every side, the default smallest supercell width (Å; SevenNet-0's
2·r_max = 10 Å; 8 Å for the first recorded run) and the default output under benchmarks/results."""

ROCKSALT = {
    "LiF": 4.03, "LiCl": 5.13, "NaF": 4.63, "NaBr": 5.97, "NaI": 6.47, "KF": 5.35, "KCl": 6.29, "KBr": 6.60,
    "KI": 7.07, "RbCl": 6.59, "AgCl": 5.55, "CaO": 4.81, "SrO": 5.16, "BaO": 5.52, "NiO": 4.18, "MnO": 4.44,
    "CdO": 4.70, "PbS": 5.94, "PbTe": 6.46, "SnTe": 6.32, "TiC": 4.33, "TiN": 4.24, "ZrC": 4.70, "HfC": 4.64,
    "NbC": 4.47, "TaC": 4.46, "ScN": 4.50,
}
ZINCBLENDE = {
    "BN": 3.615, "BP": 4.54, "SiC": 4.36, "AlP": 5.46, "AlAs": 5.66, "AlSb": 6.14, "GaP": 5.45, "GaSb": 6.10,
    "InP": 5.87, "InAs": 6.06, "InSb": 6.48, "ZnSe": 5.67, "ZnTe": 6.10, "CdTe": 6.48, "HgTe": 6.46,
    "CuCl": 5.41, "CuBr": 5.69, "CuI": 6.05,
}
WURTZITE = {
    "GaN": (3.19, 5.19), "AlN": (3.11, 4.98), "InN": (3.54, 5.70), "BeO": (2.70, 4.38), "CdS": (4.14, 6.71),
    "CdSe": (4.30, 7.01), "ZnS": (3.82, 6.26),
}
FLUORITE = {  # the atom at the origin first: "OLi2" is antifluorite Li2O
    "SrF2": 5.80, "BaF2": 6.20, "CdF2": 5.39, "CeO2": 5.41, "ThO2": 5.60, "UO2": 5.47, "ZrO2": 5.07,
    "OLi2": 4.61, "ONa2": 5.55, "SLi2": 5.71, "SiMg2": 6.35,
}
PEROVSKITE = {  # ABX3, cubic: A at the origin, B at the centre, X at the face centres
    "BaTiO3": 4.00, "KTaO3": 3.989, "KNbO3": 4.02, "BaZrO3": 4.19, "BaSnO3": 4.12, "SrZrO3": 4.10,
    "LaAlO3": 3.79, "KMgF3": 3.99, "KZnF3": 4.05, "CsPbCl3": 5.61, "CsPbBr3": 5.87, "EuTiO3": 3.905,
    "PbTiO3": 3.97,
}
"""Compounds beyond the first 17, with rounded room-temperature experimental lattice constants
(Å; as commonly tabulated, e.g. in the CRC Handbook of Chemistry and Physics; wurtzite: a, c).
They only need to be near a minimum of the model: the benchmark counts work, not accuracy."""


def perovskite(formula: str, a: float):
    from ase import Atoms

    return Atoms(formula, cell=np.eye(3) * a, pbc=True,
                 scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def crystals() -> list:
    """The benchmark's 142 crystals (Å), in a fixed order: the first recorded run's 17, then the
    others one prototype after the other (so that the first N of the list mix the prototypes)."""
    from ase.build import bulk
    from ase.data import chemical_symbols, reference_states

    first = [
        bulk("Cu", "fcc", a=3.61), bulk("Al", "fcc", a=4.05), bulk("Ni", "fcc", a=3.52),
        bulk("Na", "bcc", a=4.23), bulk("W", "bcc", a=3.16), bulk("Fe", "bcc", a=2.87),
        bulk("Mg", "hcp", a=3.21, c=5.21), bulk("Ti", "hcp", a=2.95, c=4.68),
        bulk("Si", "diamond", a=5.43), bulk("Ge", "diamond", a=5.66),
        bulk("NaCl", "rocksalt", a=5.64), bulk("MgO", "rocksalt", a=4.21),
        bulk("GaAs", "zincblende", a=5.65), bulk("ZnS", "zincblende", a=5.41),
        bulk("ZnO", "wurtzite", a=3.25, c=5.21), bulk("CaF2", "fluorite", a=5.46), perovskite("SrTiO3", 3.905),
    ]
    seen = {symbol for symbol in ("Cu", "Al", "Ni", "Na", "W", "Fe", "Mg", "Ti", "Si", "Ge")}
    elements = {structure: [] for structure in ("fcc", "bcc", "hcp", "diamond")}
    for z, state in enumerate(reference_states[:95]):
        symbol = chemical_symbols[z]
        # ASE's reference states of these elements (its lattice constants, its c/a); noble gases
        # are van der Waals solids, and ASE's "hcp" Se and Te are chain structures: left out
        if state and state["symmetry"] in elements and symbol not in seen | {"Ne", "Ar", "Kr", "Xe", "Se", "Te"}:
            elements[state["symmetry"]].append(bulk(symbol))
    elements["diamond"].append(bulk("Sn", "diamond", a=6.49))  # α-Sn (ASE's reference is β-Sn)
    groups = [*elements.values(),
              [bulk(f, "rocksalt", a=a) for f, a in ROCKSALT.items()],
              [bulk(f, "zincblende", a=a) for f, a in ZINCBLENDE.items()],
              [bulk(f, "wurtzite", a=a, c=c) for f, (a, c) in WURTZITE.items()],
              [bulk(f, "fluorite", a=a) for f, a in FLUORITE.items()],
              [perovskite(f, a) for f, a in PEROVSKITE.items()]]
    rest = []
    for k in range(max(len(group) for group in groups)):
        rest += [group[k] for group in groups if k < len(group)]
    return first + rest


def new_phonon(atoms, symprec: float = 1e-5):
    """Phonopy of ``atoms`` with the supercell the parent process chose (``atoms.info["supercell"]``),
    as `equitrain_jax.phonons.bridge.new_phonopy` makes it (primitive cell "auto"), with phonopy
    alone: torch-sim's side may run where JAX is not installed."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unitcell = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array,
                            scaled_positions=atoms.get_scaled_positions(), masses=atoms.get_masses())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Phonopy(unitcell, supercell_matrix=np.diag(supercell_of(atoms)), primitive_matrix="auto", symprec=symprec)


def supercell_of(atoms) -> list[int]:
    return [int(n) for n in np.atleast_1d(atoms.info["supercell"])]


def post_process(phonon, plan) -> dict:
    """The same phonopy work on every side, after the forces are set: force constants
    (symmetrised), then `post_process_set`."""
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants(show_drift=False)
    return post_process_set(phonon, plan)


def post_process_set(phonon, plan) -> dict:
    """Mesh frequencies and F at 300 K (kJ/mol) of a `Phonopy` with force constants."""
    phonon.run_mesh(list(plan["mesh"]), is_gamma_center=True)
    frequencies = np.asarray(phonon.get_mesh_dict()["frequencies"])
    phonon.run_thermal_properties(temperatures=[300.0], cutoff_frequency=plan["cutoff_frequency_THz"])
    thermal = phonon.get_thermal_properties_dict()
    return dict(min_frequency_THz=float(frequencies.min()), max_frequency_THz=float(frequencies.max()),
                free_energy_kJ_per_mol=float(thermal["free_energy"][0]), natoms_supercell=len(phonon.supercell))


def wait_for_processes(args, step: int) -> None:
    """With ``--share P/N``: wait until all N processes of a side have reached pass ``step``, so
    that each pass of a two-process side starts together in both (files in OUT/.barrier)."""
    if not args.share:
        return
    process, count = args.share
    barrier = args.out / ".barrier"
    (barrier / f"{step}.{process}").touch()
    while not all((barrier / f"{step}.{p}").exists() for p in range(count)):
        time.sleep(0.05)


def timed_passes(args, run_once) -> dict:
    """``run_once()`` (→ rows, stage seconds) ``args.passes`` times: wall and CPU seconds of each."""
    passes = []
    for step in range(args.passes):
        wait_for_processes(args, step)
        start, start_cpu = time.perf_counter(), time.process_time()
        rows, stages = run_once()
        passes.append(dict(wall_s=time.perf_counter() - start, cpu_s=time.process_time() - start_cpu, stages=stages))
    result = dict(rows=rows, passes=passes)
    for name, run in zip(("cold", "warm"), passes):
        result.update({f"{name}_s": run["wall_s"], f"{name}_cpu_s": run["cpu_s"]})
    return result


def load_potential(args, plan):
    from equitrain_jax.potential import Potential

    return Potential(str(args.out / plan["model_dir"]), dtype=plan["dtype"])


def run_batched(args, plan, structures) -> dict:
    from equitrain_jax.phonons.many import ManySettings, phonons_of_many, process_share

    if args.share:  # the share `equitrain-jax phonons --many` gives process P of N
        structures = [structures[i] for i in process_share(len(structures), *args.share)]
    potential = load_potential(args, plan)
    settings = ManySettings(relax=False, supercell=None, min_length=plan["min_length"], mesh=tuple(plan["mesh"]),
                            batch_atoms=plan["batch_atoms"])
    lines: list[str] = []

    def run_once():
        lines.clear()
        results = phonons_of_many(potential, structures, settings, log=lines.append)
        stages = {stage: sum(r.timings.get(stage, 0.0) for r in results) for stage in ("prepare", "hessian", "finish")}
        return [dict(r.row) for r in results], stages

    result = timed_passes(args, run_once)
    result["log"] = list(lines)
    result["rows"] = [dict(formula=r["formula"], natoms_supercell=r["natoms_supercell"], supercell=r["supercell"],
                           min_frequency_THz=r["min_frequency_THz"], max_frequency_THz=r["max_frequency_THz"],
                           free_energy_kJ_per_mol=r["free_energy_kJ_per_mol"], error=r["error"])
                      for r in result["rows"]]
    return result


def run_loop(args, plan, structures) -> dict:
    from equitrain_jax.phonons import phonopy_from_potential

    potential = load_potential(args, plan)
    structures = structures[: args.loop_count or len(structures)]

    def run_once():
        rows = []
        for atoms in structures:
            phonon = phonopy_from_potential(potential, atoms, np.diag(supercell_of(atoms)), check_size=False)
            rows.append(dict(formula=atoms.get_chemical_formula(), **post_process_set(phonon, plan)))
        return rows, {}

    return dict(crystals=len(structures), **timed_passes(args, run_once))


def run_check(args, plan, structures) -> dict:
    from equitrain_jax.calculator import Calculator
    from equitrain_jax.phonons import phonopy_from_calculator, phonopy_from_potential
    from equitrain_jax.potential import Potential

    model_dir = str(args.out / plan["model_dir"])
    potentials = {dtype: Potential(model_dir, dtype=dtype) for dtype in ("float64", "float32")}
    rows = []
    for index in [i for i in args.check if i < len(structures)]:
        atoms = structures[index]
        matrix = np.diag(supercell_of(atoms))
        row = dict(index=index, formula=atoms.get_chemical_formula())
        exact = phonopy_from_potential(potentials["float64"], atoms, matrix, check_size=False)
        row["exact_float64"] = post_process_set(exact, plan)["free_energy_kJ_per_mol"]
        for dtype, potential in potentials.items():
            phonon = phonopy_from_calculator(Calculator(potential), atoms, matrix, distance=0.01, plusminus="auto")
            row[f"finite_displacements_{dtype}"] = post_process_set(phonon, plan)["free_energy_kJ_per_mol"]
        rows.append(row)
    return dict(rows=rows)


def torch_sim_model(args, plan):
    """torch-sim's model wrapper of the side's weights (float32 SevenNet-0, float64 random MACE)."""
    import torch

    if plan["model"] == "mace-random":
        import mace  # noqa: F401  (before e3nn)
        from torch_sim.models.mace import MaceModel

        module = torch.load(args.out / "model.pt", weights_only=False)
        return MaceModel(model=module, device=torch.device("cpu"), dtype=torch.float64, compute_forces=True,
                         compute_stress=False)
    import sevenn.calculator
    import sevenn.util

    # torch-sim-atomistic 0.3.0 imports `torch_script_type` from sevenn.calculator, which sevenn
    # 0.13 no longer defines; it is only used to recognise a TorchScript model (this one is not)
    if not hasattr(sevenn.calculator, "torch_script_type"):
        sevenn.calculator.torch_script_type = torch.jit.RecursiveScriptModule
    from torch_sim.models.sevennet import SevenNetModel

    module, _ = sevenn.util.model_from_checkpoint(args.checkpoint)
    return SevenNetModel(model=module, device=torch.device("cpu"), dtype=torch.float32)


def run_torch_sim(args, plan, structures) -> dict:
    import torch
    import torch_sim as ts

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    dtype = getattr(torch, plan["dtype"])
    model = torch_sim_model(args, plan)

    def run_once():
        start = time.perf_counter()
        phonons = []
        for atoms in structures:
            phonon = new_phonon(atoms)
            phonon.generate_displacements(distance=0.01)  # phonopy's default: ± where the site symmetry needs it
            phonons.append(phonon)
        stages = dict(displacements=time.perf_counter() - start)
        start = time.perf_counter()
        cells = [(p, k, cell) for p, phonon in enumerate(phonons)
                 for k, cell in enumerate(phonon.supercells_with_displacements)]
        forces = [[None] * len(phonon.supercells_with_displacements) for phonon in phonons]
        batch, atoms_in_batch = [], 0
        for item in cells + [None]:
            if item is None or (batch and atoms_in_batch + len(item[2]) > plan["batch_atoms"]):
                state = ts.io.phonopy_to_state([cell for _, _, cell in batch], torch.device("cpu"), dtype)
                out = model(state)["forces"].detach().numpy().astype(np.float64)
                offset = 0
                for p, k, cell in batch:
                    forces[p][k] = out[offset : offset + len(cell)]
                    offset += len(cell)
                batch, atoms_in_batch = [], 0
            if item is not None:
                batch.append(item)
                atoms_in_batch += len(item[2])
        stages["forces"] = time.perf_counter() - start
        start = time.perf_counter()
        rows = []
        for atoms, phonon, f in zip(structures, phonons, forces):
            phonon.forces = np.array(f)
            rows.append(dict(formula=atoms.get_chemical_formula(), **post_process(phonon, plan)))
        stages["post_processing"] = time.perf_counter() - start
        stages["force_calls"] = len(cells)
        return rows, stages

    result = timed_passes(args, run_once)
    result["versions"] = versions(("torch", "torch_sim", "sevenn", "phonopy"))
    return result


def versions(packages) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in packages:
        for dist in (name, name.replace("_", "-"), name.replace("_", "-") + "-atomistic"):
            try:
                found[name] = version(dist)
                break
            except PackageNotFoundError:
                continue
    return found


def side_main(args) -> None:
    import ase.io

    warnings.simplefilter("ignore")
    plan = json.loads((args.out / "plan.json").read_text())
    structures = ase.io.read(args.out / "crystals.extxyz", index=":")
    load = os.getloadavg()[0]
    sides = {"batched": run_batched, "loop": run_loop, "torch-sim": run_torch_sim, CHECK: run_check}
    result = sides[args.side](args, plan, structures)
    result["loadavg"] = [load, os.getloadavg()[0]]
    (args.out / f"{args.result or args.side}.json").write_text(json.dumps(result, indent=1))


def run_two_cores(args, name: str, command: list) -> None:
    """A two-core side: its processes started together (``--share P/N`` each, one thread each) or
    one process with two threads; the processes' results merged into OUT/<name>.json: rows in
    list order, per pass the longest process's wall time and the sum of their CPU times."""
    import shutil

    from equitrain_jax.phonons.many import process_share

    spec = TWO_CORES[name]
    threads = str(spec["threads"])
    env = dict(os.environ, OMP_NUM_THREADS=threads,
               XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if spec['threads'] > 1 else 'false'} "
                         f"intra_op_parallelism_threads={threads}")
    count = spec["processes"]
    if count > 1:  # the processes' passes start together (`wait_for_processes`)
        shutil.rmtree(args.out / ".barrier", ignore_errors=True)
        (args.out / ".barrier").mkdir()
    parts = [f"{name}.{p}" if count > 1 else name for p in range(count)]
    shares = [["--share", f"{p}/{count}"] if count > 1 else [] for p in range(count)]
    processes = [subprocess.Popen(command + ["--side", spec["side"], "--result", part] + share, env=env)
                 for part, share in zip(parts, shares)]
    if any(process.wait() for process in processes):
        raise SystemExit(f"{name}: a process failed")
    if count == 1:
        return
    shutil.rmtree(args.out / ".barrier", ignore_errors=True)
    results = [json.loads((args.out / f"{part}.json").read_text()) for part in parts]
    rows = [None] * sum(len(result["rows"]) for result in results)
    for p, result in enumerate(results):
        for index, row in zip(process_share(len(rows), p, count), result["rows"]):
            rows[index] = row
    passes = [dict(wall_s=max(run["wall_s"] for run in runs), cpu_s=sum(run["cpu_s"] for run in runs),
                   process_wall_s=[run["wall_s"] for run in runs],
                   stages={stage: sum(run["stages"][stage] for run in runs) for stage in runs[0]["stages"]})
              for runs in zip(*(result["passes"] for result in results))]
    merged = dict(rows=rows, passes=passes, processes=count, threads=spec["threads"],
                  loadavg=[max(result["loadavg"][i] for result in results) for i in (0, 1)],
                  log=[line for result in results for line in result.get("log", [])[:1]])
    for label, run in zip(("cold", "warm"), passes):
        merged.update({f"{label}_s": run["wall_s"], f"{label}_cpu_s": run["cpu_s"]})
    (args.out / f"{name}.json").write_text(json.dumps(merged, indent=1))
    for part in parts:
        (args.out / f"{part}.json").unlink()


def prepare(args) -> tuple[list, dict]:
    """The crystals file (with each one's supercell), the plan every side reads, and the model:
    converted SevenNet-0 or a random MACE saved for torch and converted (kept: a rerun resumes)."""
    import ase.io

    from equitrain_jax.phonons.bridge import supercell_for_min_length
    from equitrain_jax.phonons.results import CUTOFF_FREQUENCY_THZ

    structures = crystals()[: args.count]
    for atoms in structures:
        atoms.info["supercell"] = supercell_for_min_length(atoms.cell.array, args.min_length)
    args.out.mkdir(parents=True, exist_ok=True)
    ase.io.write(args.out / "crystals.extxyz", structures)
    model_dir = args.model_dir or args.out / "model"
    if args.model == "sevennet-0" and args.model_dir is None and not (model_dir / "config.json").exists():
        from equitrain_jax.convert.sevennet import convert_pretrained

        convert_pretrained("sevennet-0", model_dir)
    if args.model == "mace-random" and not (model_dir / "config.json").exists():
        import mace  # noqa: F401
        import torch

        from equitrain_jax.convert import convert_model
        from equitrain_jax.convert.architectures import build_mace_torch
        from equitrain_jax.models.io import save_model

        elements = sorted({int(z) for atoms in structures for z in atoms.numbers})
        module = build_mace_torch("mp0a-small", atomic_numbers=elements, channels=args.channels, seed=0)
        torch.save(module, args.out / "model.pt")
        config, variables = convert_model(module)
        save_model(model_dir, config, variables)
    plan = dict(model=args.model, model_dir=os.path.relpath(Path(model_dir).resolve(), args.out.resolve()), dtype=MODELS[args.model]["dtype"],
                min_length=args.min_length, mesh=args.mesh, batch_atoms=args.batch_atoms,
                cutoff_frequency_THz=CUTOFF_FREQUENCY_THZ)
    (args.out / "plan.json").write_text(json.dumps(plan, indent=1))
    return structures, plan


def checkpoint_path(args) -> str:
    from equitrain_jax.convert.sevennet import pretrained_checkpoint

    return str(pretrained_checkpoint("sevennet-0"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="sevennet-0")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="sevennet-0: an already converted SevenNet-0 (`equitrain-jax convert --pretrained "
                             "sevennet-0 -o DIR`; default: converted into OUT/model)")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="Python of torch-sim's side (sevennet-0: an environment with sevenn and "
                             "torch-sim-atomistic; default this one)")
    parser.add_argument("--sides", default=",".join(SIDES + (CHECK,)))
    parser.add_argument("--check", type=int, nargs="+", default=[8, 10],
                        help="crystals (positions in the list) of the free-energy check (default Si and NaCl)")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--share", default=None, type=lambda text: tuple(map(int, text.split("/"))),
                        help=argparse.SUPPRESS)  # P/N: this process's share of the list
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)  # the side's JSON name, if not the side's
    parser.add_argument("--count", type=int, default=None, help="first COUNT crystals of the list (default all 142)")
    parser.add_argument("--loop-count", type=int, default=None,
                        help="the one-by-one loop's crystals: the first N of the list (default all)")
    parser.add_argument("--passes", type=int, default=2, help="passes over the list per side: cold, warm (default 2)")
    parser.add_argument("--channels", type=int, default=None, help="mace-random: model width (default 128)")
    parser.add_argument("--min-length", type=float, default=None,
                        help="smallest supercell width, Å (default sevennet-0: 10 = 2·r_max; mace-random: 8)")
    parser.add_argument("--mesh", type=int, nargs=3, default=[20, 20, 20])
    parser.add_argument("--batch-atoms", type=int, default=256, help="atoms per batched call, both codes (default 256)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results (default benchmarks/results/phonons_many/sevennet0, or phonons_many)")
    parser.add_argument("--rerun", action="store_true", help="run sides that have results already")
    args = parser.parse_args()
    if args.side:
        return side_main(args)
    args.min_length = args.min_length or MODELS[args.model]["min_length"]
    args.out = args.out or Path(__file__).parent / "results" / MODELS[args.model]["out"]
    structures, plan = prepare(args)
    for side in args.sides.split(","):
        if (args.out / f"{side}.json").exists() and not args.rerun:
            print(f"{side}: kept from an earlier run ({args.out / f'{side}.json'})")
            continue
        base = TWO_CORES[side]["side"] if side in TWO_CORES else side
        python = args.torch_python if base == "torch-sim" else sys.executable
        command = [python, __file__, "--out", str(args.out), "--passes", str(args.passes)]
        if args.loop_count:
            command += ["--loop-count", str(args.loop_count)]
        if side == CHECK:
            command += ["--check", *map(str, args.check)]
        if base == "torch-sim" and args.model == "sevennet-0":
            command += ["--checkpoint", checkpoint_path(args)]
        start = time.perf_counter()
        if side in TWO_CORES:
            run_two_cores(args, side, command)
        else:
            subprocess.run(command + ["--side", side], check=True)
        print(f"{side}: {time.perf_counter() - start:.1f} s (process)", flush=True)
    report(args, structures, plan)


RATIOS = (("batched", "loop"), ("batched", "torch-sim"), ("batched-2p", "torch-sim-2t"), ("batched-2p", "batched"),
          ("torch-sim-2t", "torch-sim"))
"""The ratios of materials per hour reported, (numerator, denominator): ours against theirs on one
core and on two, and what the second core gives each code."""


def report(args, structures, plan) -> None:
    """Materials per hour of each side, by wall time and by the process's CPU time (less sensitive
    to a shared machine's load), cold and warm; the ratios to the batched side; where the batched
    and torch-sim sides spend their time; their free energies at 300 K against the batched side's."""
    results = {side: json.loads((args.out / f"{side}.json").read_text())
               for side in (*SIDES, *TWO_CORES) if (args.out / f"{side}.json").exists()}
    n = len(structures)
    model = (f"SevenNet-0 ({plan['dtype']})" if args.model == "sevennet-0" else
             f"MACE-MP-0 small architecture, random weights, channels {args.channels or 'default'}, {plan['dtype']}")
    lines = [f"# phonons of {n} crystals, {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores (shared), "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, XLA_FLAGS={os.environ.get('XLA_FLAGS')}",
             f"# model: {model}; supercells >= {plan['min_length']} A, mesh {plan['mesh']}, "
             f"batches <= {plan['batch_atoms']} atoms"]
    for side, result in results.items():
        if "loadavg" in result:
            lines.append(f"# {side}: load average {result['loadavg'][0]:.1f} at the start, {result['loadavg'][1]:.1f} at the end"
                         + (f"; {json.dumps(result['versions'])}" if result.get("versions") else ""))
    if "batched" in results:
        lines.append(f"# batched plan: {results['batched'].get('log', [results['batched'].get('plan')])[0]}")
    for process, plan_line in enumerate(results.get("batched-2p", {}).get("log", [])):
        lines.append(f"# batched-2p process {process} plan: {plan_line}")
    lines += stage_lines(results)
    lines.append(f"{'side':<12} {'pass':<5} {'crystals':>8} {'wall s':>8} {'CPU s':>8} {'mat/h wall':>11} {'mat/h CPU':>10} "
                 f"{'max |dF| kJ/mol':>16}")
    reference = (results.get("batched") or results.get("batched-2p") or {}).get("rows", [])  # ΔF against ours
    record = {"date": str(datetime.date.today()), "model": args.model, "dtype": plan["dtype"], "crystals": n,
              "channels": args.channels, "min_length": plan["min_length"], "mesh": plan["mesh"],
              "batch_atoms": plan["batch_atoms"], "sides": results, "free_energy_max_abs_diff_kJ_per_mol": {},
              "materials_per_hour": {}, "ratios": {}}
    rate = {}
    for side, result in results.items():
        count = result.get("crystals", n)
        differences = [abs(r["free_energy_kJ_per_mol"] - ref["free_energy_kJ_per_mol"])
                       for r, ref in zip(result["rows"], reference) if not r.get("error") and not ref["error"]]
        record["free_energy_max_abs_diff_kJ_per_mol"][side] = max(differences, default=None)
        for run in ("cold", "warm"):
            if result.get(f"{run}_s") is None:
                continue
            wall, cpu = result[f"{run}_s"], result[f"{run}_cpu_s"]
            rate[side, run] = dict(wall=count / wall * 3600, CPU=count / cpu * 3600)
            lines.append(f"{side:<12} {run:<5} {count:8d} {wall:8.1f} {cpu:8.1f} {rate[side, run]['wall']:11.0f} "
                         f"{rate[side, run]['CPU']:10.0f} {max(differences, default=0.0):16.2e}")
    record["materials_per_hour"] = {f"{side} {run}": value for (side, run), value in rate.items()}
    for ours, side in RATIOS:
        if (ours, "cold") not in rate or (side, "cold") not in rate:
            continue
        ratios = {}
        for run in ("cold", "warm"):
            theirs = run if (side, run) in rate else "cold"
            if (ours, run) in rate:
                for clock in ("wall", "CPU"):
                    ratios[f"{run}_{clock}"] = rate[ours, run][clock] / rate[side, theirs][clock]
        record["ratios"][side if ours == "batched" else f"{ours} vs {side}"] = ratios
        subset = (f" (on its first {results[side]['crystals']} crystals only: rates of different lists)"
                  if results[side].get("crystals", n) != n else "")
        lines.append(f"{ours} vs {side}{subset}, materials per hour: cold {ratios['cold_CPU']:.2f}x CPU, "
                     f"{ratios['cold_wall']:.2f}x wall (compilation included)"
                     + (f"; warm {ratios['warm_CPU']:.2f}x CPU, {ratios['warm_wall']:.2f}x wall" if "warm_CPU" in ratios else ""))
    if (args.out / f"{CHECK}.json").exists():
        record[CHECK] = json.loads((args.out / f"{CHECK}.json").read_text())
        lines += check_lines(record[CHECK], results)
    text = "\n".join(lines)
    print(text)
    (args.out / "table.txt").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(record, indent=1) + "\n")


def check_lines(check: dict, results: dict) -> list[str]:
    """F at 300 K (kJ/mol) of the check's crystals: our model exact in float64, by finite
    displacements in float64 and float32, and the timed sides' values."""
    lines = ["# free energy at 300 K, kJ/mol: ours exact float64 | ours finite displacements float64, float32 | "
             "batched (exact, run's dtype) | torch-sim (finite displacements)"]
    for row in check["rows"]:
        sides = [results[side]["rows"][row["index"]]["free_energy_kJ_per_mol"] if side in results else float("nan")
                 for side in ("batched", "torch-sim")]
        lines.append(f"# {row['index']:3d} {row['formula']:<8} {row['exact_float64']:.6f} | "
                     f"{row['finite_displacements_float64']:.6f}, {row['finite_displacements_float32']:.6f} | "
                     f"{sides[0]:.6f} | {sides[1]:.6f}")
    return lines


def stage_lines(results: dict) -> list[str]:
    """Where the batched and torch-sim sides' wall time went, per pass."""
    lines = []
    for side, result in results.items():
        for name, run in zip(("cold", "warm"), result.get("passes", [])):
            stages = run["stages"]
            if side == "batched":
                rest = run["wall_s"] - stages["prepare"] - stages["hessian"]
                lines.append(f"# batched {name} stages (wall s): symmetry and displacements {stages['prepare']:.1f}, "
                             f"HVP batches {stages['hessian']:.1f}, post-processing {stages['finish']:.1f} in threads "
                             f"(overlapping), the rest {rest:.1f} (neighbour lists of the plan, waiting for the last "
                             f"post-processing), of {run['wall_s']:.1f}")
                if name == "warm":
                    extra = result["passes"][0]["stages"]["hessian"] - stages["hessian"]
                    lines.append(f"# batched compilation (cold minus warm HVP batches): {extra:.1f} s")
            elif side == "torch-sim":
                lines.append(f"# torch-sim {name} stages (wall s): symmetry and displacements {stages['displacements']:.1f}, "
                             f"forces of {stages['force_calls']} displaced supercells {stages['forces']:.1f}, "
                             f"post-processing {stages['post_processing']:.1f}, of {run['wall_s']:.1f}")
    return lines


if __name__ == "__main__":
    main()
