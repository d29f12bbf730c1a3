"""Energy+forces time of the torch models vs equitrain-jax on the same weights, in one run.

Two models, on diamond-Si supercells:
  mace-mp0-medium  MACE-MP-0 medium architecture (128x0e+128x1o, 89 elements, random weights)
                   in mace-torch vs its conversion;
  sevennet-0       the pretrained SevenNet-0 checkpoint in sevenn vs its conversion, float32 only
                   (as sevenn runs); sevenn's side runs in its own environment (--sevenn-python,
                   see benchmarks/sevennet_torch.py).  Its model level includes the stress on both
                   sides, because the sevenn model always computes it.
Two levels:
  model       the model alone on a prebuilt graph (torch: its own graph data; JAX: padded graph on
              device), energy and forces, median of --repeats calls after warm-up;
  calculator  each ASE calculator's get_forces() on a fresh structure (neighbour list, data
              handling and host-device traffic included).
Compile time (first JAX call) is reported separately.  Prints a table and the ratio
torch time / JAX time (above 1: JAX is faster).

    python benchmarks/inference.py --sizes 64 512 --dtypes float32 float64
    python benchmarks/inference.py --models sevennet-0 --sizes 64 512 --dtypes float32
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import mace  # noqa: F401  (before e3nn)
import torch
from ase.build import bulk

import jax
import jax.numpy as jnp

from equitrain_jax.calculator import Calculator
from equitrain_jax.convert import convert_model
from equitrain_jax.convert.architectures import build_mace_torch
from equitrain_jax.convert.sevennet import convert_pretrained
from equitrain_jax.models.io import ModelBundle
from equitrain_jax.models.quantities import energy_forces_stress
from equitrain_jax.potential import Potential, enable_float64
from timing import median_time  # benchmarks/timing.py, beside this script

MODELS = ("mace-mp0-medium", "sevennet-0")
SEVENN_PYTHON = os.environ.get("SEVENN_PYTHON", ".venv-sevenn/bin/python")  # a venv with sevenn (see scripts/sevennet_reference.py)

REPS = {64: (2, 2, 2), 216: (3, 3, 3), 512: (4, 4, 4), 1000: (5, 5, 5), 4096: (8, 8, 8)}


def silicon(n_atoms: int):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(REPS[n_atoms])
    atoms.rattle(0.02, seed=0)
    return atoms



def torch_model_level(module, atoms, dtype, repeats, device="cpu"):
    from mace.calculators import MACECalculator

    torch.set_default_dtype(getattr(torch, dtype))
    calc = MACECalculator(models=module, default_dtype=dtype, device=device)
    batch = calc._atoms_to_batch(atoms)  # mace-torch's own graph, built once
    batch_dict = batch.to_dict()

    def run():
        data = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch_dict.items()}
        out = module(data, compute_stress=False, training=False)
        if device == "cuda":
            torch.cuda.synchronize()  # CUDA runs asynchronously: time the work, not its launch
        return out["forces"]

    run()
    return median_time(run, repeats), calc


def jax_model_level(potential, atoms, repeats, stress=False):
    graph = potential.device_graph(potential.graph(atoms))
    apply = functools.partial(potential.module.apply, method=type(potential.module).node_energies)

    def energy_forces(variables, graph):
        def total(positions):
            g = graph._replace(nodes={**graph.nodes, "positions": positions})
            return jnp.sum(apply(variables, g))

        energy, grad = jax.value_and_grad(total)(graph.nodes["positions"])
        return energy, -grad

    fn = jax.jit(functools.partial(energy_forces_stress, apply) if stress else energy_forces)
    start = time.perf_counter()
    jax.block_until_ready(fn(potential.variables, graph))
    compile_time = time.perf_counter() - start

    def run():
        return jax.block_until_ready(fn(potential.variables, graph))

    return median_time(run, repeats), compile_time


def calculator_level(calc, atoms, repeats):
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_forces()

    def run():
        atoms.rattle(1e-4)
        atoms.get_forces()

    return median_time(run, repeats)


def sevenn_side(atoms, repeats: int, sevenn_python: str) -> dict:
    """sevenn's model and calculator times, measured by benchmarks/sevennet_torch.py in its env."""
    with tempfile.TemporaryDirectory() as tmp:
        structure = Path(tmp) / "structure.xyz"
        atoms.write(structure)
        runner = Path(__file__).with_name("sevennet_torch.py")
        done = subprocess.run([sevenn_python, str(runner), str(structure), "--repeats", str(repeats)],
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_sevennet(dtype: str, n: int, repeats: int, sevenn_python: str) -> dict:
    """One SevenNet-0 row: sevenn (torch, its own environment) and the converted model."""
    atoms = silicon(n)
    with tempfile.TemporaryDirectory() as tmp:
        convert_pretrained("sevennet-0", Path(tmp) / "model")
        potential = Potential(Path(tmp) / "model", dtype=dtype)
    row = dict(model="sevennet-0", dtype=dtype, atoms=n)
    row["jax_model_s"], row["jax_compile_s"] = jax_model_level(potential, atoms, repeats, stress=True)
    row["jax_calc_s"] = calculator_level(Calculator(potential), atoms, repeats)
    torch_side = sevenn_side(atoms, repeats, sevenn_python)
    row["torch_model_s"], row["torch_calc_s"] = torch_side["model_s"], torch_side["calc_s"]
    row["sevenn"] = torch_side["sevenn"]
    return row


def measure(model: str, dtype: str, n: int, repeats: int, channels: int, memory_gb: float, sevenn_python: str,
            device: str = "cpu") -> dict:
    """One (model, dtype, size) row, run in a child process under an address-space limit (none
    if ``memory_gb`` is 0, as CUDA needs) so that an out-of-memory side is reported instead of
    taking the machine down."""
    import resource

    if memory_gb > 0:
        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    enable_float64()
    if model == "sevennet-0":
        return measure_sevennet(dtype, n, repeats, sevenn_python)
    module = build_mace_torch("mp0a-medium", atomic_numbers=tuple(range(1, 90)), channels=channels, dtype=dtype)
    potential = Potential(ModelBundle(*convert_model(module)), dtype=dtype)
    atoms = silicon(n)
    row = dict(model=model, dtype=dtype, atoms=n)
    for side, run in (("torch", lambda: torch_model_level(module, atoms, dtype, repeats, device)),
                      ("jax", lambda: jax_model_level(potential, atoms, repeats))):
        try:
            row[f"{side}_model_s"], extra = run()
            if side == "torch":
                row["torch_calc_s"] = calculator_level(extra, atoms, repeats)
            else:
                row["jax_compile_s"] = extra
                row["jax_calc_s"] = calculator_level(Calculator(potential), atoms, repeats)
        except (MemoryError, RuntimeError) as error:  # torch and XLA report allocation failures so
            if "memory" not in str(error).lower() and not isinstance(error, MemoryError):
                raise
            row[f"{side}_model_s"] = row[f"{side}_calc_s"] = None
    return row


def _child(queue, *args):
    queue.put(measure(*args))


def fmt(seconds):
    return "      OOM" if seconds is None else f"{seconds * 1e3:9.1f}"


def ratio(a, b):
    return "    -" if a is None or b is None else f"{a / b:5.2f}"


def main():
    import multiprocessing

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 4096], choices=sorted(REPS))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--memory-gb", type=float, default=20.0,
                        help="address-space limit per measurement (0: none; CUDA needs none)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="mace-torch's device (JAX uses its default backend: set JAX_PLATFORMS to match)")
    parser.add_argument("--sevenn-python", default=SEVENN_PYTHON, help="python of an environment with sevenn")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{jax.devices()[0].device_kind}, torch {torch.__version__}, jax {jax.__version__}, "
          f"torch threads {torch.get_num_threads()}; times are medians in ms; x = torch / jax")
    print(f"{'model':15s} {'dtype':8s} {'atoms':>5s} | {'torch model':>11s} {'jax model':>9s} {'x':>5s} {'compile s':>9s} | "
          f"{'torch calc':>10s} {'jax calc':>9s} {'x':>5s}")
    context = multiprocessing.get_context("spawn")
    rows = []
    for model, dtype, n in ((m, d, n) for m in args.models for d in args.dtypes for n in args.sizes):
        if model == "sevennet-0" and dtype != "float32":
            print(f"{model:15s} {dtype:8s} {n:5d} | skipped: sevenn runs float32 only", flush=True)
            continue
        queue = context.Queue()
        child = context.Process(
            target=_child,
            args=(queue, model, dtype, n, args.repeats, args.channels, args.memory_gb, args.sevenn_python,
                  args.device),
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            print(f"{model:15s} {dtype:8s} {n:5d} | measurement process died (exit code {child.exitcode})", flush=True)
            continue
        row = queue.get()
        rows.append(row)
        print(f"{model:15s} {dtype:8s} {n:5d} | {fmt(row['torch_model_s']):>11s} {fmt(row['jax_model_s'])} "
              f"{ratio(row['torch_model_s'], row['jax_model_s'])} {row.get('jax_compile_s') or 0:9.1f} | "
              f"{fmt(row['torch_calc_s']):>10s} {fmt(row['jax_calc_s'])} {ratio(row['torch_calc_s'], row['jax_calc_s'])}",
              flush=True)
        if args.json:  # after every row, so an interrupted run keeps what it measured
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
