"""What the Hessian term costs: time per jitted training step with and without it, in one run.

    python benchmarks/hessian_step.py                          # SevenNet-0 and MACE-MP-0 small (random weights)
    python benchmarks/hessian_step.py --models mace-small --directions 1 4 --repeats 3
    python benchmarks/hessian_step.py --models sevennet-0 --compile-only   # XLA temporaries only

The step is the one fine-tuning compiles (`equitrain_jax.train.step.make_train_step`: LoRA rank 4,
AdamW, float32).  Without the Hessian term it trains on a batch of 4 diamond-C structures of 16
atoms with DFT energies and forces (``benchmarks/data/C/train.extxyz``); with it, the same batch
plus one phonon item, a 64-atom diamond-C supercell (2×2×2 conventional), with K random
directions (K = 1, 4, 16 by default): K Hessian-vector products (forward over reverse) inside the
reverse pass of the loss.  Its targets are zero: the cost does not depend on their values.
Both ways of computing the K products are measured (``--paths``): ``vmap`` (all at once,
``HessianLossConfig(sequential=False)``) and ``sequential`` (one after another, each rematerialised
in the reverse pass: the default of `HessianLossConfig` since 2026-11-30).  With ``--third-order K …``
the step with the third-order term instead (issue 20: the same batch plus the 64-atom supercell as a
phono3py item, K random direction pairs, each Φ3[u, v] one jvp of a Hessian-vector product inside
the reverse pass; zero fc3 targets) is measured too, under the same ``--paths``
(``ThirdOrderLossConfig.sequential``; rows ``third-order-vmap``, ``third-order-sequential``),
against the same step without any extra term.

Per model and K: compilation (lowering and compiling, s), the median wall time of --repeats steps
after one warm-up step (s), its ratio to the step without the Hessian term, and XLA's temporary buffer size of the
compiled step (MB, ``memory_analysis``; parameters and inputs not included).  A step whose
temporaries exceed --max-temp-mb (default 4000: the benchmark machine is shared) is compiled and
sized but not run; with --compile-only no step is run.  SevenNet-0 comes
from the installed ``sevenn`` wheel; the MACE is the MACE-MP-0 "small" architecture (128 channels,
L = 0) with random weights (no foundation weights offline): its cost, not its accuracy, matters.
Writes ``benchmarks/results/hessian_step/results.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from timing import median_time

DATA = Path(__file__).parent / "data" / "C"
OUTPUT = Path(__file__).parent / "results" / "hessian_step"
MODELS = ("sevennet-0", "mace-small")


def model_directory(name: str, scratch: Path) -> Path:
    """A converted model directory: SevenNet-0 (as benchmarks/phonon_finetune.py keeps it) or a
    random-weight MACE-MP-0 small for carbon."""
    if name == "sevennet-0":
        from phonon_finetune import pretrained_model

        return pretrained_model()
    from equitrain_jax.convert import convert_module
    from equitrain_jax.convert.architectures import build_mace_torch

    target = scratch / name
    convert_module(build_mace_torch("mp0a-small", atomic_numbers=(6,), dtype="float32", seed=0), target)
    return target


def phonon_item_64():
    """A 64-atom diamond-C phonon item (2×2×2 conventional supercell, a = 3.567 Å) with zero force
    constants."""
    from ase.build import bulk
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    from equitrain_jax.train.phonon_data import phonon_item_from_phonopy

    unit = bulk("C", "diamond", a=3.567, cubic=True)
    phonon = Phonopy(PhonopyAtoms(symbols=unit.get_chemical_symbols(), cell=unit.cell.array,
                                  scaled_positions=unit.get_scaled_positions()), supercell_matrix=np.diag([2, 2, 2]),
                      primitive_matrix="auto")
    phonon.force_constants = np.zeros((64, 64, 3, 3))
    return phonon_item_from_phonopy(phonon, "diamond C, 64 atoms, zero force constants")


def third_order_item_64(phonon_item):
    """The same 64-atom supercell as a phono3py item with zero fc3 and fc2 (the cost does not depend on them)."""
    from equitrain_jax.train.third_order_data import ThirdOrderItem

    n = len(phonon_item.supercell)
    zeros = np.zeros((1, n, 3))
    return ThirdOrderItem(phonon_item.supercell, np.zeros((n, n, n, 3, 3, 3)), np.zeros((n, 3, n, 3)), zeros, zeros,
                          np.zeros((1, 2, n, 3)), "diamond C, 64 atoms, zero force constants")


def measure(name: str, directions: list[int], paths: list[str], repeats: int, max_temp_mb: float,
            scratch: Path, third_order: list[int] = ()) -> list[dict]:
    import ase.io
    import jax

    from equitrain_jax.models.io import load_model
    from equitrain_jax.train.config import FinetuneConfig, HessianLossConfig, LossConfig, ThirdOrderLossConfig
    from equitrain_jax.train.data import LabelKeys, labelled_batches
    from equitrain_jax.train.loop import adamw
    from equitrain_jax.train.phonon_data import PhononBatches, phonon_graph
    from equitrain_jax.train.step import StepBatch, make_train_step
    from equitrain_jax.train.third_order import ThirdOrderBatches
    from equitrain_jax.train.strategies import StrategyInputs, build_strategy
    from equitrain_jax.adapters.freeze import masked_optimizer
    from equitrain_jax.data import device_arrays

    bundle = load_model(model_directory(name, scratch))
    config, dtype = FinetuneConfig(strategy="lora"), np.float32
    cutoff, elements = bundle.config.r_max, bundle.config.atomic_numbers
    keys = LabelKeys("energy", "forces", None)
    structures = labelled_batches(ase.io.read(DATA / "train.extxyz", ":4"), cutoff, elements, config.batch_size,
                                  keys, 0, dtype)[0]
    item = phonon_item_64()
    graph = phonon_graph(item, cutoff, elements)
    variables = device_arrays(bundle.variables, dtype)
    strategy = build_strategy(StrategyInputs(variables, bundle.config, structures, jax.random.PRNGKey(0), dtype), config)
    optimizer = adamw(1e-3, 0.0, 10.0)
    if strategy.labels is not None:
        optimizer = masked_optimizer(optimizer, strategy.labels)
    module = bundle.module(dtype)
    rows = []
    third = third_order_item_64(item)
    cases = [(0, "vmap"), *((k, path) for k in directions for path in paths),
             *((k, f"third-order-{path}") for k in third_order for path in paths)]
    for k, path in cases:
        sequential = path.endswith("sequential")
        hessian = HessianLossConfig(directions=max(k, 1), sequential=sequential)
        step = make_train_step(module, strategy.merge, optimizer, LossConfig(), hessian_config=hessian,
                               third_order_config=ThirdOrderLossConfig(directions=max(k, 1), sequential=sequential))
        if path.startswith("third-order"):
            pairs = ThirdOrderBatches([third], [graph], 1, k, "random", 0, 1, dtype).batch(0, 1, 0)
            batch = StepBatch(structures, None, pairs)
        else:
            phonons = PhononBatches([item], [graph], 1, max(k, 1), "random", 0, 1, dtype).batch(0, 1, 0) if k else None
            batch = StepBatch(structures, phonons)
        trainable = jax.device_put(strategy.trainable)
        state = optimizer.init(trainable)
        start = time.perf_counter()
        compiled = step.compiled.lower(trainable, strategy.frozen, state, batch, 1.0).compile()
        compile_s = time.perf_counter() - start

        def run():
            return jax.block_until_ready(compiled(trainable, strategy.frozen, state, batch, 1.0))

        temp_mb = compiled.memory_analysis().temp_size_in_bytes / 2**20
        seconds = None
        if temp_mb <= max_temp_mb:
            run()  # warm-up
            seconds = median_time(run, repeats)
        rows.append({"model": name, "directions": k, "path": path if k else "none", "compile_s": compile_s,
                     "step_s": seconds, "temp_mb": temp_mb})
        timed = f"step {seconds:8.3f} s" if seconds is not None else f"not run (over --max-temp-mb {max_temp_mb:.0f})"
        print(f"{name:12s} K={k:2d} {path:22s}  compile {compile_s:7.1f} s  {timed}  temp {temp_mb:.1f} MB", flush=True)
    base = rows[0]["step_s"]
    for row in rows:
        row["ratio"] = None if row["step_s"] is None or base is None else row["step_s"] / base
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--directions", nargs="*", type=int, default=[1, 4, 16])
    parser.add_argument("--paths", nargs="+", choices=("vmap", "sequential"), default=["vmap", "sequential"],
                        help="how the K products are computed (HessianLossConfig.sequential)")
    parser.add_argument("--third-order", nargs="*", type=int, default=[],
                        help="also the step with the third-order term, K direction pairs (issue 20)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile-only", action="store_true", help="size every step, run none")
    parser.add_argument("--max-temp-mb", type=float, default=4000.0,
                        help="compile, but do not run, a step whose XLA temporaries exceed this (MB)")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models:
            rows += measure(name, args.directions, args.paths, args.repeats,
                            0.0 if args.compile_only else args.max_temp_mb, Path(scratch), args.third_order)
    print("\n| model | K | products | compile (s) | step (s, median) | ratio to no Hessian term | XLA temp (MB) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        step = "not run" if row["step_s"] is None else f"{row['step_s']:.3f}"
        ratio = "–" if row["ratio"] is None else f"{row['ratio']:.2f}"
        print(f"| {row['model']} | {row['directions'] or 'none'} | {row['path']} | {row['compile_s']:.1f} | {step} | "
              f"{ratio} | {row['temp_mb']:.0f} |")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps({
        "date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats, "max_temp_mb": args.max_temp_mb, "compile_only": args.compile_only, "rows": rows,
    }, indent=1))


if __name__ == "__main__":
    main()
