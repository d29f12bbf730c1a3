"""Does Hessian supervision improve phonons where there was no phonon data?  SevenNet-0 fine-tuned
(LoRA by default) under five protocols, judged only on data that training did not see.

    python benchmarks/phonon_transfer.py                          # C and Si, seeds 0 1 2, 4 epochs, K = 2
    python benchmarks/phonon_transfer.py --materials C --seeds 0  # a smaller run
    python benchmarks/phonon_transfer.py --report                 # tables and plots of the runs done so far
    python benchmarks/phonon_transfer.py --strategy full          # the same protocols, full fine-tuning

Protocols, per material (GPAW PBE data in ``benchmarks/data/<material>``):

- ``a``: energies, forces and stress of the 10 training structures (the protocol of
  ``benchmarks/phonon_finetune.py``: E0s refitted, AdamW 2e-3 with reduce-on-plateau, EMA 0.99,
  batches of 4, float32, the best epoch on the 4 validation structures' loss);
- ``b``: as ``a`` with phonopy's displaced supercells of the 2×2×2 reference added as ordinary
  energy/force/stress structures;
- ``c``: the Hessian term of the same phonopy reference alone (no structures; foundation E0s;
  the best epoch on the training reference's Hessian term, as ``finetune --phonons`` does
  without validation data);
- ``d``: ``a`` + ``c`` in one step (the best epoch on the validation structures, as ``a``);
- ``loo``: leave one material out: the Hessian term of the 2×2×2 references of the other
  materials with data (Al, C, MgO, Si), nothing of the held-out one; judged on the held-out one.

Comparable compute: every protocol takes ``--epochs`` epochs of 3 steps (10 or 11 structures in
batches of 4; ``c``: its reference three times in an epoch, one a step; ``loo``: one of the three
other references a step), and every step of ``c``, ``d`` and ``loo`` holds the Hessian term
(weight 1, Huber δ 0.1 eV/Å², ``--directions`` random directions per reference).  ``c`` and
``loo`` choose their best epoch by their training references' Hessian term and phonon error,
computed once an epoch (what ``finetune --phonons`` does without validation structures).

Judged on what training did not see: the force MAE of the 4 validation structures; phonons at
−3 % and +3 % volume (GPAW 2×2×2 references in ``volumes/v0.970`` and ``volumes/v1.030``);
mode Grüneisen parameters from the three volumes against DFT's (phonopy's perturbation formula,
8×8×8 Γ-centred mesh, modes above 0.5 THz); phonons of the 3×3×3 reference
(``phonon_333/phonopy_params.yaml``) where it exists; for BaTiO3, which has no references at
other volumes, the DFT energies along its soft Γ mode (``mode_scan.json``, ±Q, 15 points): their
RMS error and the double well's depth.  Phonons at the training volume are reported too:
in-sample for ``b``, ``c`` and ``d``, out of sample for ``a`` and ``loo``.

``--strategy`` chooses the adapter (``lora``, rank 4, the default; ``delta``: L2-SP residuals;
``full``), with the same learning rate and schedule; every strategy's runs are kept apart and
reported side by side.

Finished runs (``runs/<material>/<protocol>_seed<S>/result.json`` for LoRA,
``<protocol>-<strategy>_seed<S>`` for the others; not committed, but restored from the committed
``results.json`` where missing, so a fresh clone continues the table) are reused (and
judged again once a 3×3×3 reference they were not judged on exists) and interrupted ones resumed,
so the command can be repeated until everything is done; it writes ``results.json``, ``table.md``
and ``errors.png`` into ``benchmarks/results/phonon_transfer`` after every run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
from phonon_finetune import DATA, force_mae, pretrained_model, scan_structures

OUTPUT = Path(__file__).parent / "results" / "phonon_transfer"
PROTOCOLS = ("a", "c", "d", "loo", "b")  # the order they run in
PROTOCOL_LABELS = {"a": "(a) E/F", "b": "(b) E/F + displaced cells", "c": "(c) Hessian", "d": "(d) E/F + Hessian",
                   "loo": "leave-one-out Hessian"}
STRATEGIES = ("lora", "delta", "full")
STRATEGY_LABELS = {"lora": "LoRA", "delta": "L2-SP delta", "full": "full"}
PHONON_MATERIALS = ("Al", "C", "MgO", "Si")  # the 2×2×2 references a leave-one-out run trains on
VOLUMES = {"v0.970": "volumes/v0.970/phonopy_params.yaml", "v1.000": "phonopy_params.yaml",
           "v1.030": "volumes/v1.030/phonopy_params.yaml"}
LARGE = "phonon_333/phonopy_params.yaml"
GRUNEISEN_MESH = (8, 8, 8)
BATCH_SIZE = 4
STEPS_PER_EPOCH = 3  # 10 training structures in batches of 4 (b: 11)


def displaced_structures(material: str) -> list[ase.Atoms]:
    """Phonopy's displaced supercells of the material's 2×2×2 reference with their GPAW energy
    (eV), forces (eV/Å) and stress (eV/Å³), as ordinary training structures."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from equitrain_jax.phonons.compare import load_reference

    supercell = load_reference(DATA / material / "phonopy_params.yaml").supercell
    structures = []
    for path in sorted((DATA / material / "phonon").glob("displacement_*.json")):
        record = json.loads(path.read_text())
        atoms = ase.Atoms(numbers=supercell.numbers, positions=record["positions"], cell=supercell.cell, pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=record["free_energy"], forces=np.asarray(record["forces"]),
                                           stress=np.asarray(record["stress"]))
        structures.append(atoms)
    return structures


def references(material: str) -> dict:
    """The material's DFT phonopy references that exist, by name (volumes, and ``333``)."""
    from equitrain_jax.phonons.compare import load_reference

    found = {name: load_reference(DATA / material / path) for name, path in VOLUMES.items()
             if (DATA / material / path).is_file()}
    if (DATA / material / LARGE).is_file():
        found["333"] = load_reference(DATA / material / LARGE)
    return found


def run_name(protocol: str, adapter: str) -> str:
    """A run's directory name under ``runs/<material>/`` (before ``_seed<S>``)."""
    return protocol if adapter == "lora" or protocol == "pretrained" else f"{protocol}-{adapter}"


def restore_runs(output: Path) -> int:
    """Write ``runs/<material>/<name>_seed<S>/result.json`` for every row of the committed
    ``results.json`` whose file is missing (the runs are not committed; the rows are), so that
    the next report keeps them and the jobs skip them.  Returns how many were restored."""
    path = output / "results.json"
    if not path.is_file():
        return 0
    restored = 0
    for row in json.loads(path.read_text())["rows"]:
        run = output / "runs" / row["material"] / f"{run_name(row['protocol'], strategy(row))}_seed{row['seed']}"
        if not (run / "result.json").is_file():
            run.mkdir(parents=True, exist_ok=True)
            (run / "result.json").write_text(json.dumps(row, indent=1) + "\n")
            restored += 1
    return restored


def mode_scan_error(potential, material: str) -> dict | None:
    """The model's energies along the material's DFT soft-mode scan (``mode_scan.json``, from
    ``generate.py``: structures displaced by ±Q along the soft Γ mode), against DFT's: the RMS
    difference of the energies relative to Q = 0 (meV per cell, all 15 points) and the double
    well's depth (the lowest energy, meV per cell), DFT's and the model's.  None without a scan."""
    path = DATA / material / "mode_scan.json"
    if not path.is_file():
        return None
    amplitudes, structures, dft = scan_structures(json.loads(path.read_text()))
    energies = np.array([out["energy"] for out in potential.evaluate(structures)])
    energies = energies - energies[len(amplitudes) // 2]
    return {"rmse_meV": float(1e3 * np.sqrt(np.mean((energies - dft) ** 2))),
            "depth_meV": float(1e3 * energies.min()), "reference_depth_meV": float(1e3 * dft.min())}


def evaluate(model_dir: Path, material: str) -> dict:
    """Force MAE (meV/Å) on the validation structures; per reference the band-path RMS and MAE and
    the mesh MAE (THz); mode Grüneisen parameters' MAE against DFT's and their means; the
    soft-mode scan's error where there is one (`mode_scan_error`)."""
    from equitrain_jax.phonons.compare import (
        compare_phonons,
        mesh_qpoints,
        phonopy_like_reference,
    )
    from equitrain_jax.phonons.gruneisen import gruneisen_error, mode_gruneisen
    from equitrain_jax.potential import Potential

    potential = Potential(model_dir, dtype="float64")
    valid = ase.io.read(DATA / material / "valid.extxyz", ":")
    row = {"valid_force_mae_meV_per_A": force_mae(potential, valid)}
    models, dft = {}, references(material)
    for name, reference in dft.items():
        models[name] = phonopy_like_reference(potential, reference)
        comparison = compare_phonons(models[name], reference)
        row[name] = {"band_rmse_THz": comparison["band_path"]["rmse_THz"],
                     "band_mae_THz": comparison["band_path"]["mae_THz"],
                     "mesh_mae_THz": comparison["mesh"]["mae_THz"]}
    if all(name in dft for name in VOLUMES):
        qpoints = mesh_qpoints(GRUNEISEN_MESH)
        series = [[phonons[name] for name in VOLUMES] for phonons in (models, dft)]
        error = gruneisen_error(mode_gruneisen(series[0], 1, qpoints), mode_gruneisen(series[1], 1, qpoints))
        row["gruneisen"] = {key: error[key] for key in ("mae", "model_mean", "reference_mean")}
    scan = mode_scan_error(potential, material)
    if scan is not None:
        row["mode_scan"] = scan
    return row


def run_one(model_dir: Path, material: str, protocol: str, seed: int, args, run: Path) -> dict:
    """Fine-tune one protocol for one seed into ``run`` (resuming it if interrupted), evaluate it."""
    from equitrain_jax.train import TrainConfig
    from equitrain_jax.train.config import HessianLossConfig
    from equitrain_jax.train.finetune import finetune, phonon_references

    data = DATA / material
    train = ase.io.read(data / "train.extxyz", ":") if protocol in ("a", "b", "d") else []
    if protocol == "b":
        train = train + displaced_structures(material)
    valid = ase.io.read(data / "valid.extxyz", ":") if train else []
    phonons, valid_phonons, phonon_batch_size = [], [], BATCH_SIZE
    if protocol == "d":
        phonons = phonon_references([data / "phonopy_params.yaml"])
    elif protocol == "c":  # one reference per step, STEPS_PER_EPOCH steps: the schedule of a and d
        valid_phonons = phonon_references([data / "phonopy_params.yaml"])
        phonons, phonon_batch_size = valid_phonons * STEPS_PER_EPOCH, 1
    elif protocol == "loo":  # one of the other materials' references per step
        valid_phonons = phonon_references([DATA / m / "phonopy_params.yaml" for m in PHONON_MATERIALS if m != material])
        phonons, phonon_batch_size = valid_phonons, 1
    resume = (run / "checkpoints" / "last").is_dir()
    start = time.perf_counter()
    result = finetune(
        model_dir, train, valid, run, strategy=args.strategy, e0s="refit" if train else "foundation", batch_size=BATCH_SIZE,
        phonon_batch_size=phonon_batch_size, dtype="float32",
        train_config=TrainConfig(epochs=args.epochs, learning_rate=args.lr, schedule="plateau", ema_decay=0.99,
                                 early_stopping_patience=15, seed=seed),
        phonons=phonons, valid_phonons=valid_phonons, hessian_config=HessianLossConfig(directions=args.directions),
        progress=False, resume=resume, overwrite=run.exists() and not resume,  # a failed start restarts
    )
    seconds = time.perf_counter() - start
    best = min(range(len(result.history)), key=lambda i: result.history[i]["valid_loss"])
    return {"material": material, "protocol": protocol, "strategy": args.strategy, "seed": seed, "epochs": args.epochs,
            "epochs_run": len(result.history) - 1, "best_epoch": best, "train_seconds": seconds,
            **evaluate(run / "model", material)}


# ---------------------------------------------------------------------------- tables and plots

METRICS = (  # (column, row path, format)
    ("valid F MAE (meV/Å)", ("valid_force_mae_meV_per_A",), "{:.1f}"),
    ("mesh MAE −3 % (THz)", ("v0.970", "mesh_mae_THz"), "{:.3f}"),
    ("mesh MAE +3 % (THz)", ("v1.030", "mesh_mae_THz"), "{:.3f}"),
    ("band RMS −3 % (THz)", ("v0.970", "band_rmse_THz"), "{:.3f}"),
    ("band RMS +3 % (THz)", ("v1.030", "band_rmse_THz"), "{:.3f}"),
    ("γ MAE", ("gruneisen", "mae"), "{:.3f}"),
    ("mean γ", ("gruneisen", "model_mean"), "{:.3f}"),
    ("mesh MAE 3×3×3 (THz)", ("333", "mesh_mae_THz"), "{:.3f}"),
    ("mesh MAE training volume (THz)", ("v1.000", "mesh_mae_THz"), "{:.3f}"),
    ("soft-mode scan RMS (meV/cell)", ("mode_scan", "rmse_meV"), "{:.1f}"),
    ("well depth (meV/cell)", ("mode_scan", "depth_meV"), "{:.1f}"),
)


def value(row: dict, path: tuple) -> float:
    for key in path:
        if not isinstance(row, dict) or key not in row:
            return float("nan")
        row = row[key]
    return float(row)


def strategy(row: dict) -> str:
    """The row's adapter (rows written before ``--strategy`` existed are LoRA's)."""
    return row.get("strategy", "lora")


def adapters(rows: list[dict]) -> list[str]:
    """The adapters the fine-tuned rows used, in the order of `STRATEGIES`."""
    return sorted({strategy(r) for r in rows if r["protocol"] != "pretrained"}, key=STRATEGIES.index)


def grouped(rows: list[dict]) -> dict:
    """Rows by (material, protocol, strategy), in the order of `PROTOCOLS` (the pretrained model
    first), each protocol's strategies in the order of `STRATEGIES`."""
    groups: dict = {}
    order = {name: i for i, name in enumerate(("pretrained", *PROTOCOLS))}
    for row in sorted(rows, key=lambda r: (r["material"], order[r["protocol"]], STRATEGIES.index(strategy(r)), r["seed"])):
        groups.setdefault((row["material"], row["protocol"], strategy(row)), []).append(row)
    return groups


def label(protocol: str, adapter: str, several: bool) -> str:
    """The table's name of a protocol under an adapter (the adapter named where several ran)."""
    if protocol == "pretrained":
        return "pretrained SevenNet-0"
    return f"{PROTOCOL_LABELS[protocol]}, {STRATEGY_LABELS[adapter]}" if several else PROTOCOL_LABELS[protocol]


def mean_std(values: list[float], fmt: str) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(np.mean(values))} ± {fmt.format(np.std(values, ddof=1))}"


def write_table(rows: list[dict], references_seen: dict, path: Path) -> str:
    header = ["material", "protocol", "seeds"] + [m[0] for m in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    several = len(adapters(rows)) > 1
    for (material, protocol, adapter), group in grouped(rows).items():
        cells = [material, label(protocol, adapter, several), str(len(group)) if protocol != "pretrained" else "–"]
        cells += [mean_std([value(r, m[1]) for r in group], m[2]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    dft = [f"{material}: DFT mean γ {references_seen[material]:.3f}" for material in sorted(references_seen)]
    text = "\n".join(lines) + "\n\nMean ± sample standard deviation over seeds. " + "; ".join(dft) + ".\n"
    path.write_text(text)
    return text


HATCHES = {"lora": "", "delta": "//", "full": ".."}
TICK_SUFFIXES = {"lora": "", "delta": "/L2SP", "full": "/full"}


def tick(protocol: str, adapter: str) -> str:
    """A bar's short name: the protocol, with the adapter unless LoRA."""
    return ("pre" if protocol == "pretrained" else protocol) + TICK_SUFFIXES[adapter]


def plot(rows: list[dict], path: Path) -> None:
    """Per material, bars of the held-out errors by protocol (mean over seeds) with each seed as a
    dot; each material's row shows only the metrics it has a reference for (BaTiO3: its soft-mode
    scan, no other volumes; MgO: no 3×3×3 cell)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = grouped(rows)
    candidates = [METRICS[i] for i in (0, 1, 2, 5, 7, 9)]
    materials = sorted({m for m, _, _ in groups})
    shown = {material: [metric for metric in candidates  # the metrics this material has a reference for
                        if any(not math.isnan(value(r, metric[1])) for r in rows if r["material"] == material)]
             for material in materials}
    columns = max(len(metrics) for metrics in shown.values())
    colours = {name: f"C{i}" for i, name in enumerate(("pretrained", *PROTOCOLS))}
    fig, axes = plt.subplots(len(materials), columns, figsize=(3.2 * columns, 2.8 * len(materials)), squeeze=False)
    for i, material in enumerate(materials):
        protocols = [(p, a) for m, p, a in groups if m == material]
        for j in range(len(shown[material]), columns):
            axes[i, j].set_visible(False)
        for j, (title, key, _) in enumerate(shown[material]):
            ax = axes[i, j]
            for x, (protocol, adapter) in enumerate(protocols):
                values = [value(r, key) for r in groups[(material, protocol, adapter)]]
                if all(math.isnan(v) for v in values):
                    continue
                ax.bar(x, np.nanmean(values), color=colours[protocol], alpha=0.8, hatch=HATCHES[adapter])
                ax.plot([x] * len(values), values, "k.", markersize=4)
            ax.set_xticks(range(len(protocols)), [tick(p, a) for p, a in protocols], fontsize=7, rotation=90)
            ax.set_title(f"{material}: {title}", fontsize=9)
    names = " / ".join(STRATEGY_LABELS[a] for a in adapters(rows))
    fig.suptitle(f"SevenNet-0 + {names}: errors on data training did not see (bars: mean over seeds, dots: seeds; "
                 "2026-11-30/12-01, 2-core AMD EPYC)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(output: Path, args) -> None:
    rows = [json.loads(p.read_text()) for p in sorted((output / "runs").glob("*/*/result.json"))]
    if not rows:
        print("no finished runs yet")
        return
    references_seen = {r["material"]: r["gruneisen"]["reference_mean"] for r in rows if "gruneisen" in r}
    print(write_table(rows, references_seen, output / "table.md"))
    plot(rows, output / "errors.png")
    (output / "results.json").write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, 2-core AMD EPYC (shared)",
        "model": "SevenNet-0", "strategies": adapters(rows), "epochs": args.epochs, "directions": args.directions,
        "learning_rate": args.lr, "rows": rows}, indent=1) + "\n")


def job_order(args) -> list[tuple[str, str, int]]:
    """(material, protocol, seed) in the order they run, what matters most first: the pretrained
    model (once: ``pretrained_seed0``, whatever ``--seeds`` says), the first seed of every
    protocol, then the further seeds (``--single-seed-protocols``, by default ``b`` and ``loo``:
    the first seed only)."""
    first, rest = args.seeds[0], args.seeds[1:]
    jobs = [(material, "pretrained", 0) for material in args.materials]  # once, whatever the seeds
    jobs += [(material, protocol, first) for material in args.materials for protocol in args.protocols]
    jobs += [(material, protocol, seed) for material in args.materials for seed in rest for protocol in args.protocols
             if protocol not in args.single_seed_protocols]
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--materials", nargs="+", default=["C", "Si"])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of a, c and d")
    parser.add_argument("--single-seed-protocols", nargs="*", default=["b", "loo"],
                        help="protocols run with the first seed only")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of 3 steps, every protocol")
    parser.add_argument("--directions", type=int, default=2, help="K random directions per reference and step")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--strategy", default="lora", choices=STRATEGIES,
                        help="the adapter of every protocol (LoRA rank 4, L2-SP delta, or full)")
    parser.add_argument("--report", action="store_true", help="only write the tables and plots of finished runs")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    restored = restore_runs(args.output)
    if restored:
        print(f"restored {restored} finished runs' results from {args.output / 'results.json'}", flush=True)
    if args.report:
        report(args.output, args)
        return

    import jax

    jax.config.update("jax_compilation_cache_dir", str(args.output / "runs" / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    model_dir = pretrained_model()
    jobs = job_order(args)
    for material, protocol, seed in jobs:
        name = run_name(protocol, args.strategy)
        run = args.output / "runs" / material / f"{name}_seed{seed}"
        if (run / "result.json").is_file():
            row = json.loads((run / "result.json").read_text())
            model = model_dir if protocol == "pretrained" else run / "model"
            if "333" not in row and (DATA / material / LARGE).is_file() and model.is_dir():
                print(f"{material} {name} seed {seed}: judged again, on the 3×3×3 reference written since",
                      flush=True)  # the whole judgement again: the same model gives the same other numbers
                row.update(evaluate(model, material))
                (run / "result.json").write_text(json.dumps(row, indent=1) + "\n")
                report(args.output, args)
            continue
        print(f"{material} {name} seed {seed} ...", flush=True)
        start = time.perf_counter()
        if protocol == "pretrained":
            run.mkdir(parents=True, exist_ok=True)
            row = {"material": material, "protocol": protocol, "seed": 0, **evaluate(model_dir, material)}
        else:
            row = run_one(model_dir, material, protocol, seed, args, run)
        (run / "result.json").write_text(json.dumps(row, indent=1) + "\n")
        print(f"  {time.perf_counter() - start:.0f} s: valid F {row['valid_force_mae_meV_per_A']:.1f} meV/Å, "
              f"mesh MAE −3 % {value(row, ('v0.970', 'mesh_mae_THz')):.3f} THz, "
              f"γ MAE {value(row, ('gruneisen', 'mae')):.3f}", flush=True)
        report(args.output, args)


if __name__ == "__main__":
    main()
