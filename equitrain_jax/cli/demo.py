"""``equitrain-jax demo``: the whole workflow offline on a real foundation model.

SevenNet-0 (shipped in the ``sevenn`` wheel) is converted, its phonons are computed from the
analytic Hessian and compared with a DFT (GPAW PBE) finite-displacement reference, it is
fine-tuned with LoRA on ten DFT-labelled structures, and the phonons are compared again.
``--mace`` instead builds a MACE-MP-0 architecture in mace-torch, converts it and checks the
numbers against mace-torch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from equitrain_jax.cli import checks

DEMO_DIR = Path("outputs/demo")
EXAMPLES = Path(__file__).parents[1] / "examples"


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="convert SevenNet-0, phonons vs DFT, LoRA fine-tune on 10 DFT structures, phonons again")
    p.add_argument("--material", default="Al", help="example DFT data set (Al, BaTiO3; see equitrain_jax/examples)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--mace", action="store_true", help="instead: mace-torch MACE-MP-0 parity check")
    p.add_argument("--architecture", default="mp0a-medium", help="with --mace: the MACE-MP architecture")
    p.add_argument("--channels", type=int, default=128, help="with --mace: channels")
    p.add_argument("-o", "--output", default=str(DEMO_DIR), help="output directory (new or empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into OUTPUT even if it holds an earlier demo")
    p.set_defaults(func=run, check=check, interrupted=checks.incomplete)


def check(args: argparse.Namespace) -> None:
    if not args.mace and not (EXAMPLES / args.material / "phonopy_params.yaml").is_file():
        available = sorted(p.name for p in EXAMPLES.iterdir() if (p / "phonopy_params.yaml").is_file())
        raise ValueError(f"--material: no example data for {args.material!r}; available: {available}")
    checks.at_least(args.epochs, 1, "--epochs")
    checks.at_least(args.channels, 1, "--channels")
    if args.mace:
        from equitrain_jax.convert.architectures import ARCHITECTURES  # loads JAX, not torch

        if args.architecture not in ARCHITECTURES:
            raise ValueError(f"--architecture {args.architecture!r} is not one of {sorted(ARCHITECTURES)}")
    checks.check_output_directory(args.output, "pass --overwrite to write into it", args.overwrite)


def run(args: argparse.Namespace) -> None:
    if args.mace:
        mace_parity(args)
    else:
        finetune_phonons(args)


def finetune_phonons(args: argparse.Namespace) -> None:
    import ase.io
    import numpy as np

    from equitrain_jax.convert.sevennet import convert_pretrained
    from equitrain_jax.phonons.compare import compare_phonons, load_reference, phonopy_like_reference
    from equitrain_jax.phonons import phonopy_to_ase
    from equitrain_jax.phonons.plots import plot_band_structure_and_dos
    from equitrain_jax.potential import Potential
    from equitrain_jax.train.config import FinetuneConfig, TrainConfig
    from equitrain_jax.train.finetune import finetune

    data = EXAMPLES / args.material
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    print("1. converting SevenNet-0 from the installed sevenn package …", flush=True)
    base = out / "sevennet-0"
    convert_pretrained("sevennet-0", base)
    reference = load_reference(data / "phonopy_params.yaml")
    train = ase.io.read(data / "train.extxyz", ":")
    valid = ase.io.read(data / "valid.extxyz", ":")
    unitcell = phonopy_to_ase(reference.unitcell)
    n_super = len(reference.supercell)

    def phonons(model_dir):
        potential = Potential(model_dir, dtype="float64")
        phonon = phonopy_like_reference(potential, reference)
        forces = np.concatenate([o["forces"] for o in potential.evaluate(valid)])
        force_mae = 1e3 * np.abs(forces - np.concatenate([a.get_forces() for a in valid])).mean()
        return phonon, compare_phonons(phonon, reference), force_mae

    print(f"2. phonons of {unitcell.get_chemical_formula()} from the analytic Hessian "
          f"({n_super}-atom supercell of the DFT reference) …", flush=True)
    pretrained, before, force_before = phonons(base)
    print(f"3. LoRA fine-tuning on {len(train)} DFT structures ({args.epochs} epochs, E0s refitted) …", flush=True)
    finetune(base, train, valid, out / "lora", FinetuneConfig(strategy="lora", rank=4, e0s="refit", batch_size=2),
             train_config=TrainConfig(epochs=args.epochs, learning_rate=2e-3, schedule="plateau", ema_decay=0.99),
             overwrite=args.overwrite)
    print("4. phonons of the fine-tuned model …", flush=True)
    tuned, after, force_after = phonons(out / "lora" / "model")
    plot = plot_band_structure_and_dos({"DFT (PBE)": reference, "SevenNet-0": pretrained, "SevenNet-0 + LoRA": tuned},
                                       out / "bands.png", title=f"{args.material}: DFT vs pretrained vs fine-tuned")

    def line(name, comparison, force_mae):
        thermal = comparison["thermal"]
        return (f"{name:18s} {comparison['band_path']['mae_THz']:10.3f} {comparison['mesh']['mae_THz']:10.3f} "
                f"{comparison['mesh']['max_frequency_error_THz']:+12.3f} "
                f"{thermal['free_energy_kJ_per_mol']['error']:+10.3f} {thermal['heat_capacity_J_per_K_mol']['error']:+10.3f} "
                f"{force_mae:12.1f}")

    print(f"\n{'vs DFT':18s} {'band MAE':>10s} {'mesh MAE':>10s} {'Δf_max':>12s} {'ΔF(300K)':>10s} {'ΔCv(300K)':>10s} {'valid F MAE':>12s}")
    print(f"{'':18s} {'THz':>10s} {'THz':>10s} {'THz':>12s} {'kJ/mol':>10s} {'J/K/mol':>10s} {'meV/Å':>12s}")
    print(line("SevenNet-0", before, force_before))
    print(line("SevenNet-0 + LoRA", after, force_after))
    summary = {"material": args.material, "pretrained": before, "finetuned": after,
               "valid_force_mae_meV_per_A": {"pretrained": force_before, "finetuned": force_after},
               "wall_seconds": time.perf_counter() - started}
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {plot}, {out / 'demo.json'} and the fine-tuned model {out / 'lora' / 'model'} "
          f"({summary['wall_seconds'] / 60:.1f} min)")


def mace_parity(args: argparse.Namespace) -> None:
    """Build a MACE-MP-0 architecture in mace-torch, convert it, and compare the numbers."""
    import numpy as np
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
