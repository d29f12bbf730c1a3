"""Fine-tuning steps: equitrain-jax against mace-torch's own training step, same model, data and settings.

Both sides train the MACE-MP-0 medium architecture (128x0e+128x1o, 89 elements, random weights
from `equitrain_jax.convert.architectures.build_mace_torch`, converted for JAX) on the same
DFT-labelled structures (benchmarks/data/<material>/train.extxyz, in file order), in batches of
the same structures, with the same loss and optimiser:

  loss       Huber (δ = 0.01) of energy per atom, force and stress components, weights 10 / 100 / 1000
             (ours: `train.LossConfig()`; mace-torch: ``--loss huber``, its
             ``WeightedHuberEnergyForcesStressLoss``, built by its ``get_loss_fn``)
  optimiser  AdamW, lr 1e-3, β = (0.9, 0.999), no weight decay, no AMSGrad, gradient norm clipped
             to 10 (ours: `train.adamw`; mace-torch: ``--optimizer adamw`` through its
             ``get_params_options`` / ``get_optimizer``, ``--clip_grad 10``, ``amsgrad`` switched off
             as ours has none; its parser's default is on)
  strategies full (every weight) and LoRA rank 4: ours `train.strategies` ("lora": factors on the
             interaction, product and readout weights, those with an element axis for the elements of
             the training data only, as `train.finetune` builds them); mace-torch ``--lora True
             --lora_rank 4``, its ``inject_LoRAs`` (LoRA on every o3.Linear, nn.Linear and radial-MLP
             layer).  The two LoRAs adapt different sets of weights; each is its own code's LoRA.

What one timed step is:

  equitrain-jax  the jitted ``train_step(trainable, frozen, opt_state, batch)`` of
                 `train.make_train_step` (energies, forces and stress by one reverse pass, loss, its
                 gradient, clipping, AdamW update), until its loss is on the host (``fit`` does the same);
  mace-torch     ``mace.tools.train.take_step`` (what ``run_train`` calls per batch): batch to device,
                 zero_grad, forward with forces and stress, loss, backward, clipping, optimiser step.

Batches are built beforehand on both sides (ours: `train.labelled_batches`, padded; mace-torch:
its ``AtomicData.from_config`` and ``torch_geometric`` DataLoader, collated once), so data
loading is not timed.  Each (side, strategy, dtype) runs in its own process: peak memory is that
process's ru_maxrss (and its increase over the training steps).  JAX compiles during a first pass
over all batches (one program per padded shape), timed separately; then --warmup steps run untimed
(default none) and --steps steps are timed
on both sides, cycling through the batches, and the median is reported.  The initial loss of the
first batch is printed for both sides (same weights, same data: they must agree, which checks
that the two sides compute the same loss).  The optimiser state (bytes of its arrays) is
reported for both sides; the target is ours for LoRA ≤ 5 % of ours for full fine-tuning.

    python benchmarks/train_step.py                      # float32 and float64, full and LoRA
    python benchmarks/train_step.py --quick              # 16 channels, 4 steps, float32
    python benchmarks/train_step.py --dtypes float32 --materials Si --steps 5 --cores 1 --save benchmarks/results/train_step-1core.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MATERIALS = ("Si", "MgO", "C")  # 16-atom DFT-labelled supercells: batches of equal size
SIDES = ("mace-torch", "equitrain-jax")
STRATEGIES = ("full", "lora")
LEARNING_RATE = 1e-3
CLIP_NORM = 10.0
LORA_RANK = 4
WEIGHTS = dict(energy_weight=10.0, forces_weight=100.0, stress_weight=1000.0, huber_delta=0.01)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def device_peak_mb(side: str, device: str) -> float | None:
    """Peak accelerator memory of this process (MB) on CUDA: JAX's device statistics for our side,
    torch's allocator for mace-torch's; None on CPU."""
    if device != "cuda":
        return None
    if side == "equitrain-jax":
        import jax

        return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 1e6
    import torch

    return torch.cuda.max_memory_allocated() / 1e6


def structures(materials: tuple[str, ...]) -> list:
    """The DFT-labelled training structures of ``materials``, in file order (labels in atoms.calc)."""
    import ase.io

    found = []
    for material in materials:
        found += ase.io.read(HERE / "data" / material / "train.extxyz", ":")
    return found


def torch_model(channels: int):
    import mace  # noqa: F401  (before e3nn)

    from equitrain_jax.convert.architectures import build_mace_torch

    return build_mace_torch("mp0a-medium", atomic_numbers=None, channels=channels, dtype="float64", seed=0)


def tree_bytes(tree) -> int:
    import jax

    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(tree)))


def jax_worker(strategy_name: str, dtype: str, channels: int, batch_size: int, steps: int,
               materials: tuple[str, ...], device: str) -> dict:
    import jax

    from equitrain_jax.convert import convert_model
    from equitrain_jax.data import DTYPES, element_indices, enable_float64
    from equitrain_jax.models.io import ModelBundle
    from equitrain_jax.train import FinetuneConfig, LossConfig, adamw, labelled_batches, make_train_step
    from equitrain_jax.adapters.freeze import masked_optimizer
    from equitrain_jax.train.strategies import StrategyInputs, build_strategy

    if dtype == "float64":
        enable_float64()
    float_type = DTYPES[dtype]
    bundle = ModelBundle(*convert_model(torch_model(channels)))
    config = bundle.config
    found = structures(materials)
    found = found[: len(found) // batch_size * batch_size]  # full batches only (run_train: drop_last)
    batches = labelled_batches(found, config.r_max, config.atomic_numbers, batch_size, dtype=float_type)
    variables = jax.tree_util.tree_map(
        lambda a: np.asarray(a, float_type) if np.issubdtype(np.asarray(a).dtype, np.floating) else np.asarray(a),
        bundle.variables,
    )
    finetune = FinetuneConfig(strategy=strategy_name, rank=LORA_RANK, batch_size=batch_size, dtype=dtype)
    elements = element_indices(np.concatenate([atoms.numbers for atoms in found]), config.atomic_numbers)
    strategy = build_strategy(StrategyInputs(variables, config, batches[0], jax.random.PRNGKey(0), float_type, elements),
                              finetune)
    optimizer = adamw(LEARNING_RATE, 0.0, CLIP_NORM)
    if strategy.labels is not None:
        optimizer = masked_optimizer(optimizer, strategy.labels)
    loss_config = LossConfig(WEIGHTS["energy_weight"], WEIGHTS["forces_weight"], WEIGHTS["stress_weight"], "huber",
                             WEIGHTS["huber_delta"])
    module = bundle.module(float_type)
    train_step = make_train_step(module, strategy.merge, optimizer, loss_config, strategy.penalty)
    trainable, frozen = strategy.trainable, strategy.frozen
    opt_state = optimizer.init(trainable)

    base = peak_rss_mb()
    compile_start = time.perf_counter()
    first_loss = None
    for batch in batches:  # compiles one program per padded shape
        trainable, opt_state, metrics = train_step(trainable, frozen, opt_state, batch)
        loss = float(metrics["loss"])
        first_loss = loss if first_loss is None else first_loss
    compile_seconds = time.perf_counter() - compile_start
    times = []
    for i in range(steps):
        start = time.perf_counter()
        trainable, opt_state, metrics = train_step(trainable, frozen, opt_state, batches[i % len(batches)])
        float(metrics["loss"])
        times.append(time.perf_counter() - start)
    return dict(
        first_pass_seconds=compile_seconds, step_times=times, initial_loss=first_loss,
        atoms_per_batch=[int(np.sum(np.asarray(b.globals["mask"]) * np.asarray(b.n_node))) for b in batches],
        trainable_parameters=int(sum(np.asarray(x).size for x in jax.tree_util.tree_leaves(trainable))),
        optimizer_state_bytes=tree_bytes(opt_state), base_rss_mb=base,
    )


def torch_worker(strategy_name: str, dtype: str, channels: int, batch_size: int, steps: int,
                 materials: tuple[str, ...], device: str) -> dict:
    import mace  # noqa: F401  (before e3nn)
    import torch
    from mace import data as mace_data
    from mace.modules.lora import inject_LoRAs
    from mace.tools import AtomicNumberTable, build_default_arg_parser, torch_geometric
    from mace.tools.scripts_utils import get_loss_fn, get_optimizer, get_params_options
    from mace.tools.train import take_step

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch_dtype = getattr(torch, dtype)
    torch.set_default_dtype(torch_dtype)
    model = torch_model(channels).to(torch_dtype).to(device)
    # run_train's settings, spelled as its command line would
    args = build_default_arg_parser().parse_args([
        "--name", "benchmark", "--train_file", "unused.xyz", "--loss", "huber",
        "--energy_weight", str(WEIGHTS["energy_weight"]), "--forces_weight", str(WEIGHTS["forces_weight"]),
        "--stress_weight", str(WEIGHTS["stress_weight"]), "--huber_delta", str(WEIGHTS["huber_delta"]),
        "--optimizer", "adamw", "--lr", str(LEARNING_RATE), "--weight_decay", "0.0", "--clip_grad", str(CLIP_NORM),
        "--batch_size", str(batch_size), "--default_dtype", dtype,
        "--lora", str(strategy_name == "lora"), "--lora_rank", str(LORA_RANK),
    ])
    args.amsgrad = False  # the parser has no switch to turn it off; ours is plain AdamW
    if args.lora:
        model = inject_LoRAs(model, rank=args.lora_rank, alpha=args.lora_alpha)
    model.train()
    loss_fn = get_loss_fn(args, dipole_only=False, compute_dipole=False)
    optimizer = get_optimizer(args, get_params_options(args, model))
    output_args = {"energy": True, "forces": True, "virials": False, "stress": True, "dipoles": False,
                   "polarizabilities": False}  # what run_train's configure_model sets for --loss huber

    atoms_list = structures(materials)
    for atoms in atoms_list:  # mace-torch's default keys (REF_*), from the same DFT labels
        atoms.info["REF_energy"] = atoms.calc.results["energy"]
        atoms.arrays["REF_forces"] = atoms.calc.results["forces"]
        atoms.info["REF_stress"] = atoms.calc.results["stress"]
        atoms.calc = None
    configs = mace_data.config_from_atoms_list(atoms_list, mace_data.KeySpecification.from_defaults())
    z_table = AtomicNumberTable([int(z) for z in model.atomic_numbers])
    dataset = [mace_data.AtomicData.from_config(c, z_table=z_table, cutoff=float(model.r_max), heads=["Default"])
               for c in configs]
    loader = torch_geometric.dataloader.DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=True)
    batches = list(loader)
    device = torch.device(device)

    def step(batch):
        loss, _ = take_step(model, loss_fn, batch, optimizer, None, output_args, args.clip_grad, device)
        return float(loss)

    base = peak_rss_mb()
    start = time.perf_counter()
    first_loss = step(batches[0])
    first_seconds = time.perf_counter() - start
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(batches[(i + 1) % len(batches)])
        times.append(time.perf_counter() - start)
    state_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                      if torch.is_tensor(t))
    return dict(
        first_pass_seconds=first_seconds, step_times=times, initial_loss=first_loss,
        atoms_per_batch=[int(b.num_nodes) for b in batches],
        trainable_parameters=int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
        optimizer_state_bytes=int(state_bytes), base_rss_mb=base,
    )


def worker(side: str, strategy: str, dtype: str, args, out: str) -> None:
    warnings.simplefilter("ignore")
    if args.cores:  # before JAX or torch start their thread pools, which size themselves by the affinity
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    run = jax_worker if side == "equitrain-jax" else torch_worker
    result = run(strategy, dtype, args.channels, args.batch_size, args.warmup + args.steps,
                 tuple(args.materials.split(",")), args.device)
    result["warmup_step_times"] = result["step_times"][: args.warmup]
    result["step_times"] = result["step_times"][args.warmup :]
    result.update(side=side, strategy=strategy, dtype=dtype, peak_rss_mb=peak_rss_mb(),
                  seconds_per_step=statistics.median(result["step_times"]), device_peak_mb=device_peak_mb(side, args.device))
    result["steps_per_second"] = 1.0 / result["seconds_per_step"]
    result["delta_rss_mb"] = result["peak_rss_mb"] - result.pop("base_rss_mb")
    with open(out, "w") as handle:
        json.dump(result, handle)


def run(side: str, strategy: str, dtype: str, args, tmp: str) -> dict:
    out = os.path.join(tmp, f"{side}-{strategy}-{dtype}.json")
    command = [sys.executable, __file__, "--worker", side, strategy, dtype, "--out", out,
               "--channels", str(args.channels), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--materials", args.materials, "--device", args.device, "--cores", str(args.cores)]
    try:
        subprocess.run(command, check=True, timeout=args.timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except subprocess.TimeoutExpired:
        return dict(side=side, strategy=strategy, dtype=dtype, error=f"timed out after {args.timeout:.0f} s")
    except subprocess.CalledProcessError as error:
        return dict(side=side, strategy=strategy, dtype=dtype, error=error.stderr.decode()[-2000:])
    with open(out) as handle:
        return json.load(handle)


def table(results: list[dict]) -> str:
    lines = [f"{'dtype':<8}{'strategy':<9}{'side':<15}{'trainable':>11}{'opt. state MB':>14}{'first pass s':>13}"
             f"{'s/step':>8}{'steps/s':>8}{'peak MB':>9}{'+MB':>7}{'initial loss':>14}"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['dtype']:<8}{r['strategy']:<9}{r['side']:<15}  {r['error'].strip().splitlines()[-1][:100]}")
            continue
        lines.append(
            f"{r['dtype']:<8}{r['strategy']:<9}{r['side']:<15}{r['trainable_parameters']:>11,}"
            f"{r['optimizer_state_bytes'] / 1e6:14.2f}{r['first_pass_seconds']:13.1f}{r['seconds_per_step']:8.3f}"
            f"{r['steps_per_second']:8.2f}{r['peak_rss_mb']:9.0f}{r['delta_rss_mb']:7.0f}{r['initial_loss']:14.6g}"
        )
    return "\n".join(lines)


def ratios(results: list[dict]) -> tuple[str, list[dict]]:
    """Speed-up per step (mace-torch s/step / ours), initial-loss agreement, LoRA state / full state."""
    done = {(r["side"], r["strategy"], r["dtype"]): r for r in results if "error" not in r}
    lines, rows = [], []
    for (side, strategy, dtype), ours in done.items():
        theirs = done.get(("mace-torch", strategy, dtype))
        if side != "equitrain-jax" or theirs is None:
            continue
        row = dict(dtype=dtype, strategy=strategy, speedup=theirs["seconds_per_step"] / ours["seconds_per_step"],
                   memory_ratio=theirs["delta_rss_mb"] / max(ours["delta_rss_mb"], 1.0),
                   initial_loss_relative_difference=abs(ours["initial_loss"] - theirs["initial_loss"])
                   / abs(theirs["initial_loss"]))
        rows.append(row)
        lines.append(f"{dtype} {strategy}: mace-torch / equitrain-jax time per step {row['speedup']:.2f}x; "
                     f"initial loss relative difference {row['initial_loss_relative_difference']:.1e}")
    for dtype in dict.fromkeys(d for _, _, d in done):
        for side in SIDES:
            lora, full = done.get((side, "lora", dtype)), done.get((side, "full", dtype))
            if lora and full:
                share = lora["optimizer_state_bytes"] / full["optimizer_state_bytes"]
                rows.append(dict(dtype=dtype, side=side, lora_state_share=share))
                lines.append(f"{dtype} {side}: LoRA optimiser state {lora['optimizer_state_bytes'] / 1e6:.2f} MB = "
                             f"{100 * share:.1f} % of full fine-tuning's {full['optimizer_state_bytes'] / 1e6:.2f} MB")
    return "\n".join(lines), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 channels, 4 timed steps, float32 only")
    parser.add_argument("--channels", type=int, default=None, help="model width (default 128; 16 with --quick)")
    parser.add_argument("--dtypes", default=None, help="comma-separated (default float32,float64; float32 with --quick)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--batch-size", type=int, default=4, help="structures per step (16 atoms each)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 10; 4 with --quick)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed steps before the timed ones, both sides (default 0; on a GPU mace-torch's "
                             "first five steps took 7-18x its later ones, 2026-11-30)")
    parser.add_argument("--materials", default=",".join(MATERIALS), help="benchmarks/data materials to train on")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per (side, strategy, dtype)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="mace-torch's device (JAX uses its default backend: set JAX_PLATFORMS to match)")
    parser.add_argument("--cores", type=int, default=0,
                        help="pin each side to this many CPU cores (0: all); one core keeps a loaded machine's "
                             "oversubscription from penalising torch's OpenMP threads more than JAX's")
    parser.add_argument("--save", default=None, help="write the results as JSON to this file")
    parser.add_argument("--worker", nargs=3, metavar=("SIDE", "STRATEGY", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.channels = args.channels or (16 if args.quick else 128)
    args.steps = args.steps or (4 if args.quick else 10)
    if args.worker:
        worker(*args.worker, args=args, out=args.out)
        return
    dtypes = (args.dtypes or ("float32" if args.quick else "float32,float64")).split(",")
    header = (f"MACE-MP-0 medium architecture, 89 elements, random weights, {args.channels} channels; "
              f"batches of {args.batch_size} structures from {args.materials}; mace-torch on {args.device}; "
              f"{'pinned to ' + str(args.cores) + ' core(s); ' if args.cores else ''}"
              f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(header, flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in dtypes:
            for strategy in args.strategies.split(","):
                for side in SIDES:  # both sides of a pair back to back: the machine's load is alike
                    result = run(side, strategy, dtype, args, tmp)
                    results.append(result)
                    message = result.get("error", "").strip()[-300:] or f"{result['seconds_per_step']:.3f} s/step"
                    print(f"  {dtype} {strategy} {side}: {message}", flush=True)
                    if args.save:
                        save(args.save, header, args, results)
    print(table(results))
    print("first pass: JAX compiles one program per padded batch shape over all batches; mace-torch: one step;\n"
          "s/step: median of the timed steps; peak MB: ru_maxrss of the process; +MB: its increase while training")
    print(ratios(results)[0])
    if args.save:
        save(args.save, header, args, results)


def save(path: str, header: str, args, results: list[dict]) -> None:
    with open(path, "w") as handle:
        json.dump(dict(header=header, channels=args.channels, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                       materials=args.materials, results=results, ratios=ratios(results)[1]), handle, indent=1)


if __name__ == "__main__":
    main()
