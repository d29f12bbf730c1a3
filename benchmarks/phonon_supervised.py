"""Does the Hessian term help?  LoRA fine-tuning of SevenNet-0 on diamond C (GPAW PBE data in
``benchmarks/data/C``) with energies and forces only, against the same with the Hessian term of
the DFT phonons added.

    python benchmarks/phonon_supervised.py                   # C, seed 0, 40 epochs
    python benchmarks/phonon_supervised.py --epochs 20 --seed 1

Both runs are today's protocol of ``benchmarks/phonon_finetune.py`` (LoRA rank 4, 10 training
structures with DFT energies and forces, E0s refitted, AdamW 2e-3 with reduce-on-plateau, EMA
0.99, early stopping on the 4 validation structures' loss, float32); the second adds the DFT
phonopy reference (2×2×2 primitive supercell, 16 atoms, one displacement) through the Hessian term
with the library's defaults (weight 1, Huber δ 0.1 eV/Å², K = 4 random directions a step).
Phonons of each model are computed on the reference's supercell and compared with DFT along the
band path (MAE and RMS, THz) and on a mesh (MAE), with the force MAE on the validation
structures.

The second run trains on the very force constants it is judged on: this measures whether the
Hessian term can pull SevenNet-0's phonons onto DFT's under LoRA next to the energy/force data,
not transfer to other supercells, volumes or materials (the issue's full experiment).

Writes ``benchmarks/results/phonon_supervised/results.json`` and ``table.md``; finished runs
(``runs/<name>/``, not committed) are reused and interrupted ones resumed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import ase.io

from phonon_finetune import DATA, force_mae, pretrained_model

OUTPUT = Path(__file__).parent / "results" / "phonon_supervised"


def phonon_errors(model_dir: Path, reference, valid) -> dict:
    """Band-path MAE and RMS, mesh MAE (THz) of the model's phonons against ``reference``, on its
    supercell, and the force MAE (meV/Å) on ``valid``."""
    from equitrain_jax.phonons.compare import compare_phonons, phonopy_like_reference
    from equitrain_jax.potential import Potential

    potential = Potential(model_dir, dtype="float64")
    comparison = compare_phonons(phonopy_like_reference(potential, reference), reference)
    return {
        "band_mae_THz": comparison["band_path"]["mae_THz"],
        "band_rmse_THz": comparison["band_path"]["rmse_THz"],
        "mesh_mae_THz": comparison["mesh"]["mae_THz"],
        "valid_force_mae_meV_per_A": force_mae(potential, valid),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--material", default="C")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args()

    from equitrain_jax.phonons.compare import load_reference
    from equitrain_jax.train import TrainConfig
    from equitrain_jax.train.config import HessianLossConfig
    from equitrain_jax.train.finetune import finetune

    model_dir = pretrained_model()
    data = DATA / args.material
    reference = load_reference(data / "phonopy_params.yaml")
    train, valid = ase.io.read(data / "train.extxyz", ":"), ase.io.read(data / "valid.extxyz", ":")
    rows = [{"run": "pretrained", **phonon_errors(model_dir, reference, valid)}]
    print(f"pretrained: band RMS {rows[0]['band_rmse_THz']:.3f} THz", flush=True)
    for name, phonons in (("LoRA, E/F", []), ("LoRA, E/F + Hessian", [data / "phonopy_params.yaml"])):
        run = args.output / "runs" / f"{'hessian' if phonons else 'ef'}_seed{args.seed}"
        record = run / "result.json"
        if record.is_file():
            rows.append(json.loads(record.read_text()))
            continue
        start = time.perf_counter()
        result = finetune(
            model_dir, train, valid, run, strategy="lora", e0s="refit", batch_size=4, dtype="float32",
            train_config=TrainConfig(epochs=args.epochs, learning_rate=args.lr, schedule="plateau", ema_decay=0.99,
                                     early_stopping_patience=15, seed=args.seed),
            phonons=phonons, hessian_config=HessianLossConfig(), progress=False,
            resume=(run / "checkpoints" / "last").is_dir(),  # an interrupted run continues
        )
        seconds = time.perf_counter() - start
        row = {"run": name, "train_seconds": seconds, "epochs_run": len(result.history) - 1,
               **phonon_errors(run / "model", reference, valid)}
        record.write_text(json.dumps(row, indent=1) + "\n")
        rows.append(row)
        print(f"{name}: band RMS {row['band_rmse_THz']:.3f} THz, valid F MAE {row['valid_force_mae_meV_per_A']:.1f} "
              f"meV/Å ({seconds:.0f} s)", flush=True)

    lines = ["| run | band RMS (THz) | band MAE (THz) | mesh MAE (THz) | valid F MAE (meV/Å) | training (s) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        seconds = f"{row['train_seconds']:.0f}" if "train_seconds" in row else "–"
        lines.append(f"| {row['run']} | {row['band_rmse_THz']:.3f} | {row['band_mae_THz']:.3f} | "
                     f"{row['mesh_mae_THz']:.3f} | {row['valid_force_mae_meV_per_A']:.1f} | {seconds} |")
    print("\n".join(lines))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "table.md").write_text("\n".join(lines) + "\n")
    (args.output / "results.json").write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "machine": platform.machine(), "material": args.material,
        "epochs": args.epochs, "learning_rate": args.lr, "seed": args.seed, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
