"""Does fine-tuning on a few DFT structures fix a foundation model's phonons?  The paper's
experiment, offline, on the GPAW PBE data in ``benchmarks/data``.

    python benchmarks/phonon_finetune.py                      # SevenNet-0, every material with data
    python benchmarks/phonon_finetune.py --model models/mp0-medium --materials Si Al --sizes 1 10
    python benchmarks/phonon_finetune.py --materials Al Si --strategies lora full --sizes 5 10 \
        --seeds 3 -o benchmarks/results/phonon_finetune_seeds        # the spread over seeds

Per material and per strategy (LoRA, L2-SP delta, freezing, full, multi-head replay, from
scratch) and training-set size (1, 5, 10, all), it fine-tunes the model on the DFT-labelled
structures (E0s refitted: GPAW's energy zero is not the foundation model's), computes phonons
from the analytic Hessian on the reference's own supercell, and compares them with the DFT
finite-displacement reference: frequency MAE on the band path and a q-mesh, errors of F, S and Cv
at 300 K, validation force MAE, training time.  The pretrained model is the first row.

Writes into ``--output`` (default ``benchmarks/results/phonon_finetune``): ``results.json``,
``table.md`` (every run, every column), ``summary.md`` (a compact table per material),
per-material band-structure and thermal-property overlays (DFT vs pretrained vs fine-tuned:
``bands_<material>.png``, ``thermal_<material>.png``),
``learning_curves.png`` and, for materials whose DFT reference has an imaginary mode, the 1D
energy scan along it: DFT energies along the soft mode (``data/<material>/mode_scan.json``) and
DFT's harmonic ½λQ² against the pretrained and fine-tuned models on the same structures.
Finished runs are kept (``runs/…/model``) and skipped when the command is repeated.

Where the DFT reference has NAC parameters (MgO: ``data/MgO/BORN`` beside its YAML, VASP Born
charges and ε∞ from phonopy's example), every model gets the same ones, so the phonon errors
compare like with like with LO–TO splitting; the tables then add the LO frequency at Γ and the
mesh MAE without NAC on either side.

Multi-head replay needs pretraining-like data; there is none offline, so the replay set is the
other materials' training structures labelled by the pretrained model itself (it keeps the
pretrained head on its own predictions elsewhere in chemical space).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ase.io
import numpy as np

DATA = Path(__file__).parent / "data"
REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path(__file__).parent / "results" / "phonon_finetune"


def recorded_path(path: Path) -> str:
    """``path`` as results.json records it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPOSITORY)) if path.is_relative_to(REPOSITORY) else str(path)


def recorded_model(text: str) -> Path:
    """The model directory a results.json names (relative paths are the repository's)."""
    path = Path(text)
    return (path if path.is_absolute() else REPOSITORY / path).resolve()
STRATEGIES = ("lora", "delta", "freeze", "full", "multihead", "scratch")
PATIENCE = 15  # default early stopping; also what results written before the setting was recorded used


def pretrained_model() -> Path:
    """SevenNet-0 converted from the installed ``sevenn`` package (once, in the default output
    directory, so that runs written to other ``--output`` directories share it)."""
    from equitrain_jax.convert.sevennet import convert_pretrained

    target = DEFAULT_OUTPUT / "sevennet-0"
    if not (target / "config.json").is_file():
        convert_pretrained("sevennet-0", target)
    return target


def materials_with_data(names) -> list[str]:
    found = []
    for directory in sorted(DATA.iterdir()):
        ready = all((directory / f).is_file() for f in ("phonopy_params.yaml", "train.extxyz", "valid.extxyz"))
        if directory.is_dir() and ready and (not names or directory.name in names):
            found.append(directory.name)
    missing = set(names or ()) - set(found)
    if missing:
        print(f"no complete data (phonopy_params.yaml, train.extxyz, valid.extxyz) for {sorted(missing)}; skipped")
    return found


def uncovered_elements(model_dir: Path, materials: list[str]) -> dict[str, list[str]]:
    """Per material, the elements of its data that the model has no embedding for."""
    from ase.data import chemical_symbols

    config = model_dir / "config.json"
    if not config.is_file():
        raise SystemExit(f"{model_dir} is not a converted model directory (no config.json); "
                         "convert one first: equitrain-jax convert MODEL -o DIR")
    known = set(json.loads(config.read_text())["atomic_numbers"])
    missing = {}
    for material in materials:
        numbers = {int(z) for atoms in ase.io.read(DATA / material / "train.extxyz", ":") for z in atoms.numbers}
        if numbers - known:
            missing[material] = [chemical_symbols[z] for z in sorted(numbers - known)]
    return missing


def training_indices(total: int, n: int, seed: int) -> list[int]:
    """Which of the ``total`` training structures a run with ``n`` of them uses: the first ``n``
    for seed 0 (the runs of the README's tables), a random draw for the other seeds, so that the
    spread over seeds includes the choice of structures as well as the initialisation and batch order."""
    if seed == 0 or n >= total:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng([seed, n]).choice(total, n, replace=False))


def check_settings(run: Path, model_dir: Path, epochs: int, learning_rate: float, patience: int | None) -> None:
    """Refuse to mix a finished run made with other settings into this table."""
    settings = json.loads((run / "run.json").read_text())
    train = settings["train"]
    stored = (Path(settings["base_model"]).resolve(), train["epochs"], train["learning_rate"], train["early_stopping_patience"])
    if stored != (model_dir.resolve(), epochs, learning_rate, patience):
        raise SystemExit(
            f"{run} was made from {stored[0]} with --epochs {stored[1]} --lr {stored[2]} --patience {stored[3] or 0}, "
            f"not from {model_dir} with --epochs {epochs} --lr {learning_rate} --patience {patience or 0}: "
            "repeat those arguments, or choose another --output")


def force_mae(potential, structures) -> float:
    """Force MAE (meV/Å, per component) of ``potential`` against the structures' labels."""
    outputs = potential.evaluate(structures)
    return 1e3 * float(np.mean(np.concatenate([np.abs(o["forces"] - a.get_forces()).ravel() for o, a in zip(outputs, structures)])))


NAC_DIRECTION = (1.0, 0.0, 0.0)
"""Cartesian direction of the LO frequency at Γ reported for a reference with NAC (cubic crystals
here: the same along every direction)."""


def nac_columns(phonon, reference) -> dict:
    """For a reference with NAC (and the model with the same parameters): the model's highest Γ
    frequency approached along `NAC_DIRECTION` (the LO mode), its highest analytic one at Γ (the
    TO mode; NAC leaves it) and the mesh MAE with the NAC removed from both, the analytic
    comparison the tables of 2026-11-26 made."""
    from equitrain_jax.phonons import gamma_frequencies
    from equitrain_jax.phonons.compare import compare_phonons
    from equitrain_jax.phonons.nac import apply_nac, gamma_limit_frequencies

    if reference.nac_params is None:
        return {}
    columns = {"gamma_lo_THz": float(gamma_limit_frequencies(phonon, NAC_DIRECTION)[-1]),
               "gamma_to_THz": float(gamma_frequencies(phonon)[-1])}
    kept = phonon.nac_params, reference.nac_params
    try:
        apply_nac(phonon, None), apply_nac(reference, None)
        columns["mesh_mae_without_nac_THz"] = compare_phonons(phonon, reference)["mesh"]["mae_THz"]
    finally:
        apply_nac(phonon, kept[0]), apply_nac(reference, kept[1])
    return columns


def evaluate_model(model_dir, reference, valid, nac: str | None = None) -> tuple[dict, object]:
    """The phonon and force errors of a model against the DFT reference; with the reference's NAC
    parameters (``nac``: where they come from, recorded in the row) on the model too."""
    from equitrain_jax.phonons.compare import compare_phonons, phonopy_like_reference
    from equitrain_jax.phonons import gamma_frequencies
    from equitrain_jax.potential import Potential

    potential = Potential(model_dir, dtype="float64")
    phonon = phonopy_like_reference(potential, reference)  # with the reference's NAC parameters, if any
    comparison = compare_phonons(phonon, reference)
    gamma, gamma_dft = gamma_frequencies(phonon), gamma_frequencies(reference)
    row = {
        # Γ is exact in any supercell: the one comparison that needs no interpolation (BaTiO3's
        # 1×1×1 reference has nothing else); its lowest frequency is the soft mode where there is one
        "gamma_mae_THz": float(np.mean(np.abs(gamma - gamma_dft))),
        "gamma_lowest_THz": float(gamma[0]),
        "band_mae_THz": comparison["band_path"]["mae_THz"],
        "mesh_mae_THz": comparison["mesh"]["mae_THz"],
        "max_frequency_error_THz": comparison["mesh"]["max_frequency_error_THz"],
        **{f"{key.split('_')[0]}_error": value["error"] for key, value in comparison["thermal"].items() if isinstance(value, dict)},
        "valid_force_mae_meV_per_A": force_mae(potential, valid),
        "nac": nac,
        **nac_columns(phonon, reference),
    }
    return row, phonon


def replay_set(model_dir, material: str, materials: list[str], count: int = 8) -> list:
    """Other materials' training structures labelled by the pretrained model."""
    from equitrain_jax.potential import Potential

    potential = Potential(model_dir, dtype="float64")
    others = [a for m in materials if m != material for a in ase.io.read(DATA / m / "train.extxyz", ":")]
    if not others:  # a single material: its own structures, pretrained labels
        others = ase.io.read(DATA / material / "train.extxyz", ":")
    others = [a for a in others if set(a.numbers) <= set(potential.config.atomic_numbers)][:count]
    replay = []
    for atoms, out in zip(others, potential.evaluate(others)):
        atoms = atoms.copy()
        atoms.calc = None
        atoms.info = {"energy": out["energy"], "stress": out["stress"]}
        atoms.arrays = {k: v for k, v in atoms.arrays.items() if k in ("numbers", "positions")}
        atoms.arrays["forces"] = out["forces"]
        replay.append(atoms)
    return replay


def mirrored(values) -> np.ndarray:
    """Values at Q ≥ 0 (Q = 0 first) extended to −Q by inversion: from −Q_max to Q_max."""
    values = np.asarray(values)
    return np.concatenate([values[:0:-1], values])


def scan_structures(dft_scan: dict) -> tuple[np.ndarray, list, np.ndarray]:
    """The structures of a DFT soft-mode scan (``mode_scan.json``), mirrored to ±Q: amplitudes
    Q (amu^½ Å, from −Q_max to Q_max), the displaced structures and DFT's energies (eV, relative
    to Q = 0; E(−Q) = E(Q) by inversion)."""
    from ase import Atoms

    q_half = np.asarray(dft_scan["Q_amu_half_angstrom"])
    amplitudes = np.concatenate([-q_half[:0:-1], q_half])
    pattern = np.asarray(dft_scan["pattern_angstrom_per_Q"])
    base = Atoms(numbers=dft_scan["numbers"], positions=dft_scan["positions"], cell=dft_scan["cell"], pbc=True)
    structures = []
    for q in amplitudes:
        moved = base.copy()
        moved.positions = base.positions + q * pattern
        structures.append(moved)
    return amplitudes, structures, mirrored(dft_scan["energy_eV"])


def imaginary_scan(reference, models: dict, path: Path, title: str, dft_scan: dict | None = None) -> dict | None:
    """Energies along the reference's most unstable mode, DFT vs each model, plotted to ``path``.

    With ``dft_scan`` (``benchmarks/data/<material>/mode_scan.json``: DFT energies along the soft
    Γ mode, made by ``generate.py``), the models are evaluated on the same displaced structures
    (±Q) and compared with the DFT points and DFT's harmonic ½λQ²; without it, along the
    reference's mode with the harmonic curve as the only DFT information.  Returns the curves and,
    per curve, the double well's depth (meV per cell) and its Q (amu^½ Å).
    """
    from equitrain_jax.potential import Potential

    curves, markers = {}, {}
    if dft_scan is not None:
        amplitudes, structures, curves["DFT (PBE)"] = scan_structures(dft_scan)
        frequency, qpoint = dft_scan["frequency_THz"], dft_scan["qpoint"]
        curves["DFT harmonic ½λQ²"] = mirrored(dft_scan["harmonic_energy_eV"])
        markers["DFT (PBE)"] = "s"
        for name, model_dir in models.items():
            energies = np.array([o["energy"] for o in Potential(model_dir, dtype="float64").evaluate(structures)])
            curves[name] = energies - energies[len(amplitudes) // 2]
    else:
        from equitrain_jax.phonons.scans import default_amplitudes, imaginary_modes, scan_mode

        modes = imaginary_modes(reference)
        if not modes:
            return None
        mode = modes[0]
        frequency, qpoint = mode.frequency, mode.qpoint
        amplitudes = default_amplitudes(mode, max_displacement=0.15, npoints=15)
        curves["DFT harmonic ½λQ²"] = 0.5 * mode.eigenvalue * amplitudes**2
        for name, model_dir in models.items():
            curves[name] = scan_mode(reference, mode, Potential(model_dir, dtype="float64"), amplitudes)["energies"][0]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    for name, energies in curves.items():
        style = "k--" if "harmonic" in name else ("ks" if name in markers else "-o")
        ax.plot(amplitudes, 1e3 * np.asarray(energies), style, ms=3 if style == "-o" else 5, label=name)
    dft = curves.get("DFT (PBE)")
    if dft is not None:  # scaled to the double wells; DFT's harmonic parabola may leave the plot
        lowest = min(np.min(c) for name, c in curves.items() if "harmonic" not in name)
        ax.set_ylim(1e3 * lowest - 10, 1e3 * np.max(dft) + 40)
    ax.axhline(0, color="0.7", lw=0.5)
    ax.set_xlabel("Q (amu$^{1/2}$ Å)")
    ax.set_ylabel("E − E(0) (meV per cell)")
    ax.set_title(f"{title}: soft mode at q={np.round(qpoint, 3).tolist()}, DFT f = {frequency:.2f} THz", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    wells = {name: {"depth_meV": float(1e3 * np.min(c)), "Q_min": float(abs(amplitudes[int(np.argmin(c))]))}
             for name, c in curves.items()}
    return {"frequency_THz": frequency, "amplitudes": amplitudes.tolist(), "wells": wells,
            "energies_eV": {k: np.asarray(v).tolist() for k, v in curves.items()}}


def plot_learning_curves(results: list[dict], path: Path, metrics: dict[str, str]) -> None:
    """Phonon error against the number of training structures, one panel per material; the error
    is ``metrics[material]`` (mesh MAE, or Γ MAE where the reference is exact at Γ only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    materials = sorted({r["material"] for r in results})
    columns = min(3, len(materials))
    rows_of_panels = -(-len(materials) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4 * columns, 3.2 * rows_of_panels), squeeze=False)
    panels, spare = axes.flat[:len(materials)], axes.flat[len(materials):]
    for ax, material in zip(panels, materials):
        rows = [r for r in results if r["material"] == material]
        metric = metrics.get(material, "mesh_mae_THz")
        pretrained = [r for r in rows if r["strategy"] == "pretrained"]
        if pretrained:
            ax.axhline(pretrained[0][metric], color="k", ls="--", label="pretrained")
        summary = summarize(rows)
        for strategy in STRATEGIES:
            points = [(s["n_train"], s[metric], s.get(metric + "_std", 0.0)) for s in summary if s["strategy"] == strategy]
            if points:
                n, mean, std = map(np.array, zip(*sorted(points)))
                ax.errorbar(n, mean, yerr=std if np.any(std > 0) else None, fmt="-o", ms=3, capsize=2, label=strategy,
                            color=f"C{STRATEGIES.index(strategy)}")  # one colour per strategy in every panel
        ax.set_xscale("log")
        sizes = sorted({r["n_train"] for r in rows if r["n_train"]})
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_yscale("log")  # errors span two decades: fine-tuned ≈ 0.03 THz, from scratch ≈ 4 THz
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        low, high = ax.get_ylim()
        ax.yaxis.set_minor_formatter(  # under a decade there may be no major tick to label
            matplotlib.ticker.FormatStrFormatter("%g") if high / low < 10 else matplotlib.ticker.NullFormatter())
        ax.set_xlabel("training structures")
        ax.set_ylabel("phonon MAE at Γ (THz)" if metric == "gamma_mae_THz" else "phonon MAE on q-mesh (THz)")
        ax.set_title(material)
    entries = {}  # every label of every panel, once (panels may show different strategies)
    for ax in panels:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    order = ["pretrained", *STRATEGIES]
    entries = dict(sorted(entries.items(), key=lambda item: order.index(item[0])))
    if len(spare):  # the legend in the first empty panel, the rest blank
        spare[0].legend(entries.values(), entries.keys(), loc="center", fontsize=9)
        for ax in spare:
            ax.axis("off")
    else:
        panels[0].legend(entries.values(), entries.keys(), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


SUMMARY_METRICS = ("gamma_mae_THz", "gamma_lowest_THz", "band_mae_THz", "mesh_mae_THz", "max_frequency_error_THz",
                   "free_error", "entropy_error", "heat_error", "valid_force_mae_meV_per_A", "train_seconds",
                   "gamma_lo_THz", "gamma_to_THz", "mesh_mae_without_nac_THz")


def summarize(results: list[dict]) -> list[dict]:
    """One row per (material, strategy, N): the mean over its seeds, with ``<metric>_std`` (the
    sample standard deviation) and ``seeds`` (how many); rows without a seed (DFT, pretrained) as
    they are."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["material"], r["strategy"], r["n_train"]), []).append(r)
    summary = []
    for (material, strategy, n), rows in groups.items():
        entry = {"material": material, "strategy": strategy, "n_train": n, "seeds": len(rows)}
        for key in SUMMARY_METRICS:
            values = [r[key] for r in rows if r.get(key) is not None]
            if values:
                entry[key] = float(np.mean(values))
                entry[key + "_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def write_table(results: list[dict], path: Path) -> None:
    columns = [("material", "{}"), ("strategy", "{}"), ("n_train", "{}"), ("gamma_mae_THz", "{:.3f}"),
               ("gamma_lowest_THz", "{:+.2f}"), ("band_mae_THz", "{:.3f}"),
               ("mesh_mae_THz", "{:.3f}"), ("max_frequency_error_THz", "{:+.3f}"), ("free_error", "{:+.3f}"),
               ("entropy_error", "{:+.3f}"), ("heat_error", "{:+.3f}"), ("valid_force_mae_meV_per_A", "{:.1f}"),
               ("train_seconds", "{:.0f}")]
    header = ["material", "strategy", "N", "Γ MAE (THz)", "lowest Γ (THz)", "band MAE (THz)", "mesh MAE (THz)", "Δf_max (THz)",
              "ΔF 300 K (kJ/mol)", "ΔS (J/K/mol)", "ΔCv (J/K/mol)", "valid F MAE (meV/Å)", "train (s)"]
    if any(r.get("nac") for r in results):  # a reference with NAC: the LO at Γ, and the mesh MAE without NAC
        columns[7:7] = [("gamma_lo_THz", "{:.2f}"), ("gamma_to_THz", "{:.2f}"), ("mesh_mae_without_nac_THz", "{:.3f}")]
        header[7:7] = ["LO at Γ, NAC (THz)", "TO at Γ (THz)", "mesh MAE without NAC (THz)"]
    if any(r.get("seed") for r in results):  # several seeds: every run, then mean ± std per (material, strategy, N)
        columns.insert(3, ("seed", "{}"))
        header.insert(3, "seed")

    def markdown(rows, cell):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell(r, key, fmt) for key, fmt in columns) + " |" for r in rows]
        return "\n".join(lines) + "\n"

    text = markdown(results, lambda r, key, fmt: fmt.format(r[key]) if r.get(key) is not None else "–")
    if "seed" in header:
        columns[3], header[3] = ("seeds", "{}"), "seeds"

        def mean_std(r, key, fmt):
            if r.get(key) is None:
                return "–"
            spread = r.get(key + "_std")
            return fmt.format(r[key]) + (" ± " + fmt.format(spread).lstrip("+") if spread else "")

        text += "\nMean ± standard deviation over seeds:\n\n" + markdown(summarize(results), mean_std)
    path.write_text(text)


LABELS = {"lora": "LoRA", "delta": "L2-SP delta", "freeze": "freeze (readouts train)", "full": "full",
          "multihead": "multi-head replay", "scratch": "from scratch"}


def write_summary(results: list[dict], path: Path, metrics: dict[str, str]) -> None:
    """One compact table per material, a row per strategy with its sizes side by side
    ("N = 1 / 5 / 10", means over seeds, and the standard deviation of the phonon error the
    material is judged by): the form the README quotes.  A material judged at Γ (1×1×1
    reference) gets Γ columns instead of band and mesh ones."""
    rows = summarize(results)

    def number(value, decimals, signed):
        if value is None:
            return "–"
        value = value if round(value, decimals) else 0.0  # no "−0.00"
        text = f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
        return text.replace("-", "−")

    text = ""
    for material in dict.fromkeys(r["material"] for r in rows):
        if metrics.get(material) == "gamma_mae_THz":
            columns = [("Γ MAE (THz)", "gamma_mae_THz", 3, False), ("lowest Γ (THz)", "gamma_lowest_THz", 2, True)]
        else:
            columns = [("band MAE (THz)", "band_mae_THz", 3, False), ("mesh MAE (THz)", "mesh_mae_THz", 3, False),
                       ("Δf_max (THz)", "max_frequency_error_THz", 2, True), ("ΔF 300 K (kJ/mol)", "free_error", 2, True),
                       ("ΔCv (J/K/mol)", "heat_error", 2, True)]
        dft = next((r for r in results if r["material"] == material and r["strategy"] == "DFT reference"), {})
        if dft.get("nac"):
            columns[2:2] = [("LO at Γ (THz)", "gamma_lo_THz", 2, False), ("TO at Γ (THz)", "gamma_to_THz", 2, False),
                            ("mesh MAE without NAC (THz)", "mesh_mae_without_nac_THz", 3, False)]
        columns.append(("valid. F MAE (meV/Å)", "valid_force_mae_meV_per_A", 1, False))
        mine = [r for r in rows if r["material"] == material]
        seeds = max((r["seeds"] for r in mine if r["n_train"]), default=1)
        text += f"**{material}**" + (f" (means over {seeds} seeds)" if seeds > 1 else "")
        if dft.get("nac"):
            text += (f"; NAC on DFT and models alike, Z* and ε∞ from `{dft['nac']}`; DFT: LO at Γ "
                     f"{dft['gamma_lo_THz']:.2f} THz, TO {dft['gamma_to_THz']:.2f} THz")
        text += "\n\n"
        text += "| from the pretrained model | N | " + " | ".join(c[0] for c in columns) + " |\n"
        text += "|" + "---|" * (len(columns) + 2) + "\n"
        pretrained = next((r for r in mine if r["strategy"] == "pretrained"), None)
        if pretrained is not None:  # one value: a decimal more than the strategies' rows
            text += "| pretrained | 0 | " + " | ".join(
                number(pretrained.get(key), decimals + signed, signed) for _, key, decimals, signed in columns) + " |\n"
        for strategy in STRATEGIES:
            runs = sorted((r for r in mine if r["strategy"] == strategy), key=lambda r: r["n_train"])
            if runs:
                text += f"| {LABELS[strategy]} | {' / '.join(str(r['n_train']) for r in runs)} | " + " | ".join(
                    " / ".join(number(r.get(key), decimals, signed)
                               + (" ± " + number(r[key + "_std"], decimals, False)
                                  if key == metrics.get(material) and r.get(key + "_std") else "") for r in runs)
                    for _, key, decimals, signed in columns) + " |\n"
        text += "\n"
    path.write_text(text)


def judged_by(reference) -> str:
    """The phonon error a material's learning curve shows: a 1×1×1 reference (BaTiO3) has exact
    frequencies at Γ only, so it is judged there; the others on the q-mesh."""
    return "gamma_mae_THz" if np.allclose(reference.supercell_matrix, np.eye(3)) else "mesh_mae_THz"


def merge_earlier(path: Path, results: list[dict], scans: dict, materials: list[str], model_dir: Path, args) -> tuple[list, dict]:
    """This invocation's rows, plus those of other materials that an earlier invocation with the
    same model and settings wrote to ``path`` (so that ``--materials X`` adds X to the table)."""
    if not path.is_file():
        return results, scans
    earlier = json.loads(path.read_text())
    same = ((recorded_model(earlier["model"]), earlier["epochs"], earlier["learning_rate"], earlier.get("patience", PATIENCE))
            == (model_dir.resolve(), args.epochs, args.lr, args.patience))
    if not same:
        return results, scans
    kept = [r for r in earlier["rows"] if r["material"] not in materials]
    order = sorted({r["material"] for r in kept + results})
    rows = sorted(kept + results, key=lambda r: order.index(r["material"]))  # stable: keeps each material's order
    merged_scans = {m: v for m, v in earlier.get("imaginary_scans", {}).items() if m not in materials} | scans
    return rows, merged_scans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="converted model directory (default: SevenNet-0 from the sevenn package)")
    parser.add_argument("--materials", nargs="+", help="default: every material in benchmarks/data with complete data")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--sizes", nargs="+", default=["1", "5", "10", "all"], help="training-set sizes ('all' = every structure)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--patience", type=int, default=PATIENCE,
                        help="early stopping: epochs without a better validation loss (0: train every epoch)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="runs per strategy and size, seeds 0 … SEEDS−1 (initialisation, batch order and, "
                             "for seeds > 0, which structures); the table then also gives mean ± std")
    parser.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT))
    args = parser.parse_args()
    if args.patience < 0:
        raise SystemExit(f"--patience must be 0 (no early stopping) or positive, not {args.patience}")
    patience = args.patience or None

    from equitrain_jax.cli import enable_compilation_cache
    from equitrain_jax.phonons.compare import load_reference, phonopy_like_reference, reference_nac_source
    from equitrain_jax.phonons import gamma_frequencies
    from equitrain_jax.phonons.nac import gamma_limit_frequencies
    from equitrain_jax.phonons.plots import plot_band_structure_and_dos, plot_thermal_properties
    from equitrain_jax.potential import Potential
    from equitrain_jax.train import TrainConfig
    from equitrain_jax.train.finetune import finetune

    enable_compilation_cache()  # every run of a material compiles the same phonon programs
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model) if args.model else pretrained_model()
    materials = materials_with_data(args.materials)
    uncovered = uncovered_elements(model_dir, materials)
    if uncovered:  # before any training: named materials are refused, the default set skips them
        listing = "; ".join(f"{m} ({', '.join(e)})" for m, e in uncovered.items())
        if args.materials:
            raise SystemExit(f"{model_dir} has no parameters for the elements of {listing}; choose other --materials")
        print(f"skipped, {model_dir} has no parameters for their elements: {listing}")
        materials = [m for m in materials if m not in uncovered]
    if not materials:
        raise SystemExit("no material has complete data in benchmarks/data (run benchmarks/data/generate.py)"
                         + (" that the model covers" if uncovered else ""))
    started = time.perf_counter()
    results, scans, metrics = [], {}, {}
    for material in materials:
        reference = load_reference(DATA / material / "phonopy_params.yaml")  # with NAC from a BORN beside it (MgO)
        nac_file = reference_nac_source(DATA / material / "phonopy_params.yaml")
        nac = recorded_path(Path(nac_file)) if nac_file else None
        train_all = ase.io.read(DATA / material / "train.extxyz", ":")
        valid = ase.io.read(DATA / material / "valid.extxyz", ":")
        row, pretrained_phonon = evaluate_model(model_dir, reference, valid, nac)
        gamma_dft = gamma_frequencies(reference)
        results.append({"material": material, "strategy": "DFT reference", "n_train": None,
                        "gamma_lowest_THz": float(gamma_dft[0]), "nac": nac,
                        **({"gamma_to_THz": float(gamma_dft[-1]),
                            "gamma_lo_THz": float(gamma_limit_frequencies(reference, NAC_DIRECTION)[-1])} if nac else {})})
        results.append({"material": material, "strategy": "pretrained", "n_train": 0, **row})
        metrics[material] = judged_by(reference)
        print(f"{material}: pretrained mesh MAE {row['mesh_mae_THz']:.3f} THz", flush=True)
        phonons = {"DFT (PBE)": reference, "pretrained": pretrained_phonon}
        strategies = list(args.strategies)
        replay = replay_set(model_dir, material, materials) if "multihead" in strategies else []
        tuned_for_scan = {"pretrained": model_dir}
        for strategy in strategies:
            sizes = sorted({len(train_all) if size == "all" else min(int(size), len(train_all)) for size in args.sizes})
            for n, seed in ((n, seed) for n in sizes for seed in range(args.seeds)):
                run = output / "runs" / material / (f"{strategy}_{n}" + (f"_seed{seed}" if seed else ""))
                record = run / "result.json"
                keep = seed == 0 and n == sizes[-1]  # the runs drawn in the band and scan plots
                if record.is_file():  # finished before: its record (and, for the plotted runs, its phonons)
                    check_settings(run, model_dir, args.epochs, args.lr, patience)
                    entry = json.loads(record.read_text())
                    columns = ("gamma_mae_THz",) + (("gamma_lo_THz", "gamma_to_THz") if nac else ())
                    if any(c not in entry for c in columns) or entry.get("nac") != nac:  # from before those
                        entry.update(evaluate_model(run / "model", reference, valid, nac)[0])  # columns: again
                        record.write_text(json.dumps(entry, indent=1) + "\n")
                    results.append({"seed": seed, **entry})
                    if keep:
                        phonons[f"{strategy} (N={n})"] = phonopy_like_reference(Potential(run / "model", dtype="float64"), reference)
                        tuned_for_scan[f"{strategy} (N={n})"] = run / "model"
                    continue
                train = [train_all[i] for i in training_indices(len(train_all), n, seed)]
                start = time.perf_counter()
                finetune(
                    model_dir, train, valid, run, strategy=strategy, e0s="refit",
                    train_config=TrainConfig(epochs=args.epochs, learning_rate=args.lr, schedule="plateau",
                                             ema_decay=0.99, early_stopping_patience=patience, seed=seed),
                    batch_size=min(4, n), dtype="float32", replay=replay if strategy == "multihead" else (),
                    progress=False,
                )
                seconds = time.perf_counter() - start
                row, phonon = evaluate_model(run / "model", reference, valid, nac)
                entry = {"material": material, "strategy": strategy, "n_train": n, "seed": seed,
                         "train_indices": training_indices(len(train_all), n, seed),
                         "train_seconds": seconds, **row}
                record.write_text(json.dumps(entry, indent=1) + "\n")
                results.append(entry)
                print(f"{material} {strategy:9s} N={n:2d} seed {seed}: mesh MAE {row['mesh_mae_THz']:.3f} THz, "
                      f"Γ MAE {row['gamma_mae_THz']:.3f} THz, valid F MAE {row['valid_force_mae_meV_per_A']:.1f} meV/Å "
                      f"({seconds:.0f} s)", flush=True)
                if keep:
                    phonons[f"{strategy} (N={n})"] = phonon
                    tuned_for_scan[f"{strategy} (N={n})"] = run / "model"
        overlay = {k: v for k, v in phonons.items() if k in ("DFT (PBE)", "pretrained") or k.startswith(("lora", "full", "multihead"))}
        title = f"{material}: DFT vs models" + (f" (Z*, ε∞ from {nac})" if nac else "")
        plot_band_structure_and_dos(overlay, output / f"bands_{material}.png", title=title)
        plot_thermal_properties(overlay, output / f"thermal_{material}.png", title=f"{material}: DFT vs models")
        scan_file = DATA / material / "mode_scan.json"
        dft_scan = json.loads(scan_file.read_text()) if scan_file.is_file() else None
        scan = imaginary_scan(reference, tuned_for_scan, output / f"imaginary_scan_{material}.png", material, dft_scan)
        if scan is not None:
            scans[material] = scan
    elapsed = time.perf_counter() - started
    results, scans = merge_earlier(output / "results.json", results, scans, materials, model_dir, args)
    for material in {r["material"] for r in results} - set(metrics):
        metrics[material] = judged_by(load_reference(DATA / material / "phonopy_params.yaml"))
    (output / "results.json").write_text(json.dumps(
        {"model": recorded_path(model_dir), "epochs": args.epochs, "learning_rate": args.lr, "patience": args.patience, "rows": results,
         "imaginary_scans": scans, "wall_seconds": elapsed}, indent=1) + "\n")
    write_table(results, output / "table.md")
    write_summary(results, output / "summary.md", metrics)
    plot_learning_curves(results, output / "learning_curves.png", metrics)
    print((output / "table.md").read_text())
    print(f"wrote {output} in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
