"""Third-order supervision (issue 20): SevenNet-0 fine-tuned with LoRA on phono3py's Si-PBE example
(benchmarks/data/Si-PBE-phono3py: VASP PBE, 64-atom 2×2×2 conventional supercell, 111 displaced
supercells), κ(300 K) from each model's exact fc3 and fc2 against DFT's 119.5 W/(m·K); with
``--material ZnTe``, on its zincblende ZnTe-PBEsol example (benchmarks/data/ZnTe-PBEsol-phono3py:
VASP PBEsol, 64 atoms, 222 displaced supercells, DFT's Born charges applied to every model and to
DFT alike), on a 14×14×14 mesh, results under benchmarks/results/third_order/ZnTe; with
``--material Si-transfer``, trained on the 16-atom GPAW PBE data of benchmarks/data/Si/fc3_222
(generate.py --steps fc3: 2×2×2 primitive supercell, 57 displaced pairs) and judged on the 64-atom
VASP cell, which no condition saw, and on the 16-atom cell too (results/third_order/Si-transfer).

Conditions (the same data set, LoRA rank 4, AdamW, float32):

  base                 SevenNet-0 as converted
  forces               the displaced supercells as force-only structures (99 of them; 12 held out)
  hessian              the Hessian term on the reference's fc2 (random directions)
  third-order          the third-order term on the reference's fc3 (random direction pairs)
  hessian+third-order  both terms

Every model is judged on the same things: κ_xx(T) (RTA, 11×11×11 mesh, phono3py, T = 100…800 K) from its exact
fc3 and fc2 (equitrain_jax.phonons.conductivity.produce_exact_fc, phono3py's displacement set, no
pair cutoff), the mean Grüneisen parameter γ̄(300 K) from the same fc2 and fc3, the phonon-frequency
MAE of its fc2 against the DFT fc2 (8×8×8 Γ-centred mesh; in-sample for the Hessian conditions) and
the force MAE on the 11 held-out displaced supercells (in-sample for none).

Results are merged into benchmarks/results/third_order/results.json after each model, so a run
that stops resumes where it stopped (rerun the same command); each model's exact fc2 and fc3 are
kept beside it in WORKDIR (phono3py's fc2.hdf5, fc3.hdf5).  ``--report`` writes table.md,
kappa_T.png and kappa_300K.png from the results so far.

    python benchmarks/third_order_experiment.py --model SEVENNET0_DIR --seeds 0 1 2 --work WORKDIR
    python benchmarks/third_order_experiment.py --report
    python benchmarks/third_order_experiment.py --material ZnTe --model SEVENNET0_DIR --work WORKDIR
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
MATERIALS = {
    # phono3py's examples: data set, κ_xx(300 K) of its README, the README's mesh, results folder, DFT label
    "Si": dict(data=HERE / "data" / "Si-PBE-phono3py" / "phono3py_disp.yaml", readme_kappa=119.5, mesh=(11, 11, 11),
               results=HERE / "results" / "third_order", dft="VASP PBE"),
    # README: 46.5 W/(m·K) on 14×14×14 (an older phono3py; phono3py 4.10's own phono3py.load gives 52.7 there)
    "ZnTe": dict(data=HERE / "data" / "ZnTe-PBEsol-phono3py" / "phono3py_params_ZnTe.yaml.xz", readme_kappa=46.5,
                 mesh=(14, 14, 14), results=HERE / "results" / "third_order" / "ZnTe", dft="VASP PBEsol, NAC"),
    # transfer: trained on the GPAW 16-atom cell only (generate.py --steps fc3), judged on the VASP 64-atom cell
    "Si-transfer": dict(data=HERE / "data" / "Si-PBE-phono3py" / "phono3py_disp.yaml", readme_kappa=119.5,
                        mesh=(11, 11, 11), results=HERE / "results" / "third_order" / "Si-transfer", dft="VASP PBE",
                        train=HERE / "data" / "Si" / "fc3_222" / "phono3py_params.yaml", train_dft="GPAW PBE, 16 atoms"),
}
MATERIAL = "Si"
EXAMPLE = MATERIALS[MATERIAL]["data"]
TRAIN = None  # a smaller cell's phono3py data trained on instead of EXAMPLE's (transfer), or None
RESULTS = MATERIALS[MATERIAL]["results"] / "results.json"
MESH = MATERIALS[MATERIAL]["mesh"]
TEMPERATURES = [100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0]
DFT_KAPPA = MATERIALS[MATERIAL]["readme_kappa"]  # W/(m·K), phono3py's README for the example (RTA, 300 K)


def select(material: str) -> None:
    """Point the module's data set, mesh and results folder at ``material`` (a key of MATERIALS)."""
    global MATERIAL, EXAMPLE, RESULTS, MESH, DFT_KAPPA, TRAIN
    MATERIAL, EXAMPLE, MESH = material, MATERIALS[material]["data"], MATERIALS[material]["mesh"]
    TRAIN = MATERIALS[material].get("train")
    RESULTS, DFT_KAPPA = MATERIALS[material]["results"] / "results.json", MATERIALS[material]["readme_kappa"]
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


def kappa_xx(ph3) -> list[float]:
    """κ_xx(T) (W/(m·K)) at TEMPERATURES of a `Phono3py` with fc2 and fc3 (RTA, MESH)."""
    from equitrain_jax.phonons.conductivity import kappa_summary, run_thermal_conductivity

    run_thermal_conductivity(ph3, MESH, temperatures=TEMPERATURES)
    return [float(row[0]) for row in kappa_summary(ph3)["kappa_W_per_mK"]]


def judge(model_dir: Path, reference, valid, keep: Path, trained_on=None) -> dict:
    """κ_xx(T), γ̄(300 K), fc2 frequency MAE and held-out force MAE of a model directory; its exact fc2
    and fc3 are written into ``keep`` (`keep_fc`).  With ``trained_on`` (the smaller cell's reference of a
    transfer run) also κ_xx(300 K) and the fc2 frequency MAE on that cell, whose force constants are
    kept with the prefix ``train_cell_``."""
    from equitrain_jax import Potential
    from equitrain_jax.phonons.anharmonicity import mean_gruneisen, model_phono3py

    potential = Potential(model_dir, dtype="float64")
    start = time.perf_counter()
    ph3 = model_phono3py(potential, reference)
    fc_seconds = time.perf_counter() - start
    keep.mkdir(parents=True, exist_ok=True)
    keep_fc(ph3, keep)
    kappa = kappa_xx(ph3)
    predicted = potential.evaluate(valid)
    force_mae = np.mean([np.mean(np.abs(p["forces"] - a.arrays["forces"])) for p, a in zip(predicted, valid)])
    result = {"kappa_xx_W_per_mK": kappa[TEMPERATURES.index(300.0)], "kappa_xx_T_W_per_mK": kappa,
              "mean_gruneisen_300K": mean_gruneisen(ph3),
              "fc2_frequency_mae_thz": frequency_mae(ph3, reference), "valid_force_mae_meV_per_A": 1e3 * float(force_mae),
              "exact_fc_seconds": fc_seconds}
    if trained_on is not None:
        small = model_phono3py(potential, trained_on)
        keep_fc(small, keep, "train_cell_")
        result["train_cell_kappa_xx_W_per_mK"] = kappa_xx(small)[TEMPERATURES.index(300.0)]
        result["train_cell_fc2_frequency_mae_thz"] = frequency_mae(small, trained_on)
    return result


def keep_fc(ph3, folder: Path, prefix: str = "") -> None:
    """``ph3``'s fc2 and fc3 as phono3py's ``fc2.hdf5`` and ``fc3.hdf5`` (after ``prefix``) in ``folder``."""
    from phono3py.file_IO import write_fc2_to_hdf5, write_fc3_to_hdf5

    write_fc3_to_hdf5(ph3.fc3, filename=str(folder / f"{prefix}fc3.hdf5"), p2s_map=ph3.primitive.p2s_map)
    write_fc2_to_hdf5(ph3.fc2, filename=str(folder / f"{prefix}fc2.hdf5"), p2s_map=ph3.primitive.p2s_map)


def finite_difference_kappa(model_dir: Path, reference) -> float:
    """κ_xx(300 K) of a model from phono3py's own finite displacements of ``reference``'s cell (its
    displacement distance, phono3py's pairs), the scheme DFT's fc3 was made by."""
    from equitrain_jax import Calculator
    from equitrain_jax.phonons.conductivity import phono3py_from_calculator
    from equitrain_jax.phonons.bridge import phonopy_to_ase

    distance = float(np.linalg.norm(reference.dataset["first_atoms"][0]["displacement"]))
    ph3 = phono3py_from_calculator(Calculator(model_dir), phonopy_to_ase(reference.unitcell), reference.supercell_matrix,
                                   primitive_matrix=reference.primitive_matrix, distance=distance, symmetrize_fc=True)
    return kappa_xx(ph3)[TEMPERATURES.index(300.0)]


def swap_entry(reference, fc2, fc3) -> dict:
    """κ_xx(300 K) with ``fc3`` on the reference's fc2 and with ``fc2`` under its fc3, and the relative
    Frobenius errors ‖Φ − Φ_DFT‖/‖Φ_DFT‖ of the full ``fc2`` and ``fc3`` against the reference's."""
    from phono3py import Phono3py
    from phono3py.phonon3.fc3 import compact_fc3_to_full_fc3
    from phonopy.harmonic.force_constants import compact_fc_to_full_fc

    from equitrain_jax.phonons.conductivity import run_thermal_conductivity

    dft = {"fc2": np.asarray(reference.fc2), "fc3": np.asarray(reference.fc3)}
    full = {"fc2": lambda fc: fc if fc.shape[0] == fc.shape[1] else compact_fc_to_full_fc(reference.primitive, fc),
            "fc3": lambda fc: fc if fc.shape[0] == fc.shape[1] else compact_fc3_to_full_fc3(reference.primitive, fc)}
    entry = {}
    for name, (pair2, pair3) in {"model_fc3_dft_fc2": (dft["fc2"], fc3), "model_fc2_dft_fc3": (fc2, dft["fc3"])}.items():
        ph3 = Phono3py(reference.unitcell, supercell_matrix=reference.supercell_matrix,
                       primitive_matrix=reference.primitive_matrix, log_level=0)
        ph3.nac_params = reference.nac_params
        ph3.fc2, ph3.fc3 = pair2, pair3
        run_thermal_conductivity(ph3, MESH, temperatures=[300.0])
        entry[name] = float(ph3.thermal_conductivity.kappa[0, 0, 0])  # RTA, xx, 300 K
    for order, mine in (("fc2", fc2), ("fc3", fc3)):
        theirs = full[order](dft[order])
        entry[f"{order}_relative_error"] = float(np.linalg.norm(full[order](np.asarray(mine)) - theirs)
                                                 / np.linalg.norm(theirs))
    return entry


def swap(results: dict, reference, work: Path, done: dict, trained_on=None) -> dict:
    """Which half of a model's force constants its κ(300 K) errs by (`swap_entry`, from the fc2.hdf5
    and fc3.hdf5 each run keeps in ``work``), per run not in ``done`` yet; returns ``done`` with them
    added.  With ``trained_on`` (a transfer run's smaller cell), the same on that cell too, under
    ``"train_cell"``, from the force constants kept there with the prefix ``train_cell_``."""
    from phono3py.file_IO import read_fc2_from_hdf5, read_fc3_from_hdf5

    def kept(folder: Path, prefix: str = "") -> tuple:
        return (read_fc2_from_hdf5(str(folder / f"{prefix}fc2.hdf5")), read_fc3_from_hdf5(str(folder / f"{prefix}fc3.hdf5")))

    for key in results:
        folder = work / key
        if key in ("settings", "dft") or not (folder / "fc3.hdf5").is_file():
            continue
        entry = done.setdefault(key, {})
        if "fc3_relative_error" not in entry:
            entry.update(swap_entry(reference, *kept(folder)))
        if trained_on is not None and "train_cell" not in entry and (folder / "train_cell_fc3.hdf5").is_file():
            entry["train_cell"] = swap_entry(trained_on, *kept(folder, "train_cell_"))
        print(key, entry, flush=True)
    return done


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


def summarise(results: dict) -> list[dict]:
    """Per condition (base first): mean and sample standard deviation over seeds of each measure."""
    measures = ("kappa_xx_W_per_mK", "mean_gruneisen_300K", "fc2_frequency_mae_thz", "valid_force_mae_meV_per_A",
                "train_seconds", "train_cell_kappa_xx_W_per_mK", "train_cell_fc2_frequency_mae_thz")
    rows = []
    longer = sorted({key.rsplit("/seed", 1)[0] for key in results if "@" in key}, key=lambda name: name.split("@"))
    for condition in ["base", *CONDITIONS, *longer]:
        keys = [key for key in results if key == condition or key.startswith(condition + "/seed")]
        if not keys:
            continue
        runs = [results[key] for key in keys]
        row = {"condition": condition, "keys": keys, "seeds": len(runs) if condition != "base" else 0,
               "kappa_300K": [run["kappa_xx_W_per_mK"] for run in runs]}
        for measure in measures:
            values = [run[measure] for run in runs if measure in run]
            if values:
                row[measure] = (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None)
        row["kappa_T"] = np.array([run["kappa_xx_T_W_per_mK"] for run in runs if "kappa_xx_T_W_per_mK" in run])
        rows.append(row)
    return rows


def report(results: dict) -> None:
    """table.md, kappa_T.png and kappa_300K.png beside results.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, dft = summarise(results), results.get("dft", {})

    def cell(row, measure, digits):
        if measure not in row:
            return "–"
        mean, std = row[measure]
        return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")

    dft_kappa = dft.get("kappa_xx_W_per_mK", DFT_KAPPA)
    lines = ["| condition | seeds | κ_xx(300 K) W/(m·K) | vs DFT | γ̄(300 K) | fc2 phonon MAE (THz) | held-out force MAE "
             "(meV/Å) | training (s) |", "|---|---|---|---|---|---|---|---|",
             f"| DFT ({MATERIALS[MATERIAL]['dft']}) | – | {dft_kappa:.1f} | – | {dft.get('mean_gruneisen_300K', float('nan')):.3f} | – | – | – |"]
    for row in rows:
        error = 100 * (row["kappa_xx_W_per_mK"][0] / dft_kappa - 1)
        lines.append(f"| {row['condition']} | {row['seeds'] or '–'} | {cell(row, 'kappa_xx_W_per_mK', 1)} | "
                     f"{error:+.0f} % | {cell(row, 'mean_gruneisen_300K', 3)} | {cell(row, 'fc2_frequency_mae_thz', 3)} | "
                     f"{cell(row, 'valid_force_mae_meV_per_A', 2)} | {cell(row, 'train_seconds', 0)} |")
    if "train_cell_kappa_xx_W_per_mK" in dft:  # a transfer run: the same models on the cell they were trained on
        small = dft["train_cell_kappa_xx_W_per_mK"]
        lines += ["", f"The same models on the cell trained on ({MATERIALS[MATERIAL]['train_dft']}, in-sample):", "",
                  "| condition | κ_xx(300 K) W/(m·K) | vs DFT | fc2 phonon MAE (THz) |", "|---|---|---|---|",
                  f"| DFT | {small:.1f} | – | – |"]
        if "train_cell_finite_difference_kappa_xx_W_per_mK" in results.get("base", {}):
            fd = results["base"]["train_cell_finite_difference_kappa_xx_W_per_mK"]
            lines.append(f"| SevenNet-0 by DFT's finite differences | {fd:.1f} | {100 * (fd / small - 1):+.0f} % | – |")
        for row in rows:
            if "train_cell_kappa_xx_W_per_mK" in row:
                error = 100 * (row["train_cell_kappa_xx_W_per_mK"][0] / small - 1)
                lines.append(f"| {row['condition']} | {cell(row, 'train_cell_kappa_xx_W_per_mK', 1)} | {error:+.0f} % | "
                             f"{cell(row, 'train_cell_fc2_frequency_mae_thz', 3)} |")
    lines.append("")
    lines.append("Mean ± sample standard deviation over seeds; " + json.dumps(results.get("settings", {})))
    swapped = json.loads((RESULTS.parent / "swap.json").read_text()) if (RESULTS.parent / "swap.json").is_file() else {}
    if swapped:  # written by --swap
        header = ["| condition | model fc2 + model fc3 | DFT fc2 + model fc3 | model fc2 + DFT fc3 | fc2 error | fc3 error |",
                  "|---|---|---|---|---|---|"]

        def spread(values):
            values = np.asarray(values)
            return f"{values.mean():.1f}" + (f" ± {values.std(ddof=1):.1f}" if len(values) > 1 else "")

        def swap_rows(kappa: str, entry) -> list[str]:
            """A row per condition with swapped runs: κ ``kappa`` of its results, the swap entries
            ``entry(key)`` (None: not swapped)."""
            table = []
            for row in rows:
                keys = [key for key in row["keys"] if entry(key) is not None and kappa in results[key]]
                if not keys:
                    continue
                entries = [entry(key) for key in keys]
                table.append(f"| {row['condition']} ({len(keys)}) | {spread([results[key][kappa] for key in keys])}"
                             f" | {spread([e['model_fc3_dft_fc2'] for e in entries])}"
                             f" | {spread([e['model_fc2_dft_fc3'] for e in entries])}"
                             + "".join(f" | {spread([100 * e[f'{order}_relative_error'] for e in entries])} %"
                                       if all(f"{order}_relative_error" in e for e in entries) else " | –"
                                       for order in ("fc2", "fc3")) + " |")
            return table

        lines += ["", "κ_xx(300 K), W/(m·K), with one half of the force constants from DFT, and the relative "
                  "Frobenius error of the model's full fc2 and fc3 against DFT's (`--swap`):", "", *header,
                  f"| DFT | {dft_kappa:.1f} | – | – | – | – |", *swap_rows("kappa_xx_W_per_mK", swapped.get)]
        small = swap_rows("train_cell_kappa_xx_W_per_mK", lambda key: swapped.get(key, {}).get("train_cell"))
        if "train_cell_kappa_xx_W_per_mK" in dft and small:
            lines += ["", f"The same on the cell trained on ({MATERIALS[MATERIAL]['train_dft']}; DFT "
                      f"{dft['train_cell_kappa_xx_W_per_mK']:.1f} W/(m·K)):", "", *header, *small]
    (RESULTS.parent / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    figure, axis = plt.subplots(figsize=(6, 4.2))
    if "kappa_xx_T_W_per_mK" in dft:
        axis.plot(TEMPERATURES, dft["kappa_xx_T_W_per_mK"], "k-", lw=2.5, label=f"DFT ({MATERIALS[MATERIAL]['dft']})")
    for row in rows:
        if len(row["kappa_T"]) == 0:
            continue
        mean = row["kappa_T"].mean(axis=0)
        line, = axis.plot(TEMPERATURES, mean, "--" if row["condition"] == "base" else "-",
                          label=row["condition"] if row["condition"] != "base" else "SevenNet-0")
        if len(row["kappa_T"]) > 1:
            axis.fill_between(TEMPERATURES, row["kappa_T"].min(axis=0), row["kappa_T"].max(axis=0),
                              color=line.get_color(), alpha=0.2)
    axis.set(xlabel="T (K)", ylabel="κ_xx (W/(m·K))", yscale="log",
             title=f"{MATERIAL}, 64 atoms: κ(T) after LoRA fine-tuning (band: seeds)")
    axis.title.set_fontsize(10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS.parent / "kappa_T.png", dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3.8))
    axis.axhline(dft_kappa, color="k", lw=2, label="DFT")
    for x, row in enumerate(rows):
        values = row["kappa_300K"]
        axis.bar(x, np.mean(values), color=f"C{x}", alpha=0.6)
        axis.plot([x] * len(values), values, "ko", ms=4)
    axis.set_xticks(range(len(rows)), [("SevenNet-0" if r["condition"] == "base" else r["condition"]) for r in rows],
                    rotation=20, fontsize=8)
    axis.set(ylabel="κ_xx(300 K) (W/(m·K))", title=f"{MATERIAL} ({MATERIALS[MATERIAL]['dft']}), 64 atoms: κ at 300 K (dots: seeds)")
    axis.title.set_fontsize(10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS.parent / "kappa_300K.png", dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="converted SevenNet-0 directory")
    parser.add_argument("--work", type=Path, help="where the fine-tuned models go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--steps", type=int, default=24,
                        help="optimiser steps per fine-tune (other than the results' first runs': a condition "
                             "'<condition>@<steps>' of its own)")
    parser.add_argument("--swap", action="store_true",
                        help="only compute κ(300 K) of every finished run's fc3 with DFT's fc2 and of its fc2 with "
                             "DFT's fc3 (swap.json beside results.json; needs --work)")
    parser.add_argument("--material", default="Si", choices=list(MATERIALS), help="phono3py example (default Si)")
    parser.add_argument("--report", action="store_true", help="only write the table and plots of the results so far")
    args = parser.parse_args()
    select(args.material)
    if args.report:
        report(json.loads(RESULTS.read_text()))
        return
    if args.work is None or (args.model is None and not args.swap):
        parser.error("--model and --work are needed to run (--work for --swap; neither for --report)")

    from equitrain_jax.phonons.anharmonicity import mean_gruneisen
    from equitrain_jax.train.finetune import third_order_references
    from equitrain_jax.train.third_order_data import displaced_supercells

    judged_on = third_order_references([EXAMPLE])
    reference = judged_on[0][1]
    if TRAIN is not None and not TRAIN.is_file():
        raise SystemExit(f"{TRAIN} is missing: make it with benchmarks/data/generate.py --materials Si --steps fc3")
    references = third_order_references([TRAIN]) if TRAIN is not None else judged_on
    trained_on = references[0][1] if TRAIN is not None else None
    if args.swap:
        path = RESULTS.parent / "swap.json"
        done = swap(json.loads(RESULTS.read_text()), reference, args.work,
                    json.loads(path.read_text()) if path.is_file() else {}, trained_on)
        path.write_text(json.dumps(done, indent=1) + "\n")
        return
    structures = displaced_supercells(references[0][0])
    valid = structures[::10]  # held out of training (every tenth displaced supercell)
    train_set = [atoms for k, atoms in enumerate(structures) if k % 10]
    judged = displaced_supercells(judged_on[0][0])[::10] if TRAIN is not None else valid
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.setdefault("settings", {"material": MATERIAL, "steps": args.steps, "lora_rank": 4, "learning_rate": 2e-3, "mesh": list(MESH),
                                    "dft_kappa_xx_W_per_mK_readme": DFT_KAPPA, "n_train": len(train_set),
                                    **({"trained_on": str(TRAIN.relative_to(HERE.parent)),
                                        "trained_on_dft": MATERIALS[MATERIAL]["train_dft"]} if TRAIN is not None else {}),
                                    "n_valid": len(valid), "machine": "2-core AMD EPYC (shared)"})

    def save() -> None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")

    def stamp() -> str:
        return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"

    if "dft" not in results:
        gamma = mean_gruneisen(reference)
        results["dft"] = {"kappa_xx_T_W_per_mK": kappa_xx(reference), "mean_gruneisen_300K": gamma, "date": stamp()}
        results["dft"]["kappa_xx_W_per_mK"] = results["dft"]["kappa_xx_T_W_per_mK"][TEMPERATURES.index(300.0)]
        if trained_on is not None:
            results["dft"]["train_cell_kappa_xx_W_per_mK"] = kappa_xx(trained_on)[TEMPERATURES.index(300.0)]
        save()
        print("dft", results["dft"], flush=True)
    if "base" not in results:
        results["base"] = {**judge(args.model, reference, judged, args.work / "base", trained_on), "date": stamp()}
        if trained_on is not None:  # DFT's κ there is from finite differences: the model's by the same scheme
            results["base"]["train_cell_finite_difference_kappa_xx_W_per_mK"] = finite_difference_kappa(
                args.model, trained_on)
        save()
        print("base", results["base"], flush=True)
    for seed in args.seeds:
        for condition in args.conditions:
            key = f"{condition}/seed{seed}" if args.steps == results["settings"]["steps"] else \
                f"{condition}@{args.steps}/seed{seed}"  # a run longer (or shorter) than the experiment's
            if key in results:
                continue
            output = args.work / key.split("/seed")[0] / f"seed{seed}"
            seconds = train(args.model, condition, seed, output, references, train_set, valid, args.steps)
            results[key] = {**judge(output / "model", reference, judged, output, trained_on), "train_seconds": seconds,
                            "date": stamp()}
            save()
            report(results)
            print(key, results[key], flush=True)


if __name__ == "__main__":
    main()
