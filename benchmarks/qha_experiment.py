"""Does fine-tuning on a few DFT structures fix a foundation model's thermal expansion?
Quasi-harmonic SevenNet-0, pretrained and fine-tuned, against DFT (GPAW PBE) QHA.

    python benchmarks/qha_experiment.py                          # every material with DFT volumes
    python benchmarks/qha_experiment.py --materials Si --data DIR   # DIR/Si/volumes.json etc.

Per material with a DFT volume series (``<data>/<material>/volumes.json``: phonopy files at 7
volumes, V/V0 = 0.955 … 1.045, 2×2×2 primitive supercells, static energies from the E(V) fit):

- DFT: phonopy's QHA of the DFT force constants and energies (`phonons.volumes.load_reference_volumes`);
- each model (pretrained SevenNet-0; fine-tuned with LoRA and fully, on the material's 10 training
  structures with the energy/force protocol of ``benchmarks/phonon_finetune.py``: 40 epochs, lr
  2e-3, plateau schedule, EMA 0.99, early stopping after 15 epochs, E0s refitted, float32; and
  ``lora+hessian``: LoRA with the DFT phonons at V0 added through the Hessian term, 20 epochs): the
  DFT unit cell relaxed by the model (cell and positions, symmetry kept), scaled to the same
  volume factors around the model's own volume (or --strain-range/--volumes), the same supercell;
  force constants of all volumes
  in one batch of Hessian-vector products; phonopy's QHA with the same settings (0–1000 K, mesh
  100 Å, Vinet).

Compared: α(300 K), B(300 K), V(300 K)/V0 − 1 (V0 each one's static E(V) minimum), static V0 and
B0, the negative-thermal-expansion minimum (temperature and value) where there is one, and the mode
Grüneisen MAE on the band path against DFT (modes ≥ 0.5 THz).

Writes into ``--output`` (default ``benchmarks/results/qha``): ``results.json``, ``table.md`` (one
table per material), ``qha_<material>.png`` (α, V/V0 − 1, C_P, B against T) and
``gruneisen_<material>.png``.  Fine-tuned models are kept in ``benchmarks/results/qha/runs/`` (not
in git) and reused by every later invocation.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from phonon_finetune import (  # benchmarks/phonon_finetune.py, beside this script
    PATIENCE,
    pretrained_model,
)

DATA = Path(__file__).parent / "data"
OUTPUT = Path(__file__).parent / "results" / "qha"
STRATEGIES = ("lora", "full", "lora+hessian")
EPOCHS, LEARNING_RATE = 40, 2e-3  # benchmarks/phonon_finetune.py's defaults
# With the Hessian term (K = 4 directions) a step costs about twice an energy/force step on these
# 16-atom references (benchmarks/hessian_step.py, docs/phonon-finetuning.md): half the epochs is
# about the same compute.
HESSIAN_EPOCHS = 20
T_MAX = 1000.0


def finetuned(model_dir: Path, material: str, strategy: str, data: Path) -> Path:
    """The model fine-tuned on the material's training structures (cached in
    ``benchmarks/results/qha/runs``).  ``lora+hessian``: LoRA on the same structures plus the DFT
    phonons at V0 (``<data>/<material>/phonopy_params.yaml``) through the Hessian term (library
    defaults), for ``HESSIAN_EPOCHS``; the QHA then judges it at volumes it did not see."""
    import ase.io

    from equitrain_jax.train import TrainConfig
    from equitrain_jax.train.finetune import finetune

    run = OUTPUT / "runs" / material / strategy  # one set of fine-tuned models for every --output
    hessian = strategy.endswith("+hessian")
    if not (run / "model" / "config.json").is_file():
        train = ase.io.read(data / material / "train.extxyz", ":")
        valid = ase.io.read(data / material / "valid.extxyz", ":")
        start = time.perf_counter()
        finetune(model_dir, train, valid, run, strategy=strategy.removesuffix("+hessian"), e0s="refit",
                 phonons=[data / material / "phonopy_params.yaml"] if hessian else (),
                 train_config=TrainConfig(epochs=HESSIAN_EPOCHS if hessian else EPOCHS,
                                          learning_rate=LEARNING_RATE, schedule="plateau",
                                          ema_decay=0.99, early_stopping_patience=PATIENCE, seed=0),
                 batch_size=min(4, len(train)), dtype="float32", progress=False, resume=(run / "checkpoints" / "last").exists())
        (run / "train_seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
        print(f"{material}: fine-tuned ({strategy}, {len(train)} structures) in {time.perf_counter() - start:.0f} s",
              flush=True)
    return run / "model"


def model_qha(model_dir: Path, reference, factors: np.ndarray):
    """A model's QHA on the reference's cell (relaxed by the model), supercell and volume factors;
    with the reference's NAC parameters (Z*, ε∞; MgO) at every volume when it has them."""
    from equitrain_jax.phonons.bridge import phonopy_to_ase
    from equitrain_jax.phonons.qha import analyse
    from equitrain_jax.phonons.volumes import relax_positions, volume_series
    from equitrain_jax.potential import Potential

    potential = Potential(model_dir, dtype="float64")
    centre_phonon = reference.phonons[len(reference.phonons) // 2]
    start = time.perf_counter()
    centre, converged = relax_positions(phonopy_to_ase(centre_phonon.unitcell), potential, fmax=1e-4, steps=500,
                                        cell=True)
    if not converged:
        raise RuntimeError(f"{model_dir}: the relaxation of the reference cell did not converge")
    strain = (factors[-1] - factors[0]) / 2
    if not np.allclose(factors, np.linspace(1 - strain, 1 + strain, len(factors))):
        raise ValueError(f"volume factors {factors.tolist()} are not evenly spaced around 1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2×2×2 primitive supercells are narrower than 2·r_max
        series = volume_series(potential, centre, centre_phonon.supercell_matrix, n_volumes=len(factors),
                               strain_range=strain, primitive_matrix=centre_phonon.primitive_matrix)
    if centre_phonon.nac_params is not None:  # the reference's Z* and ε∞, the same at every volume
        for phonon in series.phonons:
            phonon.nac_params = centre_phonon.nac_params
    qha = analyse(series.phonons, series.energies, t_max=T_MAX)
    qha.summary["wall_s"] = time.perf_counter() - start
    qha.summary["relaxed_volume_angstrom3_per_cell"] = centre.get_volume()
    return qha


def write_table(results: dict, path: Path) -> None:
    """One Markdown table per material: a column per model, DFT first."""
    from equitrain_jax.phonons.qha import COMPARISON_ROWS

    def grid(factors):
        return f"{factors[0]:.3f} … {factors[-1]:.3f} ({len(factors)})"

    text = ""
    for material, entry in results.items():
        labels = list(entry["summaries"])
        text += f"**{material}** (QHA per primitive cell; model − DFT in brackets)\n\n"
        text += "| quantity | " + " | ".join(labels) + " |\n|" + "---|" * (len(labels) + 1) + "\n"
        for label, keys, scale, fmt in COMPARISON_ROWS:
            cells = []
            for name in labels:
                value = entry["summaries"][name]
                for key in keys:
                    value = value.get(key) if isinstance(value, dict) else None
                if value is None:
                    cells.append("none" if keys[0] == "nte_minimum" else "–")
                    continue
                cell = fmt.format(value * scale)
                dft = entry["summaries"]["DFT (PBE)"]
                for key in keys:
                    dft = dft.get(key) if isinstance(dft, dict) else None
                if name != "DFT (PBE)" and dft is not None:
                    cell += f" ({fmt.format(value * scale - dft * scale)})"
                cells.append(cell)
            text += f"| {label} | " + " | ".join(cells) + " |\n"
        text += "| F_ph(V) at 300 K: cubic-fit residual (meV/atom; > 0.05 = force constants jump) | " + " | ".join(
            "{:.3f}".format(entry["summaries"][name]["phonon_free_energy_smoothness"]["cubic_fit_max_residual_meV_per_atom"])
            for name in labels) + " |\n"
        text += "| models' V/V0 grid | " + " | ".join(
            [grid(entry["dft_volume_factors"])] + [grid(entry["model_volume_factors"])] * (len(labels) - 1)) + " |\n"
        gruneisen = entry["gruneisen_vs_dft"]
        text += ("| mode γ MAE vs DFT (band path, f ≥ 0.5 THz) | – | "
                 + " | ".join(f"{gruneisen[name]['mae']:.3f}" for name in labels[1:]) + " |\n")
        text += ("| mean mode γ (same modes) | " + f"{gruneisen[labels[1]]['reference_mean']:.3f} | "
                 + " | ".join(f"{gruneisen[name]['model_mean']:.3f}" for name in labels[1:]) + " |\n\n")
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="DFT data directory (default benchmarks/data)")
    parser.add_argument("--materials", nargs="+", help="default: every material with <data>/<material>/volumes.json")
    parser.add_argument("--strategies", nargs="*", choices=STRATEGIES, default=list(STRATEGIES),
                        help="fine-tuning strategies (none: the pretrained model only)")
    parser.add_argument("--strain-range", type=float, default=None,
                        help="the models' volume grid: V/V0 from 1 − s to 1 + s (default: the DFT's volume factors)")
    parser.add_argument("--volumes", type=int, default=None, help="with --strain-range: number of volumes")
    parser.add_argument("-o", "--output", default=str(OUTPUT))
    args = parser.parse_args()
    data, output = Path(args.data), Path(args.output)
    available = sorted(d.name for d in data.iterdir() if (d / "volumes.json").is_file())
    materials = [m for m in (args.materials or available)]
    missing = sorted(set(materials) - set(available))
    if missing:
        raise SystemExit(f"no DFT volume series (volumes.json) in {data} for {missing}; available: {available}")
    if not materials:
        raise SystemExit(f"no material in {data} has a DFT volume series (volumes.json) yet")

    from equitrain_jax.cli import enable_compilation_cache
    from equitrain_jax.phonons.gruneisen import gruneisen_error, gruneisen_on_path
    from equitrain_jax.phonons.qha import analyse
    from equitrain_jax.phonons.qha_config import volume_factors
    from equitrain_jax.phonons.qha_plots import plot_mode_gruneisen, plot_qha
    from equitrain_jax.phonons.volumes import load_reference_volumes

    enable_compilation_cache()  # the fine-tuned models share the pretrained one's programs
    output.mkdir(parents=True, exist_ok=True)
    results_path = output / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    base = pretrained_model()
    for material in materials:
        started = time.perf_counter()
        phonons, energies, record = load_reference_volumes(data / material)
        dft = analyse(phonons, energies, t_max=T_MAX)
        factors = np.sort(np.asarray(record["volume_factors"], dtype=float))
        if args.strain_range is not None:
            factors = volume_factors(args.volumes or len(factors), args.strain_range)
        models = {"pretrained": base}
        for strategy in args.strategies:
            models[f"{strategy} (N=10)"] = finetuned(base, material, strategy, data)
        qhas = {}
        for label, model_dir in models.items():
            qhas[label] = model_qha(model_dir, dft, factors)
            at = qhas[label].summary["at_300K"]
            print(f"{material} {label}: α(300 K) {1e6 * at['linear_thermal_expansion_per_K']:.2f}e-6/K, "
                  f"B(300 K) {at['B_GPa']:.1f} GPa ({qhas[label].summary['wall_s']:.0f} s)", flush=True)
        bands, curves = gruneisen_on_path(dft, qhas, label="DFT (PBE)")
        entry = {"model_volume_factors": factors.tolist(), "dft_volume_factors": sorted(record["volume_factors"]),
                 "summaries": {"DFT (PBE)": dft.summary, **{k: q.summary for k, q in qhas.items()}},
                 "gruneisen_vs_dft": {k: gruneisen_error(curves[k], curves["DFT (PBE)"]) for k in qhas},
                 "dft_wall_s": record.get("wall_s"), "wall_s": time.perf_counter() - started}
        results[material] = entry
        plot_qha({"DFT (PBE)": dft.result, **{k: q.result for k, q in qhas.items()}},
                 {k: v["static"]["V0_angstrom3"] for k, v in entry["summaries"].items()},
                 output / f"qha_{material}.png", title=f"{material}: SevenNet-0 vs DFT (PBE) QHA",
                 n_atoms_primitive=len(dft.phonons[0].primitive))
        plot_mode_gruneisen(curves, bands["distances"],
                            bands["labels"], bands["path_connections"], output / f"gruneisen_{material}.png",
                            title=f"{material}: mode Grüneisen parameters at V0")
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        write_table(results, output / "table.md")
        print((output / "table.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
