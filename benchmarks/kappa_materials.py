"""κ of Si, C, MgO and Al (phonon part) for SevenNet-0, pretrained and fine-tuned, from exact fc3.

Issue 18, item 5.  Per material (at the GPAW PBE lattice constant of ``benchmarks/data/<M>/lattice.json``,
the structure the fine-tuning data and the DFT phonon references were made at) and per model:

  pretrained   SevenNet-0 (benchmarks/results/phonon_finetune/sevennet-0, converted from the sevenn wheel)
  lora, full   SevenNet-0 fine-tuned on the 10 GPAW structures of benchmarks/data/<M>/train.extxyz with the
               protocol of benchmarks/phonon_finetune.py (40 epochs, lr 2e-3, plateau, EMA 0.99, E0s refitted,
               float32 training, seed 0), run by
               ``phonon_finetune.py --materials Si C MgO Al --strategies lora full --sizes 10
               -o benchmarks/results/phonon_finetune_kappa`` (models under its runs/, not committed)

fc2 and fc3 exact (``phono3py_from_potential``, method ``rows``, float64), phono3py's symmetrisation
(``--sym-fc``), RTA on an 11×11×11 mesh, κ at TEMPERATURES (K).  MgO with phono3py's non-analytic
correction from benchmarks/data/MgO/BORN (VASP Born charges and ε∞ of phonopy's MgO example, the same for every
model).  fc3 supercells (``--supercells``): ``p2`` 2×2×2 of the primitive cell (16 atoms for Si, C, MgO;
8 for Al), ``p3`` 3×3×3 of it (54; 27 for Al), ``c2`` 2×2×2 of the conventional cell (64; 32 for Al).

Results are merged into benchmarks/results/kappa_materials/results.json after every κ (rerunning skips
what is there); ``--plot`` draws kappa_300K.png (κ(300 K) per material and model against the published
values in REFERENCES) and kappa_T.png (κ(T)).

    python benchmarks/kappa_materials.py --materials Si C MgO Al --models pretrained lora full --supercells p2
    python benchmarks/kappa_materials.py --materials Si C --models pretrained --supercells p3
    python benchmarks/kappa_materials.py --plot
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
DATA = HERE / "data"
OUTPUT = HERE / "results" / "kappa_materials"
PRETRAINED = HERE / "results" / "phonon_finetune" / "sevennet-0"
FINETUNED = HERE / "results" / "phonon_finetune_kappa" / "runs"
MESH = (11, 11, 11)
TEMPERATURES = (100, 200, 300, 400, 500, 600, 800, 1000)
CRYSTALS = {"Si": "diamond", "C": "diamond", "MgO": "rocksalt", "Al": "fcc"}
SUPERCELLS = {"p2": (False, 2), "p3": (False, 3), "c2": (True, 2)}
"""name → (conventional cell?, repetitions)."""

REFERENCES = {
    # material: [(label, κ near 300 K in W/(m·K), kind)], kind "first principles" or "experiment"; only sources
    # read (docs/conductivity.md names them with their settings)
    "Si": [("phono3py Si-PBE example: VASP PBE, 64 atoms, RTA 11³", 119.5, "first principles"),
           ("same, 19³ mesh", 130.1, "first principles"),
           ("GPAW PBE, 16 atoms (issue 20; data not kept)", 102.4, "first principles"),
           ("experiment, 30 °C: 125 ± 19", 125.0, "experiment")],
    "C": [("experiment, natural diamond: up to 2400 (Inyushkin et al. 2018)", 2400.0, "experiment")],
    "MgO": [("first principles, RTA: ~42", 42.0, "first principles"),
            ("same, full BTE: ~54", 54.0, "first principles")],
    "Al": [],
}


def load_results() -> dict:
    path = OUTPUT / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(mine: dict) -> None:
    """Merge this run's entries into the results file (several runs may write it)."""
    results = load_results()
    results.update(mine)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "results.json").write_text(json.dumps(results, indent=1))


def model_directory(model: str, material: str) -> Path:
    return PRETRAINED if model == "pretrained" else FINETUNED / material / f"{model}_10" / "model"


def unitcell(material: str, conventional: bool):
    from ase.build import bulk

    a = json.loads((DATA / material / "lattice.json").read_text())["a_angstrom"]
    return bulk(material, CRYSTALS[material], a=a, cubic=conventional), a


def kappa(material: str, model: str, supercell: str) -> dict:
    from equitrain_jax import Potential
    from equitrain_jax.phonons.conductivity import kappa_summary, phono3py_from_potential, run_thermal_conductivity
    from equitrain_jax.phonons.nac import read_born

    conventional, repeat = SUPERCELLS[supercell]
    cell, a = unitcell(material, conventional)
    start = time.perf_counter()
    ph3 = phono3py_from_potential(Potential(model_directory(model, material), dtype="float64"), cell, repeat,
                                  symmetrize_fc=True, check_size=False)
    fc_seconds = time.perf_counter() - start
    born = DATA / material / "BORN"
    if born.is_file():
        ph3.nac_params = read_born(born, ph3.primitive)
    run_thermal_conductivity(ph3, MESH, temperatures=TEMPERATURES)
    summary = kappa_summary(ph3)
    return dict(material=material, model=model, supercell=supercell, a_A=a, n_atoms=len(ph3.supercell),
                nac=str(born.relative_to(HERE.parent)) if born.is_file() else None,
                temperatures_K=summary["temperatures_K"],
                kappa_xx_W_per_mK=[row[0] for row in summary["kappa_W_per_mK"]],
                kappa_mean_diagonal_W_per_mK=summary["kappa_mean_diagonal_W_per_mK"],
                fc_seconds=fc_seconds, seconds=time.perf_counter() - start,
                date=f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def kappa_at(entry: dict, temperature: float = 300.0) -> float:
    return float(np.interp(temperature, entry["temperatures_K"], entry["kappa_mean_diagonal_W_per_mK"]))


DIVERGED = 1e5
"""κ(300 K) above this (W/(m·K)) is a divergence (a mode without scattering), not a conductivity: not drawn."""


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {k: e for k, e in results.items() if kappa_at(e) < DIVERGED}
    materials = [m for m in CRYSTALS if any(e["material"] == m for e in results.values())]
    models = ("pretrained", "lora", "full")
    fig, axes = plt.subplots(1, len(materials), figsize=(max(5.0, 3.2 * len(materials)), 4.2), squeeze=False)
    for ax, material in zip(axes[0], materials):
        bars = [(f"{m}\n{s}", kappa_at(results[f"{material}/{m}/{s}"]))
                for s in SUPERCELLS for m in models if f"{material}/{m}/{s}" in results]
        ax.bar(range(len(bars)), [v for _, v in bars], color=[f"C{models.index(b.split(chr(10))[0])}" for b, _ in bars])
        ax.set_xticks(range(len(bars)), [b for b, _ in bars], fontsize=7)
        for k, (label, value, kind) in enumerate(REFERENCES[material]):
            ax.axhline(value, color="k", ls="--" if kind == "first principles" else ":", lw=1)
            ax.annotate(label, (0.02, value), xycoords=("axes fraction", "data"), fontsize=5.5, va="bottom")
        ax.set_yscale("log")
        ax.set_title(material)
        ax.set_ylabel("κ(300 K) (W/(m·K))")
    fig.suptitle("SevenNet-0, exact fc3, RTA 11³ (2026-11-30)\ndashed: first principles, dotted: experiment", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUTPUT / "kappa_300K.png", dpi=150)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(materials), figsize=(max(5.0, 3.2 * len(materials)), 3.6), squeeze=False)
    for ax, material in zip(axes[0], materials):
        for key, entry in results.items():
            if entry["material"] != material:
                continue
            style = {"p2": "-", "p3": "--", "c2": ":"}[entry["supercell"]]
            ax.plot(entry["temperatures_K"], entry["kappa_mean_diagonal_W_per_mK"], style, marker="o", ms=2.5,
                    color=f"C{models.index(entry['model'])}", label=f"{entry['model']} {entry['supercell']} ({entry['n_atoms']})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("T (K)")
        ax.set_ylabel("κ (W/(m·K))")
        ax.set_title(material)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(OUTPUT / "kappa_T.png", dpi=150)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--materials", nargs="*", default=[], choices=list(CRYSTALS))
    parser.add_argument("--models", nargs="*", default=["pretrained"], choices=("pretrained", "lora", "full"))
    parser.add_argument("--supercells", nargs="*", default=["p2"], choices=list(SUPERCELLS))
    parser.add_argument("--plot", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    results, mine = load_results(), {}
    for supercell in args.supercells:
        for material in args.materials:
            for model in args.models:
                key = f"{material}/{model}/{supercell}"
                if key in results:
                    continue
                if not (model_directory(model, material) / "config.json").is_file():
                    print(f"{key}: no model at {model_directory(model, material)}; skipped", flush=True)
                    continue
                results[key] = mine[key] = kappa(material, model, supercell)
                save_results(mine)
                print(key, f"κ(300 K) = {kappa_at(results[key]):.2f} W/(m·K)", f"({results[key]['seconds']:.0f} s)",
                      flush=True)
    if args.plot:
        plot(load_results())


if __name__ == "__main__":
    main()
