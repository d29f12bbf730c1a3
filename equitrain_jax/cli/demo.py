"""``equitrain-jax demo``: build, convert and check a MACE-MP-0 model against mace-torch."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DEMO_DIR = Path("outputs/demo")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="build, convert and check a MACE-MP-0 medium model against mace-torch")
    p.add_argument("--architecture", default="mp0a-medium")
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("-o", "--output", default=str(DEMO_DIR))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
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
