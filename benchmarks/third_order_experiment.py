"""Third-order supervision (issue 20): SevenNet-0 fine-tuned with LoRA on phono3py's Si-PBE example
(benchmarks/data/Si-PBE-phono3py: VASP PBE, 64-atom 2×2×2 conventional supercell, 111 displaced
supercells), κ(300 K) from each model's exact fc3 and fc2 against DFT's 119.5 W/(m·K).

Conditions (the same data set, LoRA rank 4, AdamW, float32):

  base                 SevenNet-0 as converted
  forces               the displaced supercells as force-only structures (100 of them; 11 held out)
  hessian              the Hessian term on the reference's fc2 (random directions)
  third-order          the third-order term on the reference's fc3 (random direction pairs)
  hessian+third-order  both terms

Every model is judged on the same things: κ_xx(300 K) (RTA, 11×11×11 mesh, phono3py) from its exact
fc3 and fc2 (equitrain_jax.phonons.conductivity.produce_exact_fc, phono3py's displacement set, no
pair cutoff), the mean Grüneisen parameter γ̄(300 K) from the same fc2 and fc3, the phonon-frequency
MAE of its fc2 against the DFT fc2 (8×8×8 Γ-centred mesh; in-sample for the Hessian conditions) and
the force MAE on the 11 held-out displaced supercells (in-sample for none).

Results are merged into benchmarks/results/third_order/results.json after each model, so a run
that stops resumes where it stopped (rerun the same command).

    python benchmarks/third_order_experiment.py --model SEVENNET0_DIR --seeds 0 1 2 --work WORKDIR
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
EXAMPLE = HERE / "data" / "Si-PBE-phono3py" / "phono3py_disp.yaml"
RESULTS = HERE / "results" / "third_order" / "results.json"
MESH = (11, 11, 11)
DFT_KAPPA = 119.5  # W/(m·K), phono3py's README for this example (RTA, 11×11×11, 300 K)
CONDITIONS = {"forces": dict(forces=True), "hessian": dict(fc2=True), "third-order": dict(fc3=True),
              "hessian+third-order": dict(fc2=True, fc3=True)}


def frequency_mae(model_ph3, reference_ph3, mesh=(8, 8, 8)) -> float:
    """Mean |Δν| (THz) of the fc2 phonons of two phono3py objects of the same crystal on a Γ-centred mesh."""
    from phonopy import Phonopy

    from equitrain_jax.phonons.compare import mesh_qpoints

    frequencies = []
    for ph3 in (model_ph3, reference_ph3):
        phonon = Phonopy(ph3.unitcell, ph3.supercell_matrix, primitive_matrix=ph3.primitive_matrix)
        phonon.force_constants = ph3.fc2
        phonon.run_qpoints(mesh_qpoints(mesh))
        frequencies.append(phonon.get_qpoints_dict()["frequencies"])
    return float(np.mean(np.abs(frequencies[0] - frequencies[1])))


def judge(model_dir: Path, reference, valid) -> dict:
    """κ_xx(300 K), γ̄(300 K), fc2 frequency MAE and held-out force MAE of a model directory."""
    from equitrain_jax import Potential
    from equitrain_jax.phonons.anharmonicity import mean_gruneisen, model_phono3py
    from equitrain_jax.phonons.conductivity import kappa_summary, run_thermal_conductivity

    potential = Potential(model_dir, dtype="float64")
    start = time.perf_counter()
    ph3 = model_phono3py(potential, reference)
    fc_seconds = time.perf_counter() - start
    run_thermal_conductivity(ph3, MESH, temperatures=[300.0])
    kappa = float(kappa_summary(ph3)["kappa_W_per_mK"][0][0])
    predicted = potential.evaluate(valid)
    force_mae = np.mean([np.mean(np.abs(p["forces"] - a.arrays["forces"])) for p, a in zip(predicted, valid)])
    return {"kappa_xx_W_per_mK": kappa, "mean_gruneisen_300K": mean_gruneisen(ph3),
            "fc2_frequency_mae_thz": frequency_mae(ph3, reference), "valid_force_mae_meV_per_A": 1e3 * float(force_mae),
            "exact_fc_seconds": fc_seconds}


def train(model: Path, condition: str, seed: int, output: Path, references, train_set, valid, steps: int) -> float:
    """Fine-tune one condition for ``steps`` optimiser steps; returns the seconds it took."""
    from equitrain_jax.train import LossConfig, TrainConfig
    from equitrain_jax.train.config import HessianLossConfig, ThirdOrderLossConfig
    from equitrain_jax.train.finetune import finetune
    from equitrain_jax.train.third_order_data import phonon_reference_from_phono3py

    uses = CONDITIONS[condition]
    structures = train_set if uses.get("forces") else []
    batch_size = 4
    epochs = max(1, round(steps * batch_size / len(train_set))) if structures else steps
    start = time.perf_counter()
    finetune(model, structures, valid, output, strategy="lora", rank=4, batch_size=batch_size, phonon_batch_size=1,
             train_config=TrainConfig(epochs=epochs, learning_rate=2e-3, seed=seed),
             loss_config=LossConfig(), phonons=[phonon_reference_from_phono3py(*references[0])] if uses.get("fc2") else [],
             hessian_config=HessianLossConfig(directions=2), phono3py=references if uses.get("fc3") else [],
             third_order_config=ThirdOrderLossConfig(directions=2), check_anharmonicity=False, progress=True,
             overwrite=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="converted SevenNet-0 directory")
    parser.add_argument("--work", required=True, type=Path, help="where the fine-tuned models go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--steps", type=int, default=24, help="optimiser steps per fine-tune")
    args = parser.parse_args()

    from equitrain_jax.train.finetune import third_order_references
    from equitrain_jax.train.third_order_data import displaced_supercells

    references = third_order_references([EXAMPLE])
    reference = references[0][1]
    structures = displaced_supercells(references[0][0])
    valid = structures[::10]
    train_set = [atoms for k, atoms in enumerate(structures) if k % 10]
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.setdefault("settings", {"steps": args.steps, "lora_rank": 4, "learning_rate": 2e-3, "mesh": list(MESH),
                                    "dft_kappa_xx_W_per_mK": DFT_KAPPA, "n_train": len(train_set),
                                    "n_valid": len(valid)})

    def save() -> None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")

    if "base" not in results:
        results["base"] = {**judge(args.model, reference, valid), "date": f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC"}
        save()
        print("base", results["base"], flush=True)
    for seed in args.seeds:
        for condition in args.conditions:
            key = f"{condition}/seed{seed}"
            if key in results:
                continue
            output = args.work / condition / f"seed{seed}"
            seconds = train(args.model, condition, seed, output, references, train_set, valid, args.steps)
            results[key] = {**judge(output / "model", reference, valid), "train_seconds": seconds,
                            "date": f"{datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC"}
            save()
            print(key, results[key], flush=True)


if __name__ == "__main__":
    main()
